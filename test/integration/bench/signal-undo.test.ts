/**
 * A bench ended by a signal leaves nothing behind (test/support/signal-undo.ts): a real script
 * (interrupted-run.ts) makes namespaces, a temp dir, a pinned namespace, the test API server's
 * kubeconfig dir and child processes through the helpers benches use, then is sent SIGTERM, SIGINT
 * or SIGHUP. Node's default for each is to exit without running a `finally`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NODE } from '../../../bench/lib/runner-client.ts';
import { delNetns, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { pendingUndos } from '../../support/signal-undo.ts';
import { namespacesWithPrefix } from '../../support/testbed/processes.ts';

const SCRIPT = join(import.meta.dirname, 'interrupted-run.ts');

interface Made {
  namespaces: string[];
  dirs: string[];
  pinsRoot: string;
  pin: string;
  pids: number[];
}

const started: ChildProcess[] = [];
/** Whatever a failed run left, removed after each test. */
let made: Made[] = [];

afterEach(() => {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
  started.length = 0;
  for (const m of made) {
    for (const pid of m.pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (mounted(m.pin)) spawnSync('umount', ['-l', m.pin]);
    if (mounted(m.pinsRoot)) spawnSync('umount', ['-l', m.pinsRoot]);
    for (const d of [...m.dirs, m.pinsRoot]) rmSync(d, { recursive: true, force: true });
    for (const ns of m.namespaces) delNetns(ns);
  }
  made = [];
});

/** Starts the script and resolves with each JSON line it prints, once `lines` of them are in. */
function run(args: string[], lines: number): Promise<{ child: ChildProcess; printed: unknown[] }> {
  const child = spawn(NODE, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const printed = out
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as unknown);
      if (printed.length >= lines) resolve({ child, printed });
    });
    child.on('exit', (code) => reject(new Error(`exited ${code} before printing: ${err}`)));
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
}

/** Running (a zombie, killed and not yet reaped by its new parent, is not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Until none of `pids` runs, for up to 2 s: a SIGKILL lands at once, but not inside the same tick. */
async function settled(pids: readonly number[]): Promise<void> {
  for (let i = 0; i < 40 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
}

function mounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
}

/** Everything `m` names exists: the run really made it. */
function expectMade(m: Made): void {
  for (const ns of m.namespaces) expect(existsSync(`/var/run/netns/${ns}`), ns).toBe(true);
  for (const d of m.dirs) expect(existsSync(d), d).toBe(true);
  expect(existsSync(m.pin)).toBe(true);
  for (const pid of m.pids) expect(alive(pid), `pid ${pid}`).toBe(true);
}

/** Nothing `m` names is left. */
function expectGone(m: Made): void {
  const names = namespacesWithPrefix('trl');
  for (const ns of m.namespaces) {
    expect(names, ns).not.toContain(ns);
    expect(existsSync(`/var/run/netns/${ns}`), ns).toBe(false);
  }
  for (const d of m.dirs) expect(existsSync(d), d).toBe(false);
  expect(existsSync(m.pinsRoot)).toBe(false);
  expect(mounted(m.pinsRoot)).toBe(false);
  for (const pid of m.pids) expect(alive(pid), `pid ${pid}`).toBe(false);
}

describe.skipIf(netnsSkipReason)('a bench ended by a signal', () => {
  for (const [signal, number] of [
    ['SIGTERM', 15],
    ['SIGINT', 2],
    ['SIGHUP', 1],
  ] as const) {
    it(`undoes what it made on ${signal} and exits ${128 + number}`, async () => {
      const { child, printed } = await run([], 1);
      const m = printed[0] as Made;
      made.push(m);
      expectMade(m);
      const end = exited(child);
      child.kill(signal);
      const { code, stderr } = await end;
      expect(code).toBe(128 + number);
      expect(stderr).toContain(`${signal}: undoing what this run made`);
      await settled(m.pids);
      expectGone(m);
    });
  }

  it('run inside a namespace: the outer half passes SIGTERM on and undoes its own part after the inner', async () => {
    const { child, printed } = await run(['--outer'], 2);
    const outer = (printed[0] as { outer: { namespaces: string[] } }).outer;
    const inner = printed[1] as Made;
    made.push({ ...inner, namespaces: [...inner.namespaces, ...outer.namespaces] });
    for (const ns of outer.namespaces) expect(existsSync(`/var/run/netns/${ns}`)).toBe(true);
    for (const d of inner.dirs) expect(existsSync(d), d).toBe(true);
    const end = exited(child);
    child.kill('SIGTERM'); // the outer half only, as a CI job's timeout or `kill` sends it
    const { code } = await end;
    expect(code).toBe(143); // the inner half's
    await settled(inner.pids);
    expectGone(inner);
    for (const ns of outer.namespaces) expect(namespacesWithPrefix('trl')).not.toContain(ns);
  });

  it('as a vitest worker: SIGINT hands the namespaces and directories to a process of their own', async () => {
    const { child, printed } = await run(['--detach'], 1);
    const m = printed[0] as Made;
    made.push(m);
    expectMade(m);
    const end = exited(child);
    child.kill('SIGINT');
    expect((await end).code).toBe(130);
    // Not waited for by the script: give the detached `ip` and `rm` their moment.
    for (
      let i = 0;
      i < 40 &&
      (m.dirs.some(existsSync) || namespacesWithPrefix('trl').some((n) => m.namespaces.includes(n)));
      i++
    )
      await new Promise((r) => setTimeout(r, 50));
    await settled(m.pids);
    expectGone(m);
  });

  it('as a vitest worker: SIGTERM, how vitest stops a worker that is done, is left to its default', async () => {
    const { child, printed } = await run(['--detach'], 1);
    const m = printed[0] as Made;
    made.push(m);
    const end = exited(child);
    child.kill('SIGTERM');
    const { code, stderr } = await end;
    expect(code).toBeNull(); // ended by the signal itself
    expect(stderr).not.toContain('undoing');
    for (const ns of m.namespaces) expect(namespacesWithPrefix('trl')).toContain(ns);
  });

  it('what is undone the normal way leaves nothing registered', () => {
    const before = pendingUndos().length;
    const pool = new NetnsPool();
    const ns = pool.add('sgn');
    expect(pendingUndos()).toContain(`namespace ${ns.name}`);
    pool.cleanup();
    expect(pendingUndos()).toHaveLength(before);
  });
});
