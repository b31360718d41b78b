import { posix } from 'node:path';
import { toCniError } from '../cni/errors.ts';
import { hostVethName, shortId } from '../datapath/names.ts';
import {
  type Family,
  type NetlinkHandle,
  type NetnsPort,
  TRELLIS_ROUTE_PROTOCOL,
} from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import type { Ipam, LeaseKey } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * Rebuilding the lease of an attachment whose lease file was corrupt (quarantined at load, its
 * addresses held, Ipam.heldKeys()). The kernel still knows what ADD set up: the host veth is named
 * after (container id, ifname), and the pod's addresses are the destinations of the /32 and /128
 * host routes with trellis's protocol via that veth. Those become the lease again (Ipam.restore), so
 * CHECK, a repeated ADD, the GCs and DEL treat the pod like any other.
 *
 * When: once the pod CIDRs are known (the controller's first range change; restore only accepts
 * addresses inside the current ranges, and Kubernetes mode learns them after start-up). Until then
 * the start-up sweep keeps held veths and IPAM never hands held addresses out, so waiting loses
 * nothing. The kernel is read at that moment, not earlier, so a DEL in between is respected.
 *
 * The pod's namespace path is not in the kernel's view from here: the rebuilt lease carries the one
 * the quarantined record still shows, only when it is a plain path under /run/netns or
 * /var/run/netns that is a network namespace whose `ifname` carries every rebuilt address; otherwise
 * none (a repeated ADD fills it in; the start-up sweep then relies on the veth alone).
 */

/** What the kernel (and the quarantined record) show for one held attachment. */
export interface HeldObservation {
  key: LeaseKey;
  hostVeth: string;
  /** Undefined when the host veth does not exist. */
  link: { index: number } | undefined;
  /** Routes with trellis's protocol in the main table via the host veth. */
  routes: { family: Family; dst: string }[];
  /** A namespace path checked against the kernel (see netnsFromRecord), when one was found. */
  netns?: string;
}

export type RebuildDecision =
  | { kind: 'restore'; key: LeaseKey; addresses: string[]; netns?: string }
  | { kind: 'skip'; key: LeaseKey; reason: string };

/** The pure part: which addresses the kernel shows for the attachment, or why it cannot tell. */
export function decideRebuild(o: HeldObservation): RebuildDecision {
  const { key } = o;
  if (o.link === undefined) {
    return {
      kind: 'skip',
      key,
      reason: `host veth ${o.hostVeth} does not exist (the pod is gone or was never set up)`,
    };
  }
  const byFamily = new Map<Family, string[]>();
  for (const r of o.routes) {
    const [addr, len] = r.dst.split('/');
    const address = canonicalIp(addr ?? '');
    if (address === undefined || len !== (r.family === 4 ? '32' : '128')) continue; // not a pod route
    const list = byFamily.get(r.family) ?? [];
    if (!list.includes(address)) list.push(address);
    byFamily.set(r.family, list);
  }
  if (byFamily.size === 0) {
    return { kind: 'skip', key, reason: `no trellis host routes via ${o.hostVeth}` };
  }
  for (const [family, list] of byFamily) {
    if (list.length > 1) {
      return {
        kind: 'skip',
        key,
        reason: `${o.hostVeth} has ${list.length} IPv${family} pod routes (${list.join(', ')}): ambiguous`,
      };
    }
  }
  const addresses = [4, 6].flatMap((f) => byFamily.get(f as Family) ?? []);
  return o.netns === undefined
    ? { kind: 'restore', key, addresses }
    : { kind: 'restore', key, addresses, netns: o.netns };
}

const NETNS_DIRS = ['/run/netns/', '/var/run/netns/'];
const NETNS_FIELD = /"netns"\s*:\s*"([^"\\]{1,4096})"/;

/**
 * A namespace path read out of a quarantined record's raw (untrusted) text: only a plain, normalized
 * absolute path directly under /run/netns or /var/run/netns; anything else is ignored.
 */
