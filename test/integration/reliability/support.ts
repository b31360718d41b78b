/**
 * Helpers for the reliability suite: what a node holds (kernel + disk) so a test can assert that
 * nothing was left behind, the agent's memory, a raw client for the agent's socket, and a
 * good ADD/DEL probe. Everything runs inside the NodeHarness's test namespaces.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, watch } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, exitedAndRead, readAgentLog } from '../../support/agent-process.ts';
import { AGENT_BINARY, SHIM_BINARY } from '../../support/cni-driver.ts';
import { nsPing } from '../../support/netns.ts';
import { type AddResult, containerId, type NodeHarness, podAddr } from '../datapath/harness.ts';

/** Everything trellis could leave behind on a node, each sorted, as plain strings. */
export interface NodeHoldings {
  leases: string[];
  reservations: string[];
  quarantine: string[];
  spool: string[];
  veths: string[];
  routes: string[];
}

function list(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/**
 * Leases and address reservations on disk, spool files, host veths and protocol-126 routes. `ipamDir`
 * defaults to the host's view of the agent's IPAM directory (agentView() for an agent in its own
 * mount namespace).
 */
export function holdings(node: NodeHarness, ipamDir = join(node.agent.stateDir, 'ipam')): NodeHoldings {
  const ipam = ipamDir;
  return {
    leases: list(join(ipam, 'leases')),
    reservations: list(join(ipam, 'addrs')),
    quarantine: list(join(ipam, 'quarantine')),
    spool: list(node.agent.spoolDir),
    veths: node.hostVeths().sort(),
    routes: [...node.hostRoutes(4), ...node.hostRoutes(6)].map((r) => `${r.dst} ${r.dev ?? ''}`).sort(),
  };
}

/** The lease files' contents, keyed by owner ("<containerId>@<ifname>"). */
export function leaseAddresses(node: NodeHarness): Map<string, string[]> {
  const dir = join(node.agent.stateDir, 'ipam', 'leases');
  const out = new Map<string, string[]>();
  for (const name of list(dir)) {
    if (!name.endsWith('.json')) continue;
    try {
      const lease = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { addresses: { address: string }[] };
      out.set(
        name.slice(0, -'.json'.length),
        lease.addresses.map((a) => a.address),
      );
    } catch {
      out.set(name, ['<unreadable>']);
    }
  }
  return out;
}

export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function agentPid(node: NodeHarness): number {
  const pid = node.agent.child.pid;
  if (pid === undefined) throw new Error('agent has no pid');
  return pid;
}

/** The agent process's resident set size in KiB (it is exec'd by `ip netns exec`, same pid). */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface RawOutcome {
  /** Everything the agent sent before closing (or before the client gave up). */
  answer: string;
  /** How the exchange ended. */
  ended: 'closed' | 'client-timeout' | 'error';
  ms: number;
}

export interface RawOptions {
  /** Write the payload in pieces of this many bytes, waiting `delayMs` between them. */
  chunkBytes?: number;
  delayMs?: number;
  /** Half-close (FIN) after writing. Default true. */
  end?: boolean;
  /** Give up after this long. Default 15 s. */
  timeoutMs?: number;
}

/** Talks to the agent socket directly (no shim): any bytes, any pacing. */
export function rawExchange(
  socket: string,
  payload: Uint8Array | string,
  opts: RawOptions = {},
): Promise<RawOutcome> {
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : Buffer.from(payload);
  const started = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const s = createConnection({ path: socket, allowHalfOpen: true });
    const finish = (ended: RawOutcome['ended']): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ answer: Buffer.concat(chunks).toString('utf8'), ended, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish('client-timeout'), opts.timeoutMs ?? 15_000);
    s.on('data', (d: Buffer) => chunks.push(d));
    // The agent closing its side ends the exchange (this client is half-open, so no 'close' follows).
    s.on('end', () => finish('closed'));
    s.on('close', () => finish('closed'));
    s.on('error', () => finish('error'));
    s.on('connect', async () => {
      const step = opts.chunkBytes ?? bytes.length;
      for (let at = 0; at < bytes.length && !done; at += Math.max(step, 1)) {
        if (!s.writable) return;
        s.write(bytes.subarray(at, at + Math.max(step, 1)));
        if (opts.delayMs !== undefined && at + step < bytes.length) {
          await new Promise((r) => setTimeout(r, opts.delayMs));
        }
      }
      if (opts.end !== false && s.writable) s.end();
    });
  });
}

