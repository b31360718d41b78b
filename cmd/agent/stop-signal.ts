/**
 * The first SIGTERM or SIGINT of an agent run, heard from the moment the process runs JavaScript: the
 * launcher preloads this module (`--import`), ahead of the modules that take the start its ~0.5 s,
 * and main.ts imports it first (run without the launcher). As its container's PID 1, the agent would
 * have the kernel drop a signal it has no handler for (Node's own at start-up re-raises it), and a pod
 * deleted while its agent started took its whole grace period to go. Only for `run`: an operator
 * command, install-cni and uninstall keep the default, which ends them at once.
 */
const argv0 = process.argv[2];
const runs = argv0 === undefined || argv0 === 'run' || argv0.startsWith('-');

let heard: (signal: NodeJS.Signals) => void = () => {};
/** Resolves with the signal; never, outside `run`. */
export const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
  heard = resolve;
});

if (runs) {
  process.once('SIGTERM', () => heard('SIGTERM'));
  process.once('SIGINT', () => heard('SIGINT'));
}
