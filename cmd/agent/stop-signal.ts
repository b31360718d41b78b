/**
 * The first SIGTERM or SIGINT of an agent run, heard from the moment the process runs JavaScript: the
 * launcher preloads this module (`--import`), ahead of the modules that take the start its ~0.5 s,
 * and main.ts imports it first (run without the launcher). As its container's PID 1, the agent would
 * have the kernel drop a signal it has no handler for (Node's own at start-up re-raises it), and a pod
 * deleted while its agent started took its whole grace period to go. The other subcommands end at
 * once, as the signal's default would (exit 128 + its number): install-cni and uninstall run as PID 1
 * of their init containers too, where the kernel would drop the signal, and an uninstall waiting for
 * the agent's lock held a deleted pod for its whole grace period. Both are idempotent, so a stop
 * halfway leaves nothing the next run does not finish.
 */
import { constants } from 'node:os';

const argv0 = process.argv[2];
const runs = argv0 === undefined || argv0 === 'run' || argv0.startsWith('-');

let heard: (signal: NodeJS.Signals) => void = () => {};
/** Resolves with the signal; never, outside `run`. */
export const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
  heard = resolve;
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, runs ? () => heard(signal) : () => process.exit(128 + constants.signals[signal]));
}