/** The agent's answer line parsed, or undefined when it sent nothing parseable. */
export function parseAnswer(
  answer: string,
): { ok: boolean; error?: { code: number; msg: string } } | undefined {
  try {
    return JSON.parse(answer.trim()) as { ok: boolean; error?: { code: number; msg: string } };
  } catch {
    return undefined;
  }
}

/** A request line exactly as the shim would send it. */
export function requestLine(env: Record<string, string>, stdin: unknown): string {
  return `${JSON.stringify({ v: 1, env, stdin: typeof stdin === 'string' ? stdin : JSON.stringify(stdin) })}\n`;
}

/**
 * One good pod lifecycle through the real shim: ADD (asserts an address), DEL (asserts success),
 * the pod namespace removed afterwards. Returns the duration and the v4 address.
 */
export async function goodCycle(node: NodeHarness): Promise<{ ms: number; v4: string }> {
  const started = performance.now();
  const pod = node.podNs();
  const id = containerId();
  const add = await node.add(pod, id);
  if (add.code !== 0) throw new Error(`good ADD failed: ${add.stdout}${add.stderr}`);
  const v4 = podAddr(add.json as AddResult, 4);
  const del = await node.del(id, pod.path);
  if (del.code !== 0) throw new Error(`good DEL failed: ${del.stdout}${del.stderr}`);
  return { ms: performance.now() - started, v4 };
}

/** A pod a test keeps up while it throws other calls at the agent, to show they leave it alone. */
export interface LivePod {
  id: string;
  netns: string;
  hostIf: string;
  v4: string;
  v6: string;
}

/** ADDs a pod (eth0, fresh namespace) through the shim; throws unless the ADD succeeded. */
export async function addLivePod(node: NodeHarness, conf?: Record<string, unknown>): Promise<LivePod> {
  const { pod, id, result, hostIf } = await node.addPod(conf);
  return { id, netns: pod.path, hostIf, v4: podAddr(result, 4), v6: podAddr(result, 6) };
}

/**
 * What the live pod lost, empty when it is whole: its lease on disk (both addresses), its host veth,
 * its protocol-126 host routes through that veth, and IPv4 reachability from the node.
 */
export function livePodLosses(node: NodeHarness, p: LivePod): string[] {
  const losses: string[] = [];
  const lease = leaseAddresses(node).get(`${p.id}@eth0`);
  if (JSON.stringify(lease) !== JSON.stringify([p.v4, p.v6])) losses.push(`lease: ${JSON.stringify(lease)}`);
  if (!node.hostVeths().includes(p.hostIf)) losses.push(`host veth ${p.hostIf}`);
  for (const [family, dst] of [
    [4, p.v4],
    [6, p.v6],
  ] as const) {
    if (!node.hostRoutes(family).some((r) => r.dst === dst && r.dev === p.hostIf)) {
      losses.push(`host route ${dst} dev ${p.hostIf}`);
    }
  }
  if (!nsPing(node.host.name, p.v4)) losses.push(`ping ${p.v4}`);
  return losses;
}

/** Lines the agent wrote about CNI calls (the per-call line and socket-level rejections). */
export function callLines(node: NodeHarness): Record<string, unknown>[] {
  return node.agent.logs.filter(
    (l) => typeof l.msg === 'string' && (l.msg.startsWith('CNI ') || l.msg === 'rejected CNI socket request'),
  );
}

export async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return true;
}

/**
 * A real agent like test/support/agent-process.ts starts it, but inside its own mount namespace
 * (`unshare --mount --propagation slave`: pod namespaces mounted on the host later still show up in
 * it, as the DaemonSet's HostToContainer mount does; its own mounts never reach the host) in which
 * its IPAM directory is a tiny tmpfs: tests fill it
 * (through /proc/PID/root) or remount it read-only (nsenter into the agent's mount namespace). The
 * host's mounts are never touched.
 */
