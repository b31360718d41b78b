import { closeSync, constants, openSync } from 'node:fs';
import { constants as os } from 'node:os';
import { errnoName } from '../errno.ts';
import { LockHeldError } from './errors.ts';
import { getLibc, LOCK_EX, LOCK_NB, LOCK_UN } from './libc.ts';

export interface FileLock {
  /** Unlocks and closes; idempotent. The kernel also drops the lock when the process dies. */
  release(): void;
}

/**
 * An exclusive, non-blocking flock(2) on path (created 0600 if missing; libuv opens with O_CLOEXEC): one agent per state
 * directory. Throws LockHeldError when another open file description holds it, even one in this
 * process.
 */
export function lockFile(path: string): FileLock {
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  const r = getLibc().flock(fd, LOCK_EX | LOCK_NB);
  if (r.value !== 0) {
    closeSync(fd);
    if (r.errno === os.errno.EWOULDBLOCK) throw new LockHeldError(path);
    throw new Error(`flock ${path}: ${errnoName(r.errno)}`);
  }
  let held = true;
  return {
    release(): void {
      if (!held) return;
      held = false;
      getLibc().flock(fd, LOCK_UN);
      closeSync(fd);
    },
  };
}

/**
 * lockFile, retried every `pollMs` while another process holds it, for up to `waitMs`; then the
 * LockHeldError. For `uninstall`, which must not pull the node from under an agent that is still
 * shutting down (its pod deleted moments before).
 */
export async function lockFileWaiting(
  path: string,
  waitMs: number,
  opts: { pollMs?: number; onWait?: () => void } = {},
): Promise<FileLock> {
  const deadline = Date.now() + waitMs;
  for (let first = true; ; first = false) {
    try {
      return lockFile(path);
    } catch (err) {
      if (!(err instanceof LockHeldError) || Date.now() >= deadline) throw err;
      if (first) opts.onWait?.();
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
    }
  }
}
