import { closeSync, openSync, rmSync, utimesSync } from 'node:fs';
import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';
import { markerVouches, readyMarkerAgeMs, readyMarkerPath } from '../shim/ready-marker.ts';

/**
 * The agent's side of the ready marker (pkg/shim/ready-marker.ts): touched while the agent is ready,
 * read while it is not (a restarted agent warming up answers STATUS ready while the marker vouches).
 * Left in place on SIGTERM: the restart it bridges is exactly that. `uninstall` removes it.
 */
export class ReadyMark {
  readonly path: string;
  private readonly log: Logger;
  private failing = false;
  /** This agent touched it: a fresh marker is then its own, not a previous agent's. */
  private touched = false;

  constructor(socket: string, log: Logger) {
    this.path = readyMarkerPath(socket);
    this.log = log;
  }

  /** Refreshes the marker (creating it); a failure is logged once, STATUS then simply lacks the grace. */
  touch(now: Date = new Date()): void {
    try {
      closeSync(openSync(this.path, 'a', 0o644));
      utimesSync(this.path, now, now);
      this.touched = true;
      if (this.failing) this.log.info({ file: this.path }, 'ready marker written again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) {
        this.log.warn(
          { file: this.path, error: errorText(err) },
          'cannot write the ready marker: CNI STATUS fails while the agent restarts',
        );
      }
      this.failing = true;
    }
  }

  /** No marker at all: no agent was ready on this node since it booted (or the socket moved). */
  absent(): boolean {
    return readyMarkerAgeMs(this.path) === undefined;
  }

  /**
   * Another agent was ready here within the grace (STATUS_GRACE_MS) and this one has not been yet: a
   * restart warming up. An agent that was ready and stopped being so (its Node gone, say) is not
   * restarting, and its STATUS says so at once.
   */
  vouches(): boolean {
    return !this.touched && markerVouches(readyMarkerAgeMs(this.path));
  }
}

/** For uninstall: the marker goes with the socket. */
export function removeReadyMark(socket: string): void {
  rmSync(readyMarkerPath(socket), { force: true });
}
