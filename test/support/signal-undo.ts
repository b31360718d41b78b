/**
 * What a bench or test run made, undone when a signal ends it. Node exits on SIGINT, SIGTERM and
 * SIGHUP without unwinding: no `finally` runs, so a Ctrl-C or a CI job's timeout would leave
 * namespaces, mounts, agents and temp directories behind. The helpers that make such things
 * (netns.ts, pod-pins.ts, agent-process.ts, the test API server, the test bed, tempDir here) register
 * them; a process that called undoOnSignals() answers a signal by killing its child processes
 * (agents, plugin runners, iperf3: whatever it started) and whatever runs in its namespaces, undoing
 * what it registered, and exiting with 128 + the signal's number. What is undone the normal way
 * unregisters itself; registering costs a map entry in a process that never asked (vitest's workers
 * without their setup file).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const STATE = Symbol.for('trellis.test.signal-undo');
const NETNS_DIR = '/var/run/netns';

interface UndoState {
  /** Test namespaces by name, and test beds' by prefix (`PREFIX-…`). */
  readonly namespaces: Set<string>;
  readonly namespacePrefixes: Set<string>;
  readonly dirs: Set<string>;
  /** Anything else, synchronous and quick (pod pins' unmounts): insertion-ordered, run in reverse. */
  readonly undos: Map<symbol, { what: string; undo: () => void }>;
  handler: ((signal: NodeJS.Signals) => void) | undefined;
  /** Namespaces and directories removed by a detached process rather than waited for. */
  detach: boolean;
}

/**
 * One per process, on globalThis: a test runner may load this module more than once (vitest's setup
 * file and a test file's imports get instances of their own), and the handler one installs must see
 * what the helpers another loaded registered.
 */
const shared = globalThis as { [STATE]?: UndoState };
shared[STATE] ??= {
  namespaces: new Set(),
  namespacePrefixes: new Set(),
  dirs: new Set(),
  undos: new Map(),
  handler: undefined,
  detach: false,
};
const state: UndoState = shared[STATE];

/** A registration in `set`; the returned function drops it. */
function registered(set: Set<string>, item: string): () => void {
  set.add(item);
  return () => {
    set.delete(item);
  };
}

/** A test namespace (`trl-…`) to delete. */
export function namespaceIfSignalled(name: string): () => void {
  return registered(state.namespaces, name);
}

/** Every namespace named `PREFIX-…` (a test bed's), as there are when the signal comes. */
export function namespacesIfSignalled(prefix: string): () => void {
  return registered(state.namespacePrefixes, prefix);
}

/** A directory to remove, with what is in it. */
export function dirIfSignalled(dir: string): () => void {
  return registered(state.dirs, dir);
}

/** Anything else, undone by `undo` (synchronous, quick: before the namespaces and directories go). */
export function undoIfSignalled(what: string, undo: () => void): () => void {
  const key = Symbol(what);
  state.undos.set(key, { what, undo });
  return () => {
    state.undos.delete(key);
  };
}

/** What is registered (for tests). */
export function pendingUndos(): string[] {
  return [
    ...[...state.namespaces].map((n) => `namespace ${n}`),
    ...[...state.namespacePrefixes].map((p) => `namespaces ${p}-*`),
    ...[...state.dirs].map((d) => `directory ${d}`),
    ...[...state.undos.values()].map((u) => u.what),
  ];
}

/**
 * From now on these signals undo what this process made, then exit. Once per process. `detach`: the
 * namespaces and directories are removed by a process of their own, not waited for: a vitest
 * worker is SIGKILLed as soon as vitest itself exits, within milliseconds of a Ctrl-C. A vitest
 * worker also leaves SIGTERM alone: vitest stops its workers with it once their files are done.
 */
export function undoOnSignals(
  signals: readonly NodeJS.Signals[] = SIGNALS,
  opts: { detach?: boolean } = {},
): void {
  if (state.handler !== undefined) return;
  state.detach = opts.detach === true;
  let undoing = false;
  const handler = (signal: NodeJS.Signals): void => {
    // A second signal (Ctrl-C pressed again, the outer half's SIGTERM after the terminal's SIGINT)
    // must not cut the undo short.
    if (undoing) return;
    undoing = true;
    for (const s of SIGNALS) if (!signals.includes(s)) process.on(s, () => undefined);
    process.stderr.write(`${signal}: undoing what this run made\n`);
    undoAll();
    process.exit(128 + (constants.signals[signal] ?? 0));
  };
  state.handler = handler;
  for (const s of signals) process.on(s, handler);
}

