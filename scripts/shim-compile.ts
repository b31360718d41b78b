/**
 * How the CNI shim is compiled: the Bun that does it and the flags, shared by scripts/build.ts, the
 * arm64 shim test and bench/shim-startup.ts (whose "bun floor" is an empty program compiled the same way).
 *
 * The Bun compiler comes from scripts/bun-toolchain, a dev dependency whose optional dependencies are
 * one Bun per CPU: npm installs only the build machine's (a plain dev dependency on another CPU's
 * package would fail `npm ci` there with EBADPLATFORM). A shim for the build machine's CPU carries that
 * Bun as its runtime; one for another CPU is cross-compiled with `--target`, and Bun fetches that
 * CPU's runtime (the same version, from the npm registry) unless `runtime` names one already here.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** The CPUs the shim is built for (Node's names; Docker's `amd64` is accepted as x64). */
export type ShimArch = 'x64' | 'arm64';

/** The npm package of the Bun that runs on `arch`: `-baseline` on x64, so CPUs without AVX2 run it too. */
const BUN_PACKAGE: Readonly<Record<ShimArch, string>> = {
  x64: 'bun-linux-x64-baseline',
  arm64: 'bun-linux-aarch64',
};

/** `bun build --target` for a shim that runs on `arch`. */
const BUN_TARGET: Readonly<Record<ShimArch, string>> = {
  x64: 'bun-linux-x64-baseline',
  arm64: 'bun-linux-arm64',
};

/** `x64`, `amd64` (Docker's TARGETARCH), `arm64` or `aarch64` -> the shim's CPU; anything else throws. */
export function parseShimArch(text: string): ShimArch {
  if (text === 'x64' || text === 'amd64' || text === 'x86_64') return 'x64';
  if (text === 'arm64' || text === 'aarch64') return 'arm64';
  throw new Error(`no CNI binary for CPU "${text}": trellis builds it for x64 (amd64) and arm64`);
}

/** The build machine's CPU; throws on one the shim is not built for. */
export function hostArch(): ShimArch {
  return parseShimArch(process.arch);
}

/** The Bun executable that runs on `arch`, as npm installs it (present only for the build machine's CPU). */
export function bunBinary(root: string, arch: ShimArch = hostArch()): string {
  return join(root, 'node_modules', '@oven', BUN_PACKAGE[arch], 'bin', 'bun');
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

export interface ShimBuild {
  root: string;
  /** The CPU the binary runs on; the build machine's by default. */
  arch?: ShimArch;
  version: string;
  outfile: string;
  /** A Bun executable for `arch` to embed when cross-compiling, instead of Bun fetching one. */
  runtime?: string;
  /** Keep Bun's output to the error thrown on failure (tests) instead of printing it (builds). */
  quiet?: boolean;
}

/** Compiles cmd/cni/main.ts into one executable for `arch`; throws when Bun fails. */
export function compileShim(b: ShimBuild): void {
  const host = hostArch();
  const arch = b.arch ?? host;
  const cross: string[] = [];
  if (arch !== host) {
    cross.push(`--target=${BUN_TARGET[arch]}`);
    if (b.runtime !== undefined) cross.push(`--compile-executable-path=${b.runtime}`);
  }
  execFileSync(
    bunBinary(b.root, host),
    [
      ...SHIM_COMPILE_FLAGS,
      ...cross,
      `--define=TRELLIS_VERSION="${b.version}"`,
      join(b.root, 'cmd', 'cni', 'main.ts'),
      '--outfile',
      b.outfile,
    ],
    { cwd: b.root, stdio: b.quiet === true ? 'pipe' : ['ignore', 'inherit', 'inherit'] },
  );
}
