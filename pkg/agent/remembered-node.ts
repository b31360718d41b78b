/**
 * What the agent last learned of its own Node, kept in the state directory (like flannel's
 * subnet.env) so that an agent restarted while the API server is unreachable can still serve ADD:
 * a Node's spec.podCIDRs cannot change once set, so the last list's are the ones the API would give.
 * Only ADD's inputs are kept (pod CIDRs, the pod MTU and what it was worked out from); routes and
 * rules still wait for a full list.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MTU_MIN } from '../cni/netconf.ts';
import { writeFileAtomic } from '../cniconf/atomic.ts';
import { parseIp } from '../ip/index.ts';
import { parseRanges, usableIn } from '../ipam/ipam.ts';
import type { Lease } from '../ipam/types.ts';
import { FailureLog } from '../observe/failure-log.ts';
import type { Logger } from '../observe/logger.ts';
import { ROUTING_MODES, type RoutingMode } from '../routes/types.ts';
import { encapOverhead, type MtuChoice } from './mtu.ts';

export const REMEMBERED_NODE_FILE = 'node.json';

export interface RememberedNode {
  node: string;
  podCIDRs: string[];
  /** The MTU of pod traffic leaving the node and the overlay's overhead above it (agent.ts mtuChoice). */
  mtu: number;
  overhead: number;
  /** Where the MTU came from when it was detected. */
  mtuSource: string;
  /** The --mode and InternalIPs the overhead was worked out for (a restart may change the mode). */
  mode: RoutingMode;
  internalIPs: string[];
}

/** What --mtu accepts (IPv4's minimum): a value the agent ran with is one it can start again from. */
const MIN_MTU = MTU_MIN;
const MAX_MTU = 65_535;

export function renderRememberedNode(r: RememberedNode): string {
  const { node, podCIDRs, mtu, overhead, mtuSource, mode, internalIPs } = r;
  return `${JSON.stringify({ node, podCIDRs, mtu, overhead, mtuSource, mode, internalIPs }, null, 2)}\n`;
}

/** The file's content for this node (any node's when nodeName is undefined), or why it cannot be used. */
export function parseRememberedNode(
  text: string,
  nodeName: string | undefined,
): { ok: true; node: RememberedNode } | { ok: false; problem: string } {
  let o: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      return { ok: false, problem: 'not a JSON object' };
    }
    o = parsed as Record<string, unknown>;
  } catch (err) {
    return { ok: false, problem: `not JSON (${(err as Error).message})` };
  }
  if (typeof o.node !== 'string' || (nodeName !== undefined && o.node !== nodeName)) {
    return {
      ok: false,
      problem: `written for node ${JSON.stringify(o.node)}, not ${nodeName ?? 'a named node'}`,
    };
  }
  const cidrs = o.podCIDRs;
  if (!Array.isArray(cidrs) || cidrs.length === 0) {
    return { ok: false, problem: 'podCIDRs is not a non-empty list' };
  }
  let podCIDRs: string[];
  try {
    podCIDRs = parseRanges(cidrs as string[]).map((r) => r.text);
  } catch (err) {
    return { ok: false, problem: (err as Error).message };
  }
  const { mtu, overhead, mtuSource } = o;
  if (!Number.isInteger(mtu) || (mtu as number) < MIN_MTU || (mtu as number) > MAX_MTU) {
    return { ok: false, problem: `mtu ${JSON.stringify(mtu)} is not an integer in ${MIN_MTU}-${MAX_MTU}` };
  }
  if (
    !Number.isInteger(overhead) ||
    (overhead as number) < 0 ||
    (overhead as number) + (mtu as number) > MAX_MTU
  ) {
    return { ok: false, problem: `overhead ${JSON.stringify(overhead)} is not a usable byte count` };
  }
  const mode = o.mode as RoutingMode;
  if (!ROUTING_MODES.includes(mode)) {
    return { ok: false, problem: `mode ${JSON.stringify(o.mode)} is not one of ${ROUTING_MODES.join(', ')}` };
  }
  const ips = o.internalIPs;
  if (!Array.isArray(ips) || !ips.every((ip) => typeof ip === 'string' && parseIp(ip) !== undefined)) {
    return { ok: false, problem: 'internalIPs is not a list of IP addresses' };
  }
  return {
    ok: true,
    node: {
      node: o.node,
      podCIDRs,
      mtu: mtu as number,
      overhead: overhead as number,
      mtuSource: typeof mtuSource === 'string' ? mtuSource : 'unknown',
      mode,
      internalIPs: ips as string[],
    },
  };
}

/**
 * The MTU to serve ADD with from memory: as remembered for the same --mode and overhead; otherwise
 * (another mode, or a run of an older version that subtracted another overhead for it: auto did until
 * pods kept the full MTU) the link MTU it was taken from less this mode's overhead now (the route MTU
 * a pod gets never changes later).
 */