/**
 * For the outer half of a bench that runs itself again inside a namespace: a signal is passed on to
 * `child` as SIGTERM (the child undoes what it made and exits) and this process carries on, so that
 * the `finally` awaiting the child runs and undoes what this half made.
 */
export function forwardSignalsTo(child: ChildProcess): void {
  const previous = state.handler;
  if (previous !== undefined) for (const s of SIGNALS) process.off(s, previous);
  const handler = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  state.handler = handler;
  for (const s of SIGNALS) process.on(s, handler);
}

/**
 * Kills this process's children, runs the other undos (last registered first), kills whatever runs
 * in the namespaces, then deletes them and the directories. In-process but for one `ip` run.
 */
export function undoAll(): void {
  for (const pid of childPids(process.pid)) kill(pid);
  for (const [key, { what, undo }] of [...state.undos].reverse()) {
    state.undos.delete(key);
    try {
      undo();
    } catch (err) {
      process.stderr.write(`could not undo ${what}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
  const names = new Set(state.namespaces);
  if (state.namespacePrefixes.size > 0) {
    for (const n of listNamespaces()) {
      for (const p of state.namespacePrefixes) if (n.startsWith(`${p}-`)) names.add(n);
    }
  }
  const dirs = [...state.dirs];
  state.namespaces.clear();
  state.namespacePrefixes.clear();
  state.dirs.clear();
  try {
    removeNow([...names], dirs);
  } catch (err) {
    process.stderr.write(`could not remove: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

/** A fresh directory under the system's temp dir, removed on a signal too. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirIfSignalled(dir);
  return dir;
}

/**
 * Kills every process inside the namespaces (a /proc scan), then deletes them (one `ip` run, which
 * goes on past a name that is gone) and removes the directories; detached when the handler was
 * asked to. Namespaces whose names do not start with `trl-` are refused.
 */
function removeNow(names: readonly string[], dirs: readonly string[]): void {
  const foreign = names.find((n) => !n.startsWith('trl-'));
  if (foreign !== undefined) throw new Error(`refusing to delete non-test namespace ${foreign}`);
  killProcessesInside(names);
  const batch = names.map((n) => `netns del ${n}\n`).join('');
  if (!state.detach) {
    if (batch !== '')
      execFileSync('ip', ['-force', '-batch', '-'], { input: batch, stdio: ['pipe', 'ignore', 'ignore'] });
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    return;
  }
  if (batch === '' && dirs.length === 0) return;
  // The batch as a file written now: the detached shell outlives this process, a pipe's writer may not.
  const file = join(tmpdir(), `trl-undo-${process.pid}.batch`);
  writeFileSync(file, batch);
  spawn('sh', ['-c', 'ip -force -batch "$1"; rm -f "$1"; shift; rm -rf -- "$@"', 'sh', file, ...dirs], {
    detached: true,
    stdio: 'ignore',
  }).unref();
}

/**
 * SIGKILLs whatever runs inside the named namespaces (never this process), found in one /proc scan by
 * the namespaces' inodes in /proc/PID/ns/net: what `ip netns pids` does, for all of them at once.
 */
export function killProcessesInside(names: readonly string[]): void {
  const inodes = new Set<number>();
  for (const n of names) {
    const st = statSync(join(NETNS_DIR, n), { throwIfNoEntry: false });
    if (st !== undefined) inodes.add(st.ino);
  }
  if (inodes.size === 0) return;
  for (const pid of procPids()) {
    if (pid === process.pid) continue;
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      continue;
    }
    // "net:[4026532281]": the namespace's inode, as stat shows its pinned file's.
    if (inodes.has(Number(link.slice(5, -1)))) kill(pid);
  }
}

/** The named namespaces, read from their directory (no `ip` run: a vitest worker has milliseconds). */
function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Gone meanwhile.
  }
}

function procPids(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number);
}

/** The processes whose parent is `parent` (from /proc/PID/stat). */
function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const pid of procPids()) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === parent) pids.push(pid);
  }
  return pids;
}
