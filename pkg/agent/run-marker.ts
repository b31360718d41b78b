import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A file in the state directory while an agent runs, removed when it stops cleanly. A start that
 * finds it knows the last agent did not (SIGKILL, a crash, the node losing power), which its log
 * says nowhere else. Best effort both ways: a read-only state directory costs only the line.
 */
export const RUN_MARKER_FILE = 'agent.running';

/** Marks this agent running; true when the last one left its mark (it did not stop cleanly). */
export function markRunning(stateDir: string): boolean {
  const path = join(stateDir, RUN_MARKER_FILE);
  const left = existsSync(path);
  try {
    writeFileSync(path, `${process.pid}\n`, { mode: 0o600 });
  } catch {
    // Said by the state directory's own failures, if it matters.
  }
  return left;
}

export function markStopped(stateDir: string): void {
  try {
    rmSync(join(stateDir, RUN_MARKER_FILE), { force: true });
  } catch {
    // The next start says the last run did not stop cleanly: a small lie about a disk that failed.
  }
}