export function rememberedMtu(mem: RememberedNode, mode: RoutingMode): MtuChoice & { overhead: number } {
  // A remembered fallback stays one: it is no MTU found, and must not be kept as one later.
  const fallback = mem.mtuSource.startsWith('fallback') ? ({ fallback: true } as const) : {};
  const overhead = encapOverhead(mode, mem.internalIPs, mem.podCIDRs);
  if (mem.mode === mode && mem.overhead === overhead) {
    return {
      mtu: mem.mtu,
      overhead: mem.overhead,
      source: `remembered from the last run (${mem.mtuSource})`,
      ...fallback,
    };
  }
  const last = `the last run in ${mem.mode} mode (${mem.mtuSource})`;
  return {
    // Never below what a link takes: a link MTU of a few hundred bytes less a tunnel's overhead would be.
    mtu: Math.max(MIN_MTU, mem.mtu + mem.overhead - overhead),
    overhead,
    source: `remembered from ${last}, less ${mode} mode's overhead (${overhead})`,
    ...fallback,
  };
}

/**
 * Why ADD must not be served from memory, or undefined when it may: only before any list of Nodes
 * came (a list is the API's word, whatever the pass makes of it), only while IPAM has no ranges yet,
 * and only when that releases nothing (nothing may be deleted before the first full list).
 */
export function memoryRefusal(s: {
  listed: boolean;
  rangesKnown: boolean;
  leases: readonly Lease[];
  podCIDRs: readonly string[];
}): string | undefined {
  if (s.listed) return 'the API has listed Nodes';
  if (s.rangesKnown) return 'the pod CIDRs are known already';
  const outside = leasesOutside(s.leases, s.podCIDRs);
  if (outside.length > 0) return `${outside.length} lease(s) lie outside them`;
  return undefined;
}

/**
 * Leases with an address `podCIDRs` would not keep (IPAM's setRanges: usable in one of them, whatever
 * range text the lease was made in). Serving from memory would release them, and nothing may be
 * deleted before the first full list.
 */
export function leasesOutside(leases: readonly Lease[], podCIDRs: readonly string[]): Lease[] {
  const ranges = parseRanges(podCIDRs);
  return leases.filter((l) => l.addresses.some((a) => !usableIn(ranges, a.address)));
}

/**
 * The pod CIDRs in dir/node.json whoever wrote it (doctor, which does not know the node's name, when
 * the agent cannot be asked); undefined when there is no usable file.
 */
export function rememberedPodCIDRs(dir: string): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, REMEMBERED_NODE_FILE), 'utf8');
  } catch {
    return undefined;
  }
  const r = parseRememberedNode(text, undefined);
  return r.ok ? r.node.podCIDRs : undefined;
}

/** Reads dir/node.json; undefined when there is none, a problem when it cannot be used. */
export function readRememberedNode(
  dir: string,
  nodeName: string,
): { ok: true; node: RememberedNode } | { ok: false; problem: string } | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, REMEMBERED_NODE_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { ok: false, problem: (err as Error).message };
  }
  return parseRememberedNode(text, nodeName);
}

/** Writes dir/node.json (temp file, rename) unless it already holds exactly this. */
export function saveRememberedNode(dir: string, r: RememberedNode): Promise<'written' | 'unchanged'> {
  return writeFileAtomic(dir, REMEMBERED_NODE_FILE, renderRememberedNode(r), 0o600);
}

/**
 * The agent's node.json: read once at start, saved after passes (only when what it holds changed;
 * a failure is logged and costs only the fallback it serves).
 */
export class RememberedNodeFile {
  readonly #dir: string;
  readonly #nodeName: string;
  readonly #log: Logger;
  #saved: string | undefined;
  readonly #failures: FailureLog;

  constructor(dir: string, nodeName: string, log: Logger) {
    this.#dir = dir;
    this.#nodeName = nodeName;
    this.#log = log;
    this.#failures = new FailureLog(log, 'node state not saved (used when the API is unreachable at start)');
  }

  /** What the last run saved, or undefined (none, or unusable: logged). */
  load(): RememberedNode | undefined {
    const read = readRememberedNode(this.#dir, this.#nodeName);
    if (read === undefined || read.ok) return read?.node;
    this.#log.warn(
      { file: join(this.#dir, REMEMBERED_NODE_FILE), problem: read.problem },
      'remembered node state ignored: ADD waits for the API server',
    );
    return undefined;
  }

  /**
   * Writes the last saved state again if the file was removed under the agent (a cleanup of the
   * state directory): a restart during an API outage needs it, and save() writes only on change.
   */
  async keep(): Promise<void> {
    const text = this.#saved;
    if (text === undefined || existsSync(join(this.#dir, REMEMBERED_NODE_FILE))) return;
    try {
      await writeFileAtomic(this.#dir, REMEMBERED_NODE_FILE, text, 0o600);
      this.#failures.succeeded('node state saved again');
      this.#log.warn(
        { file: join(this.#dir, REMEMBERED_NODE_FILE) },
        'node state file was removed under the agent; written again',
      );
    } catch (err) {
      this.#failures.failed(err); // every 5 s on a read-only disk: said when it starts
    }
  }

  async save(r: RememberedNode): Promise<void> {
    const text = renderRememberedNode(r);
    if (text === this.#saved) return;
    try {
      await saveRememberedNode(this.#dir, r);
      this.#saved = text;
      this.#failures.succeeded('node state saved again');
    } catch (err) {
      this.#failures.failed(err);
    }
  }
}
