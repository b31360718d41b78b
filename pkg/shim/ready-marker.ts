/**
 * The ready marker: a file next to the agent's socket whose modification time a ready agent keeps
 * fresh (every READY_MARK_REFRESH_MS). It lets CNI STATUS ride out an agent restart.
 *
 * Runtimes that speak CNI 1.1 (containerd 2, CRI-O) call STATUS on every status poll of the kubelet
 * (every ~5 s) and report the node's network not ready when it fails: the kubelet sets the node
 * NotReady, and the node lifecycle controller marks its pods not ready, out of their Services. An
 * upgrade or a restart leaves the socket closed for ~10-15 s, longer while a new image is pulled,
 * while the routes, the rules and every pod keep working. So STATUS still succeeds while the marker
 * is younger than STATUS_GRACE_MS: the shim checks it when the agent does not answer, and a restarted
 * agent while it is not ready yet. An ADD the runtime sends meanwhile waits for the agent (bounded:
 * shim.ts RESTART_WAIT_MS, cni-service.ts RESTART_READY_WAIT_MS) rather than fail. An
 * agent that stays down longer (crash-looping) fails STATUS after the grace, as it should. The socket's
 * directory is on /run, a tmpfs: after a reboot there is no marker, and STATUS waits for the agent.
 */

/** The marker of the agent listening on `socket`. */
export function readyMarkerPath(socket: string): string {
  return `${socket}.ready`;
}

/** How often a ready agent touches the marker. */
export const READY_MARK_REFRESH_MS = 5_000;

/**
 * How long after the marker's last refresh STATUS still answers ready: a restart, not an outage. Two
 * minutes cover a restart with a cold image pull of a few hundred MB; an agent away for longer is an
 * outage, and new pods are better scheduled elsewhere.
 */
export const STATUS_GRACE_MS = 120_000;

/**
 * Whether a marker this old (ms; undefined: none) still vouches for the node. A marker from the
 * future beyond a refresh (the clock stepped back) does not: it could vouch for ever.
 */
export function markerVouches(ageMs: number | undefined): boolean {
  return ageMs !== undefined && ageMs >= -READY_MARK_REFRESH_MS && ageMs <= STATUS_GRACE_MS;
}

/**
 * The marker's age in ms, or undefined when there is none (or it cannot be read). node:fs is loaded
 * on first use, as in spool-fs.ts: only a STATUS with the agent away needs it.
 */
export function readyMarkerAgeMs(path: string, now: number = Date.now()): number | undefined {
  const fs = process.getBuiltinModule('node:fs');
  try {
    const st = fs.statSync(path, { throwIfNoEntry: false });
    return st === undefined || !st.isFile() ? undefined : now - st.mtimeMs;
  } catch {
    return undefined;
  }
}
