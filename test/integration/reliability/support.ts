/**
 * Helpers for the reliability suite: what a node holds (kernel + disk) so a test can assert that
 * nothing was left behind, the agent's memory, a raw client for the agent's socket, and a
 * good ADD/DEL probe. Everything runs inside the NodeHarness's test namespaces.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
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

/** Leases and address reservations on disk, spool files, host veths and protocol-126 routes. */
export function holdings(node: NodeHarness): NodeHoldings {
  const ipam = join(node.agent.stateDir, 'ipam');
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