export function netnsFromRecord(text: string): string | undefined {
  const path = NETNS_FIELD.exec(text)?.[1];
  if (path === undefined || posix.normalize(path) !== path) return undefined;
  const dir = NETNS_DIRS.find((d) => path.startsWith(d));
  if (dir === undefined) return undefined;
  const name = path.slice(dir.length);
  return /^[A-Za-z0-9_.-]+$/.test(name) && name !== '.' && name !== '..' ? path : undefined;
}

export interface RebuildDeps {
  ipam: Pick<Ipam, 'heldKeys' | 'restore' | 'quarantinedRecords'>;
  host: Pick<NetlinkHandle, 'getLink' | 'listRoutes'>;
  netns: Pick<NetnsPort, 'isNetns' | 'openNetlinkIn'>;
  /** Attachments with a CNI call in flight ("<containerId>\0<ifname>"): left for that call. */
  busy: ReadonlySet<string>;
  log: Logger;
}

/** Reads the kernel for each held attachment, restores what it shows, logs one line per key. */
export async function rebuildHeldLeases(deps: RebuildDeps): Promise<{ rebuilt: number; failed: number }> {
  let rebuilt = 0;
  let failed = 0;
  for (const key of deps.ipam.heldKeys()) {
    const fields = { containerId: shortId(key.containerId), ifname: key.ifname };
    let decision: RebuildDecision;
    try {
      if (deps.busy.has(`${key.containerId}\0${key.ifname}`)) {
        decision = { kind: 'skip', key, reason: 'a CNI call for it is in flight' };
      } else {
        decision = decideRebuild(await observe(deps, key));
      }
      // The kernel reads yield: a DEL may have released the key meanwhile (restore refuses then).
      if (decision.kind === 'restore') {
        const lease = deps.ipam.restore(
          key,
          decision.addresses,
          decision.netns ? { netns: decision.netns } : {},
        );
        rebuilt++;
        deps.log.info(
          {
            ...fields,
            addresses: lease.addresses.map((a) => a.address),
            netns: lease.netns ?? '',
            source: 'kernel',
          },
          'quarantined lease rebuilt',
        );
        continue;
      }
    } catch (err) {
      decision = { kind: 'skip', key, reason: toCniError(err).message };
    }
    failed++;
    deps.log.warn(
      { ...fields, reason: decision.reason },
      'quarantined lease not rebuilt; its addresses stay held until DEL',
    );
  }
  return { rebuilt, failed };
}

async function observe(deps: RebuildDeps, key: LeaseKey): Promise<HeldObservation> {
  const hostVeth = hostVethName(key.containerId, key.ifname);
  const link = await deps.host.getLink(hostVeth);
  if (link === undefined) return { key, hostVeth, link: undefined, routes: [] };
  const routes = (await deps.host.listRoutes({ protocol: TRELLIS_ROUTE_PROTOCOL, ifindex: link.index }))
    .filter((r) => r.ifindex === link.index && r.protocol === TRELLIS_ROUTE_PROTOCOL)
    .map((r) => ({ family: r.family, dst: r.dst }));
  const observation: HeldObservation = { key, hostVeth, link: { index: link.index }, routes };
  const decided = decideRebuild(observation);
  if (decided.kind !== 'restore') return observation;
  const netns = await verifiedNetns(deps, key, decided.addresses);
  return netns === undefined ? observation : { ...observation, netns };
}

/** The namespace path from the quarantined record, kept only if the kernel confirms it. */
async function verifiedNetns(
  deps: RebuildDeps,
  key: LeaseKey,
  addresses: string[],
): Promise<string | undefined> {
  for (const text of deps.ipam.quarantinedRecords(key)) {
    const path = netnsFromRecord(text);
    if (path === undefined || !deps.netns.isNetns(path)) continue;
    try {
      const pod = deps.netns.openNetlinkIn(path);
      try {
        const podLink = await pod.getLink(key.ifname);
        if (podLink === undefined) continue;
        const there = new Set((await pod.listAddresses(undefined, podLink.index)).map((a) => a.address));
        if (addresses.every((a) => there.has(a))) return path;
      } finally {
        pod.close();
      }
    } catch {
      // Not confirmed: the lease goes without a namespace path.
    }
  }
  return undefined;
}
