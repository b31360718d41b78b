/**
 * `npm run build`:
 *  - dist/            the agent compiled to JavaScript (tsc), run by Node >= 24;
 *  - dist/bin/trellis-agent   a launcher for it that prefers the checkout's Node 24;
 *  - dist/bin/trellis the CNI shim compiled by Bun into one executable that needs only glibc on the
 *                     host (the `-baseline` Bun build on x64, so CPUs without AVX2 run it too).
 *
 * `--shim-arch=arm64` (or x64/amd64) builds the CNI binary for that CPU instead of the build machine's:
 * the image's build stage runs on the builder's platform and cross-compiles for the image's. The
 * agent is JavaScript; only its native dependencies differ by CPU, and npm installs those.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compileShim, hostArch, parseShimArch } from './shim-compile.ts';
import { sourceId } from './source-id.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const bin = join(dist, 'bin');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

const { values: opts } = parseArgs({ options: { 'shim-arch': { type: 'string' } } });
// Checked before dist/ is removed: a typo must not leave the checkout without a build.
const shimArch = opts['shim-arch'] === undefined ? hostArch() : parseShimArch(opts['shim-arch']);

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(bin, { recursive: true });

run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json']);
// The compiled agent reads its version here rather than from package.json at run time. The commit
// (+dirty and a hash of uncommitted changes) says which source a benchmark measured; absent without git.
const commit = sourceId(root);
writeFileSync(
  join(dist, 'version.json'),
  `${JSON.stringify({ version, ...(commit === undefined ? {} : { commit }) })}\n`,
);

/**
 * V8 flags for the agent (the image's ENTRYPOINT is this launcher, so they apply in the cluster too).
 * --max-semi-space-size=1 (MB): a 1 MB young generation instead of up to 16 MB per semi-space. The
 * agent's garbage is short-lived and bursty (a full reconcile every resync), and a large young
 * generation kept that much more resident. bench/footprint.ts at 5,000 nodes, same build, sequential
 * runs: RSS 174-257 MB -> 137-148 MB, CPU 0.79 % -> 0.79 % of a core. The old generation is not
 * capped: a low --max-old-space-size would turn a large cluster into an OOM crash.
 * --optimize-for-size: smaller heap growth steps, more eager collection and code flushing. It used to
 * cost 1.3 % of a core at 5,000 nodes because every resync re-planned the whole cluster; since a resync
 * over an unchanged cluster only checks the kernel (pkg/routes describesInputs/kernelHolds), the same
 * bench at ed14bfe with MALLOC_ARENA_MAX=2: RSS 91-93 MB between resyncs, ~102 MB for 5-10 s after
 * each one (max 104.4, the first sample), CPU 0.58 % of a core. Without it (ebbc47a): 130 MB until the
 * memory reducer ran late in the window, then 103-108 MB, at 0.38 %. It makes the cold first pass at
 * 5,000 nodes ~4 % slower (493 -> 514 ms in one paired run).
 * --no-opt --no-maglev: V8's optimizing tiers off; code runs in the interpreter and Sparkplug, its
 * non-optimizing compiler. The agent's JS is short bursts (a Node event, a CNI call, a pass) that the
 * optimizers barely reach, and their own code and output were ~8 MB of resident pages. Same build
 * (15282a1), footprint at 5,000 nodes + 100 pods, two pairs of runs: max RSS 99.3 / 104.9 -> 91.0 /
 * 89.9 MB (file-backed 56.6 -> 48.6 MB), CPU 0.27 / 0.25 -> 0.24 / 0.24 % of a core; cold pass 250 ms
 * against 244 ms before (route-convergence, within its 230-282 ms spread; 262 and 294 ms in the next
 * two runs, so up to ~20 % slower), a Node event's p99 2.7 /
 * 2.5 ms, the agent's share of an ADD 2.5-2.8 ms at p50 either way. Twenty concurrent ADDs looked
 * slower in the first three runs (1.18-1.26 × ptp against 0.95-1.12 with the tiers on), but later
 * runs measure 0.86-1.13 with them off, and Maglev back on did not shorten the burst (bench/HISTORY.md,
 * section 1). TRELLIS_NODE_FLAGS="--opt --maglev" turns them back on.
 * --no-concurrent-sparkplug: Sparkplug compiles on the main thread. On a background thread, an exit
 * could deadlock (nodejs/node#54918): the main thread, exiting, joins the platform's workers while one
 * of them, in the middle of a Sparkplug job, waits for a garbage collection only the main thread could
 * run. `trellis-agent --version` exiting on a missing dependency hung 4 times in 800 runs here at
 * 17cb39e (Node 24.9, gdb: main thread in NodePlatform::Shutdown, V8Worker in
 * CollectionBarrier::AwaitCollectionBackground under BaselineCompiler::Build), 0 in 800 with the flag;
 * every exit of the agent and of its operator commands takes the same path. Maglev's concurrent jobs
 * would be the other way in, and --no-maglev keeps it shut.
 * Not used: --expose-gc for a compacting gc() after bursts of work (its 45-57 ms pause held back Node
 * events, pkg/agent/idle-trim.ts), larger young generations (4, 8, 16 MB: same peak, more CPU), --single-threaded-gc (more
 * RSS), --jitless (87-97 MB without pods, but a resync pass costs twice the CPU and every other path
 * runs interpreted). --max-opt=2 (Maglev kept) was tried before the resync garbage was fixed: it
 * saved ~5 MB between resyncs but not at their peaks, which no longer exist.
 */
const AGENT_NODE_FLAGS = [
  '--max-semi-space-size=1',
  '--optimize-for-size',
  '--no-opt',
  '--no-maglev',
  '--no-concurrent-sparkplug',
];

/**
 * MALLOC_ARENA_MAX=2 (unless the environment sets it): glibc gives each thread that mallocs its own
 * arena (the agent has ~10: V8's workers, libuv's pool, ffi-rs), and freed memory stays in them. Same
 * bench at ebbc47a, both with --optimize-for-size: RSS 102-114 MB -> 94-105 MB (max 113.6 -> 104.7;
 * anonymous memory at the largest sample 57.0 -> 48.2 MB), CPU 0.50 -> 0.53 % of a core.
 */
const AGENT_MALLOC_ARENA_MAX = 2;

const launcher = `#!/bin/sh
# trellis agent launcher: the checkout's Node 24 when present, else node on PATH (the image's).
here=$(dirname "$(readlink -f "$0")")
root=$(dirname "$(dirname "$here")")
node="$root/node_modules/.bin/node"
[ -x "$node" ] || node=node
MALLOC_ARENA_MAX="\${MALLOC_ARENA_MAX:-${AGENT_MALLOC_ARENA_MAX}}"
export MALLOC_ARENA_MAX
# stop-signal.js before the agent's modules load (~0.5 s): as a container's PID 1, a SIGTERM without a
# handler is dropped by the kernel. main.js imports the same module, which is evaluated once.
# shellcheck disable=SC2086
exec "$node" ${AGENT_NODE_FLAGS.join(' ')} --import "$root/dist/cmd/agent/stop-signal.js" \${TRELLIS_NODE_FLAGS:-} "$root/dist/cmd/agent/main.js" "$@"
`;
writeFileSync(join(bin, 'trellis-agent'), launcher);
chmodSync(join(bin, 'trellis-agent'), 0o755);

compileShim({ root, arch: shimArch, version, outfile: join(bin, 'trellis') });
console.log(`built trellis ${version}: dist/bin/trellis (CNI shim, ${shimArch}), dist/bin/trellis-agent`);
