/**
 * `npm run build`:
 *  - dist/            the agent compiled to JavaScript (tsc), run by Node >= 24;
 *  - dist/bin/trellis-agent   a launcher for it that prefers the checkout's Node 24;
 *  - dist/bin/trellis the CNI shim compiled by Bun into one executable that needs only glibc on the
 *                     host (the `-baseline` Bun build, so CPUs without AVX2 run it too).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const bin = join(dist, 'bin');
const bun = join(root, 'node_modules', '@oven', 'bun-linux-x64-baseline', 'bin', 'bun');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(bin, { recursive: true });

run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json']);
// The compiled agent reads its version here rather than from package.json at run time.
writeFileSync(join(dist, 'version.json'), `${JSON.stringify({ version })}\n`);

/**
 * V8 flags for the agent (the image's ENTRYPOINT is this launcher, so they apply in the cluster too).
 * --max-semi-space-size=1 (MB): a 1 MB young generation instead of up to 16 MB per semi-space. The
 * agent's garbage is short-lived and bursty (a full reconcile every resync), and a large young
 * generation kept that much more resident. bench/footprint.ts at 5,000 nodes, same build, sequential
 * runs: RSS 174-257 MB -> 137-148 MB, CPU 0.79 % -> 0.79 % of a core. --optimize-for-size went down
 * to 97-108 MB but cost 1.32-1.35 % CPU (target < 1 %), so it is not used. The old generation is not
 * capped: a low --max-old-space-size would turn a large cluster into an OOM crash.
 */
const AGENT_NODE_FLAGS = ['--max-semi-space-size=1'];

// TRELLIS_NODE_FLAGS: extra node/V8 flags from the DaemonSet's environment, for the flags NODE_OPTIONS
// refuses (--optimize-for-size: less memory for more CPU, see bench/README.md). Split on spaces on purpose.
const launcher = `#!/bin/sh
# trellis agent launcher: the checkout's Node 24 when present, else node on PATH (the image's).
here=$(dirname "$(readlink -f "$0")")
root=$(dirname "$(dirname "$here")")
node="$root/node_modules/.bin/node"
[ -x "$node" ] || node=node
# shellcheck disable=SC2086
exec "$node" ${AGENT_NODE_FLAGS.join(' ')} \${TRELLIS_NODE_FLAGS:-} "$root/dist/cmd/agent/main.js" "$@"
`;
writeFileSync(join(bin, 'trellis-agent'), launcher);
chmodSync(join(bin, 'trellis-agent'), 0o755);

run(bun, [
  'build',
  '--compile',
  '--minify',
  // Ahead-of-time bytecode: measured ~1.5 ms (12%) less per shim call (bench/README.md).
  '--bytecode',
  '--format=cjs',
  // The runtime runs the plugin in whatever directory it has: a .env or bunfig.toml there must not
  // change what the shim does (and looking for them costs a little on every call).
  '--no-compile-autoload-dotenv',
  '--no-compile-autoload-bunfig',
  `--define=TRELLIS_VERSION="${version}"`,
  join(root, 'cmd', 'cni', 'main.ts'),
  '--outfile',
  join(bin, 'trellis'),
]);
console.log(`built trellis ${version}: dist/bin/trellis (CNI shim), dist/bin/trellis-agent`);