export function startAgentWithTmpfsState(opts: {
  ns: string;
  podCIDRs: string[];
  sizeKiB: number;
  extraArgs?: string[];
  /**
   * The whole state directory on the tmpfs (default: its ipam/ only), filled with a copy of this
   * directory and then remounted read-only before the agent starts.
   */
  readOnlyState?: { seed: string };
}): AgentProcess {
  const dir = mkdtempSync(join(tmpdir(), 'trl-agent-'));
  const socket = join(dir, 'cni.sock');
  const stateDir = join(dir, 'state');
  const ipamDir = join(stateDir, 'ipam');
  const seed = opts.readOnlyState?.seed ?? '';
  const script =
    'set -e; mkdir -p "$1"; mount -t tmpfs -o "size=$2k,mode=0700" trl-state "$1";' +
    ' if [ -n "$3" ]; then cp -a "$3/." "$1/"; mount -o remount,ro "$1"; fi; shift 3; exec "$@"';
  const args = [
    '--mount',
    '--propagation',
    'slave',
    'sh',
    '-c',
    script,
    'sh',
    seed === '' ? ipamDir : stateDir,
    String(opts.sizeKiB),
    seed,
    'ip',
    'netns',
    'exec',
    opts.ns,
    AGENT_BINARY,
    ...opts.podCIDRs.flatMap((c) => ['--pod-cidr', c]),
    '--socket',
    socket,
    '--state-dir',
    stateDir,
    '--metrics-addr',
    '',
    '--no-cni-config',
    '--log-level',
    'debug',
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn('unshare', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const { logs, unnamed } = readAgentLog(child.stdout!);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = exitedAndRead(child);
  return {
    ns: opts.ns,
    dir,
    socket,
    stateDir,
    spoolDir: join(stateDir, 'spool'),
    logs,
    unnamed,
    child,
    async ready() {
      const ok = await waitFor(
        () =>
          child.exitCode !== null ||
          (logs.some((l) => l.msg === 'trellis agent ready') && existsSync(socket)),
        15_000,
      );
      if (!ok || child.exitCode !== null)
        throw new Error(`agent not ready: ${stderr}\n${JSON.stringify(logs)}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    exited: () => exited,
    stderr: () => stderr,
  };
}

/** The agent's IPAM directory as the agent sees it (inside its own mount namespace). */
export function agentView(pid: number, path: string): string {
  return `/proc/${pid}/root${path}`;
}

/** Runs a command inside the agent's mount namespace (only ever the private one we created). */
export function inAgentMountNs(pid: number, cmd: string, args: string[]): string {
  return execFileSync('nsenter', ['-t', String(pid), '-m', cmd, ...args], { encoding: 'utf8' });
}

/** The shim as a runtime runs it, with the child process exposed (to kill it mid-call). */
export function spawnShim(
  node: NodeHarness,
  call: { command: string; containerId?: string; netns?: string; ifname?: string },
  stdin: string,
  binary = SHIM_BINARY,
): { child: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stdout: string }> } {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    CNI_COMMAND: call.command,
  };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
  // `ip netns exec` execs the shim in place: the child's pid is the shim's.
  const child = spawn('ip', ['netns', 'exec', node.host.name, binary], {
    env,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stdin!.on('error', () => {});
  child.stdin!.end(stdin);
  const done = new Promise<{ code: number | null; signal: string | null; stdout: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout })),
  );
  return { child, done };
}

/** Resolves when a lease file (of containerId, if given) shows up in dir, or after timeoutMs. */
export function leaseCreated(dir: string, timeoutMs: number, containerId = ''): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      watcher.close();
      resolve();
    };
    const watcher = watch(dir, (event, name) => {
      if (event === 'rename' && name?.startsWith(containerId) === true && name.endsWith('.json')) done();
    });
    const timer = setTimeout(done, timeoutMs);
  });
}
