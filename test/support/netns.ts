import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { namespaceIfSignalled } from './signal-undo.ts';

/**
 * Test topology helpers. Every namespace a test creates has the `trl-` prefix plus a random suffix
 * and is removed by the returned cleanup, even when the test fails. Nothing here touches the root
 * network namespace: every `ip` command runs with `-n NAME`.
 */

export const TEST_NETNS_PREFIX = 'trl-';

export function canUseNetns(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (network namespaces)' };
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return { ok: false, reason: 'needs iproute2 (`ip`)' };
  }
  return { ok: true };
}

/** A skip reason for describe.skipIf, or undefined when the kernel tests can run. */
export const netnsSkipReason: string | undefined = (() => {
  const r = canUseNetns();
  return r.ok ? undefined : r.reason;
})();

export function uniqueName(tag: string): string {
  // Namespace names are free length, but interface names derived from them are not: keep them short.
  return `${TEST_NETNS_PREFIX}${tag}-${randomBytes(3).toString('hex')}`;
}

export function ip(ns: string | undefined, ...args: string[]): string {
  const argv = ns === undefined ? args : ['-n', ns, ...args];
  return execFileSync('ip', argv, { encoding: 'utf8' });
}

export function ipJson<T = unknown>(ns: string, ...args: string[]): T {
  const out = execFileSync('ip', ['-n', ns, '-j', ...args], { encoding: 'utf8' });
  return (out.trim() === '' ? [] : JSON.parse(out)) as T;
}

/**
 * Starts a one-line program on the test's own Node inside a namespace (a server or client in a pod);
 * stdout piped, stderr piped or passed through.
 */
export function nodeIn(ns: string, program: string, stderr: 'pipe' | 'inherit' = 'pipe'): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program], {
    stdio: ['ignore', 'pipe', stderr],
  });
}

/** Runs a command inside a namespace (ping, sysctl, nft, ...). */
export function nsExec(ns: string, cmd: string, args: string[], opts: { input?: string } = {}): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', input: opts.input });
}

export function nsPing(ns: string, addr: string, count = 1): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ping', '-c', String(count), '-W', '1', '-i', '0.2', addr], {
      stdio: 'ignore',
    });
    return true;
  } catch {
    return false;
  }
}

export interface TestNetns {
  readonly name: string;
  readonly path: string;
}

/** How to drop each namespace made here from the undos a signal runs (signal-undo.ts). */
const unregister = new Map<string, () => void>();

/** Creates a namespace, with `lo` up unless told otherwise (a runtime's fresh pod namespace has it down). */
export function addNetns(tag: string, opts: { loUp?: boolean } = {}): TestNetns {
  const name = addUniqueNetns(tag);
  if (opts.loUp !== false) ip(name, 'link', 'set', 'lo', 'up');
  return { name, path: `/var/run/netns/${name}` };
}

/**
 * `ip netns add` under a fresh name, drawn again when it is taken: the random part is short (3 bytes,
 * for the interface names derived from it), and a soak creating tens of thousands of namespaces while
 * ~20 live met a name in use (about 2 % of 18,000-pod runs).
 */
function addUniqueNetns(tag: string): string {
  for (let attempt = 1; ; attempt++) {
    const name = uniqueName(tag);
    try {
      execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'] });
      unregister.set(name, namespaceIfSignalled(name));
      return name;
    } catch (err) {
      const taken = String((err as { stderr?: unknown }).stderr).includes('File exists');
      if (!taken || attempt >= 5) throw err;
    }
  }
}

export function delNetns(name: string): void {
  if (!name.startsWith(TEST_NETNS_PREFIX)) throw new Error(`refusing to delete non-test namespace ${name}`);
  unregister.get(name)?.();
  unregister.delete(name);
  if (existsSync(`/var/run/netns/${name}`)) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // Already gone: nothing to clean.
    }
  }
}

/** Tracks namespaces created by one test file; call cleanup() in afterEach/afterAll or finally. */
export class NetnsPool {
  private readonly names: string[] = [];

  add(tag: string, opts: { loUp?: boolean } = {}): TestNetns {
    const ns = addNetns(tag, opts);
    this.names.push(ns.name);
    return ns;
  }

  /**
   * Two namespaces joined by a veth whose ends are both eth0, up, with IPv6 DAD off: a node and the
   * segment it sits on, for tests that route over eth0.
   */
  addLinkedPair(tag: string): [TestNetns, TestNetns] {
    const a = this.add(tag);
    const b = this.add(`${tag}b`);
    ip(a.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b.name);
    for (const ns of [a, b]) {
      nsSysctl(ns.name, 'net.ipv6.conf.eth0.accept_dad', '0');
      ip(ns.name, 'link', 'set', 'eth0', 'up');
    }
    return [a, b];
  }

  /** Registers a namespace created elsewhere (e.g. by a helper) for cleanup. */
  track(name: string): void {
    this.names.push(name);
  }

  cleanup(): void {
    while (this.names.length > 0) delNetns(this.names.pop()!);
  }
}

/** Writes a sysctl inside a namespace (never in the root namespace). */
export function nsSysctl(ns: string, key: string, value: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`]);
}

/**
 * Strict reverse-path filtering (rp_filter=1) on these `conf` entries of the namespace ('all', 'default',
 * interface names). The kernel applies the larger of `all` and the interface's. Slash form: the dot
 * in `trellis.v4` would read as a separator.
 */
export function strictRpFilter(ns: string, confs: readonly string[]): void {
  for (const conf of confs) nsSysctl(ns, `net/ipv4/conf/${conf}/rp_filter`, '1');
}

/**
 * Whether the kernel finds `addr` in set `set` of table `inet TABLE` in namespace ns (`nft get element`
 * asks the kernel's own lookup, intervals included).
 */
export function nftSetHas(ns: string, set: string, addr: string, table = 'trellis'): boolean {
  const args = ['netns', 'exec', ns, 'nft', 'get', 'element', 'inet', table, set, `{ ${addr} }`];
  return spawnSync('ip', args, { stdio: 'ignore' }).status === 0;
}
