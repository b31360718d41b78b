/**
 * How the CNI shim is compiled: the Bun that does it and the flags, shared by scripts/build.ts and
 * bench/shim-startup.ts (whose "bun floor" is an empty program compiled the same way).
 */
import { join } from 'node:path';

/** The `-baseline` Bun build, so CPUs without AVX2 run the shim too. */
export function bunBinary(root: string): string {
  return join(root, 'node_modules', '@oven', 'bun-linux-x64-baseline', 'bin', 'bun');
}

/** `bun build` arguments before the entry point and --outfile. */
export const SHIM_COMPILE_FLAGS: readonly string[] = [
  'build',
  '--compile',
  '--minify',
  // Ahead-of-time bytecode: measured ~1.5 ms (12%) less per shim call (bench/HISTORY.md).
  '--bytecode',
  '--format=cjs',
  // The runtime runs the plugin in whatever directory it has: a .env or bunfig.toml there must not
  // change what the shim does (and looking for them costs a little on every call).
  '--no-compile-autoload-dotenv',
  '--no-compile-autoload-bunfig',
];
