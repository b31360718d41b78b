/**
 * What a bench or test driver made, undone when a signal ends it. Node exits on SIGINT, SIGTERM and
 * SIGHUP without unwinding: no `finally` runs, so a Ctrl-C or a CI job's timeout would leave
 * namespaces, mounts, agents and temp directories behind. The helpers that make such things
 * (netns.ts, pod-pins.ts, agent-process.ts, the test API server, tempDir here) register how to undo
 * each one, synchronously; a script that calls undoOnSignals() has a signal kill its child processes
 * (agents, plugin runners, iperf3: whatever it started), run the undos last made first, and exit
 * 128 + the signal's number. Registering costs a map entry where no script asked for it (vitest's
 * workers); what is undone in the normal way unregisters itself.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Insertion-ordered: undone in reverse. */
const undos = new Map<symbol, { what: string; undo: () => void }>();
let handler: ((signal: NodeJS.Signals) => void) | undefined;

/** Registers `undo` (synchronous) for `what`; the returned function unregisters it. */
export function undoIfSignalled(what: string, undo: () => void): () => void {
  const key = Symbol(what);
  undos.set(key, { what, undo });
  return () => {
    undos.delete(key);
  };
}

/** What is registered, oldest first (for tests). */
export function pendingUndos(): string[] {
  return [...undos.values()].map((u) => u.what);
}

/** From now on a signal undoes what this process made, then exits. Once per process. */
export function undoOnSignals(): void {
  if (handler !== undefined) return;
  let undoing = false;
  handler = (signal) => {
    // A second signal (Ctrl-C pressed again, the outer half's SIGTERM after the terminal's SIGINT)
    // must not cut the undo short.
    if (undoing) return;
    undoing = true;
    process.stderr.write(`${signal}: undoing what this run made\n`);
    undoAll();
    process.exit(128 + (constants.signals[signal] ?? 0));
  };
  for (const s of SIGNALS) process.on(s, handler);
}

/**
 * For the outer half of a bench that runs itself again inside a namespace: a signal is passed on to
 * `child` as SIGTERM (the child undoes what it made and exits) and this process carries on, so that
 * the `finally` awaiting the child runs and undoes what this half made.
 */
export function forwardSignalsTo(child: ChildProcess): void {
  if (handler !== undefined) for (const s of SIGNALS) process.off(s, handler);
  handler = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  for (const s of SIGNALS) process.on(s, handler);
}

/** Kills this process's children, then runs every registered undo, last registered first. */
export function undoAll(): void {
  for (const pid of childPids(process.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
  }
  for (const [key, { what, undo }] of [...undos].reverse()) {
    undos.delete(key);
    try {
      undo();
    } catch (err) {
      process.stderr.write(`could not undo ${what}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}

/** A fresh directory under the system's temp dir, removed on a signal too. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  undoIfSignalled(`directory ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The processes whose parent is `parent` (from /proc/PID/stat). */
function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === parent) pids.push(Number(entry));
  }
  return pids;
}
