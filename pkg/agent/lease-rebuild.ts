import { readdirSync, realpathSync } from 'node:fs';
import { posix } from 'node:path';
import { toCniError } from '../cni/errors.ts';
import { deleteLinkIfNamed } from '../datapath/delete-link.ts';
import { heldWithoutLease } from '../datapath/gc.ts';
import { podMac } from '../datapath/mac.ts';
import { attachmentKey, hostVethName, leaseLogFields, shortId } from '../datapath/names.ts';
import { netnsIdentityOf } from '../datapath/netns-identity.ts';
import {
  type Family,
  type NetlinkHandle,
  type NetnsPort,
  TRELLIS_ROUTE_PROTOCOL,
} from '../datapath/ports.ts';
import { ownerOfAlias, type VethOwner } from '../datapath/veth-alias.ts';
import { canonicalIp } from '../ip/index.ts';
import { type Ipam, type LeaseKey, type LeaseMeta, parseRanges, usableIn } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * Rebuilding the lease of an attachment whose lease file was corrupt (quarantined at load, its
 * addresses held, Ipam.heldKeys()). The kernel still knows what ADD set up: the host veth is named
 * after (container id, ifname), and the pod's addresses are the destinations of the /32 and /128
 * host routes with trellis's protocol via that veth; its MTU is the one ADD gave both ends. Those
 * become the lease again (Ipam.restore), so CHECK, a repeated ADD, the GCs and DEL treat the pod
 * like any other.
 *
 * When: once the pod CIDRs are known (the controller's first range change; restore only accepts
 * addresses inside the current ranges, and Kubernetes mode learns them after start-up). Until then
 * the start-up sweep keeps held veths and IPAM never hands held addresses out, so waiting loses
 * nothing. The kernel is read at that moment, not earlier, so a DEL in between is respected.
 *
 * The pod's namespace path is not in the host's view: it is searched for, the path the quarantined
 * record still shows first (read out of untrusted text: only a plain path directly under /run/netns
 * or /var/run/netns), then the namespaces named there; one counts only when its `ifname` is the host
 * veth's peer and carries every rebuilt address. Not found: the lease goes without one (a repeated
 * ADD fills it in; the start-up sweep then relies on the veth alone). In Kubernetes mode the API's
 * pods on this node give the pod's name, namespace and UID when exactly one running pod has these
 * IPs, so the API-driven lease GC keeps the lease while the pod runs.
 */

/** What the kernel (and the quarantined record) show for one held attachment. */
export interface HeldObservation {
  key: LeaseKey;
  hostVeth: string;
  /** Undefined when the host veth does not exist. */
  link: { index: number; mtu: number } | undefined;
  /** Routes with trellis's protocol in the main table via the host veth. */
  routes: { family: Family; dst: string }[];
  /** A namespace path checked against the kernel (see netnsFromRecord), when one was found. */
  netns?: string;
  /** Which namespace `netns` named while it was checked (netns-identity.ts), when that could be read. */
  netnsId?: string;
  /** What the host veth's alias says of its attachment (veth-alias.ts), when it has trellis's. */
  owner?: VethOwner;
}

export type RebuildDecision =
  | { kind: 'restore'; key: LeaseKey; addresses: string[]; netns?: string; netnsId?: string }
  | { kind: 'release'; key: LeaseKey; reason: string }
  | { kind: 'skip'; key: LeaseKey; reason: string };

/** The pure part: which addresses the kernel shows for the attachment, or why it cannot tell. */
export function decideRebuild(o: HeldObservation): RebuildDecision {
  const { key } = o;
  if (o.link === undefined) {
    // Veth pairs die together: without the host end no pod interface carries these addresses, so
    // holding them would only leak them (an ADD killed before its veth, then abandoned, gets no DEL).
    return {
      kind: 'release',
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
  if (o.netns === undefined) return { kind: 'restore', key, addresses };
  return o.netnsId === undefined
    ? { kind: 'restore', key, addresses, netns: o.netns }
    : { kind: 'restore', key, addresses, netns: o.netns, netnsId: o.netnsId };
}

const NETNS_DIRS = ['/var/run/netns/', '/run/netns/'];
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

/** A pod as the API lists it on this node (pkg/k8s PodView, the fields used here). */
export interface PodSeen {
  namespace: string;
  name: string;
  uid: string;
  /** A static pod's UID as its sandbox has it (PodView.kubeletUid). */
  kubeletUid?: string;
  phase: string;
  podIPs: readonly string[];
}

/**
 * The one pod on this node whose IPs include a rebuilt address, for the lease's pod fields (the API
 * GC keeps a lease while its pod runs). None when no pod or several claim them; finished pods
 * (Succeeded, Failed) do not count: their IPs may be listed after their sandbox went.
 */
export function podForAddresses(pods: readonly PodSeen[], addresses: readonly string[]): PodSeen | undefined {
  const mine = new Set(addresses);
  const found = pods.filter(
    (p) =>
      p.phase !== 'Succeeded' &&
      p.phase !== 'Failed' &&
      p.podIPs.some((ip) => {
        const c = canonicalIp(ip);
        return c !== undefined && mine.has(c);
      }),
  );
  return found.length === 1 ? found[0] : undefined;
}

/** The log line of held addresses released because no pod can hold them: the rebuild's and the held sweep's. */
export const HELD_RELEASED = 'quarantined lease released: no pod holds its addresses';

/**
 * The warning for pods whose addresses left the pod CIDRs, released and their veths removed: the
 * controller's (a range change) and the rebuild's (a held pod of an old CIDR) alike.
 */
export const PODS_TO_RECREATE =
  'leases outside the new pod CIDRs released and their veths removed; those pods need to be recreated';

export interface RebuildDeps {
  ipam: Pick<
    Ipam,
    'heldKeys' | 'heldAddresses' | 'ranges' | 'restore' | 'quarantinedRecords' | 'release' | 'get'
  >;
  host: Pick<NetlinkHandle, 'getLink' | 'getLinkByIndex' | 'deleteLink' | 'listRoutes'>;
  netns: Pick<
    NetnsPort,
    'isNetns' | 'openNetlinkIn' | 'openNetnsFd' | 'closeFd' | 'bootId' | 'namespaceId' | 'processStart'
  >;
  /** Attachments with a CNI call in flight ("<containerId>\0<ifname>"): left for that call. */
  busy: ReadonlySet<string>;
  /** The pods the API lists on this node (Kubernetes mode); undefined in standalone mode. */
  podsOnNode?: () => Promise<readonly PodSeen[]>;
  /** Names in a namespace directory (/run/netns); node:fs by default, [] when it does not exist. */
  listDir?: (dir: string) => string[];
  log: Logger;
}

/** An attachment given up because its held addresses are outside the pod CIDRs, as the log names it. */
type Invalidated = Record<string, unknown>;

/**
 * Reads the kernel for each held attachment, restores what it shows, logs one line per key.
 *
 * A held attachment with an address not usable in the current pod CIDRs can never be restored
 * (restore refuses it): it is what a pod CIDR change leaves of a pod when the agent died between
 * releasing its lease and deleting its veth (the start-up sweep then holds the addresses the veth
 * routes, gc.ts), or a quarantined record of a pod of the old CIDR. Such a pod is invalidated as
 * the controller invalidates a lease outside the new CIDRs (its range change): its host veth deleted
 * now, not in the background (its /32 and /128 host routes go with it), then its addresses released,
 * and the same warning naming the pods to recreate. Kept, the pod went on receiving this node's
 * traffic for an address the old CIDR's next node hands out. `unremoved` counts those whose veth or
 * release failed: still held, the caller tries again.
 */
export async function rebuildHeldLeases(
  deps: RebuildDeps,
): Promise<{ rebuilt: number; released: number; failed: number; invalidated: number; unremoved: number }> {
  let rebuilt = 0;
  let released = 0;
  let failed = 0;
  let unremoved = 0;
  const invalidated: Invalidated[] = [];
  let pods: Promise<readonly PodSeen[] | string> | undefined;
  const ranges = parseRanges(deps.ipam.ranges());
  for (const key of deps.ipam.heldKeys()) {
    const fields = { containerId: shortId(key.containerId), ifname: key.ifname };
    let decision: RebuildDecision;
    let observation: HeldObservation | undefined;
    try {
      if (deps.busy.has(attachmentKey(key))) {
        // One outside the pod CIDRs is tried again on the agent's timer (unremoved) once the call is
        // done: nothing else would remove it before the next range change.
        if (outsideRanges(deps, key, ranges)) unremoved++;
        decision = { kind: 'skip', key, reason: 'a CNI call for it is in flight' };
      } else {
        let gone: Invalidated | 'busy' | 'decided' | undefined;
        try {
          gone = await invalidateOutside(deps, key, ranges);
        } catch (err) {
          unremoved++;
          deps.log.warn(
            { ...fields, error: toCniError(err).message },
            'a pod whose addresses are outside the pod CIDRs could not be removed; its addresses stay held and it is tried again',
          );
          continue;
        }
        if (gone === 'decided') {
          // Its old veth is gone; what the key holds now is the DEL's or the ADD's doing.
          deps.log.info(
            fields,
            'a pod outside the pod CIDRs was removed while a DEL or ADD of it ran; that call decided its addresses',
          );
          continue;
        }
        if (gone !== undefined && gone !== 'busy') {
          invalidated.push(gone);
          continue;
        }
        if (gone === 'busy') {
          unremoved++; // outside the pod CIDRs (invalidateOutside): tried again, as above
          decision = { kind: 'skip', key, reason: 'a CNI call for it started meanwhile' };
        } else {
          observation = await observe(deps, key);
          decision = decideRebuild(observation);
        }
      }
      if (decision.kind === 'release') {
        // Re-checked synchronously after the reads yielded: a CNI call may have started, or an ADD
        // may have made a live lease for the key meanwhile; release would drop that lease too.
        if (deps.busy.has(attachmentKey(key)) || deps.ipam.get(key) !== undefined) {
          decision = { kind: 'skip', key, reason: 'a CNI call for it started meanwhile' };
        } else {
          deps.ipam.release(key);
          released++;
          deps.log.info({ ...fields, reason: decision.reason }, HELD_RELEASED);
          continue;
        }
      }
      if (decision.kind === 'restore') {
        const owner = observation?.owner;
        const meta: LeaseMeta = decision.netns === undefined ? {} : { netns: decision.netns };
        // Which namespace that path named when it was confirmed: the sweeps and the veth repair then
        // tell it from another one bind-mounted there later, as for a lease ADD wrote.
        if (decision.netnsId !== undefined) meta.netnsId = decision.netnsId;
        // What the runtime said at ADD, kept in the veth's alias: the network and the pod.
        if (owner?.network !== undefined) meta.network = owner.network;
        // The MTU ADD gave both ends, as a lease from the published config records it (its `mtu`):
        // the host end's, so that setting the pair up again from this lease keeps the pod's MTU.
        const mtu = observation?.link?.mtu;
        if (mtu !== undefined) meta.mtu = mtu;
        let api = 'not consulted (standalone)';
        let podFrom: string | undefined;
        if (owner?.pod?.name !== undefined) {
          Object.assign(meta, {
            podNamespace: owner.pod.namespace,
            podName: owner.pod.name,
            ...(owner.pod.uid === undefined ? {} : { podUid: owner.pod.uid }),
          });
          api = `${owner.pod.namespace}/${owner.pod.name}`;
          podFrom = "the veth's alias";
        } else if (deps.podsOnNode !== undefined) {
          pods ??= withTimeout(deps.podsOnNode(), API_TIMEOUT_MS).catch(
            (err: unknown) => `pods unavailable: ${toCniError(err).message}`,
          );
          const listed = await pods;
          const pod = typeof listed === 'string' ? undefined : podForAddresses(listed, decision.addresses);
          if (pod !== undefined) {
            // The UID its CNI calls carry (a static pod's is not its mirror's), as ADD records it.
            Object.assign(meta, {
              podNamespace: pod.namespace,
              podName: pod.name,
              podUid: pod.kubeletUid ?? pod.uid,
            });
            api = `${pod.namespace}/${pod.name}`;
            podFrom = 'the API';
          } else
            api = typeof listed === 'string' ? listed : 'no single running pod on this node has these IPs';
        }
        // Read before restore, which drops the records.
        const recordless = deps.ipam.quarantinedRecords(key).length === 0;
        // The reads above yield: a DEL may have released the key meanwhile (restore refuses then).
        const lease = deps.ipam.restore(key, decision.addresses, meta);
        rebuilt++;
        deps.log.info(
          {
            ...fields,
            addresses: lease.addresses.map((a) => a.address),
            netns: lease.netns ?? '',
            pod: api,
            ...(podFrom === undefined ? {} : { podFrom }),
            source: 'kernel',
          },
          // Held without any record: its lease file was lost and the start-up sweep found its veth (gc.ts).
          recordless ? 'lease record missing; rebuilt from the kernel' : 'quarantined lease rebuilt',
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
  if (invalidated.length > 0) {
    // The controller's warning for leases outside new pod CIDRs (controller.ts applyRanges): these
    // pods lost their network the same way and need recreating the same way.
    deps.log.warn({ leases: invalidated, held: true }, PODS_TO_RECREATE);
  }
  return { rebuilt, released, failed, invalidated: invalidated.length, unremoved };
}

/**
 * A held attachment with an address not usable in `ranges` whose host veth exists: the veth deleted
 * (its host routes with it), then the addresses released; what the warning says of it. Undefined when
 * the attachment is not such (in range, or without a veth: the rebuild releases it as for any held key
 * without one); 'busy' when a CNI call for it started during the read; 'decided' when one changed the
 * key during the deletion (its veth deleted, its addresses left to that call). Throws when either step
 * fails.
 */
async function invalidateOutside(
  deps: RebuildDeps,
  key: LeaseKey,
  ranges: ReturnType<typeof parseRanges>,
): Promise<Invalidated | 'busy' | 'decided' | undefined> {
  if (!outsideRanges(deps, key, ranges)) return undefined;
  const addresses = deps.ipam.heldAddresses(key).map((a) => a.address);
  const hostVeth = hostVethName(key.containerId, key.ifname);
  const link = await deps.host.getLink(hostVeth);
  if (link === undefined) return undefined;
  // Re-checked after the read yielded, as for a release: a DEL or ADD of the key decides instead.
  if (keyChanged(deps, key)) return 'busy';
  const owner = ownerOfAlias(hostVeth, link.alias);
  await deleteLinkIfNamed(deps.host, link.index, hostVeth);
  // And again after the deletion yielded: a DEL may have released the hold meanwhile and an ADD of the
  // same container id made a lease, which release would free under a running pod. The deletion took
  // only the old link (by index); the ADD's pair is another.
  if (keyChanged(deps, key)) return 'decided';
  deps.ipam.release(key);
  return {
    ...leaseLogFields({
      containerId: key.containerId,
      ifname: key.ifname,
      podNamespace: owner?.pod?.namespace,
      podName: owner?.pod?.name,
    }),
    addresses,
    hostIf: hostVeth,
  };
}

/**
 * A CNI call for the key is in flight, an ADD leased it, or a DEL released its hold: checked again
 * after an await, before a hold is released (here and in held-sweep.ts).
 */
export function keyChanged(deps: Pick<RebuildDeps, 'ipam' | 'busy'>, key: LeaseKey): boolean {
  return deps.busy.has(attachmentKey(key)) || !heldWithoutLease(deps.ipam, key);
}

/** A held attachment has an address not usable in `ranges`. */
function outsideRanges(deps: RebuildDeps, key: LeaseKey, ranges: ReturnType<typeof parseRanges>): boolean {
  // No ranges is ranges not known yet (IPAM starts without any), not every address outside them.
  if (ranges.length === 0) return false;
  return deps.ipam.heldAddresses(key).some((a) => !usableIn(ranges, a.address));
}

async function observe(deps: RebuildDeps, key: LeaseKey): Promise<HeldObservation> {
  const hostVeth = hostVethName(key.containerId, key.ifname);
  const link = await deps.host.getLink(hostVeth);
  if (link === undefined) return { key, hostVeth, link: undefined, routes: [] };
  const routes = (await deps.host.listRoutes({ protocol: TRELLIS_ROUTE_PROTOCOL, ifindex: link.index }))
    .filter((r) => r.ifindex === link.index && r.protocol === TRELLIS_ROUTE_PROTOCOL)
    .map((r) => ({ family: r.family, dst: r.dst }));
  const observation: HeldObservation = { key, hostVeth, link: { index: link.index, mtu: link.mtu }, routes };
  const owner = ownerOfAlias(hostVeth, link.alias);
  if (owner !== undefined) observation.owner = owner;
  const decided = decideRebuild(observation);
  if (decided.kind !== 'restore') return observation;
  const found = await findNetns(deps, key, link.index, decided.addresses);
  if (found === undefined) return observation;
  return { ...observation, netns: found.path, ...(found.id === undefined ? {} : { netnsId: found.id }) };
}

/** The pass that runs the rebuild waits for the API at most this long (it is only a nicety here). */
const API_TIMEOUT_MS = 5_000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function realDir(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return dir;
  }
}

function readDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/**
 * The pod's namespace path: the one the quarantined record shows, else the first named namespace
 * (/var/run/netns, then /run/netns, the places runtimes bind-mount them) whose `ifname` is the peer of
 * the host veth and carries every rebuilt address. Undefined when none is confirmed. With it, which
 * namespace the path named while it was confirmed (netns-identity.ts), when it named the same one
 * before and after: the lease then records it as ADD's does.
 */
async function findNetns(
  deps: RebuildDeps,
  key: LeaseKey,
  hostIndex: number,
  addresses: string[],
): Promise<{ path: string; id: string | undefined } | undefined> {
  const candidates: string[] = [];
  for (const text of deps.ipam.quarantinedRecords(key)) {
    const path = netnsFromRecord(text);
    if (path !== undefined) candidates.push(path);
  }
  const list = deps.listDir ?? readDir;
  const dirs = new Set<string>();
  for (const dir of NETNS_DIRS) {
    const real = realDir(dir); // /var/run is /run on most systems: list it once
    if (dirs.has(real)) continue;
    dirs.add(real);
    for (const name of list(dir)) {
      const path = `${dir}${name}`;
      if (netnsFromRecord(JSON.stringify({ netns: path })) === path) candidates.push(path);
    }
  }
  // Every path that confirms: a peer index is only a number in the host's namespace, so a namespace
  // whose interface peers with another namespace's link of that index (a second node namespace on the
  // machine, as in the test beds) and holds the same addresses can confirm too. Then the one whose
  // interface has the MAC ADD gives this attachment (mac.ts podMac) is it; without one, none is.
  const confirmed: { path: string; id: string | undefined; mac: string }[] = [];
  for (const path of new Set(candidates)) {
    const before = identityOrUnknown(deps, path);
    const mac = await confirms(deps, path, key.ifname, hostIndex, addresses);
    if (mac === undefined) continue;
    const after = identityOrUnknown(deps, path);
    confirmed.push({ path, id: before !== undefined && before === after ? before : undefined, mac });
  }
  const own = podMac(key.containerId, key.ifname).toLowerCase();
  const chosen =
    confirmed.length === 1 ? confirmed[0] : onlyOne(confirmed.filter((c) => c.mac.toLowerCase() === own));
  return chosen === undefined ? undefined : { path: chosen.path, id: chosen.id };
}

/**
 * The namespace's identity, undefined when the agent cannot tell (out of descriptors: as `confirms`
 * takes such a path for no match): the lease is then rebuilt without one, as for a namespace that
 * changed while it was looked at.
 */
function identityOrUnknown(deps: RebuildDeps, path: string): string | undefined {
  try {
    return netnsIdentityOf(deps.netns, path);
  } catch {
    return undefined;
  }
}

/** The one element, or undefined for none or several. */
function onlyOne<T>(list: readonly T[]): T | undefined {
  return list.length === 1 ? list[0] : undefined;
}

/** The MAC of the namespace's interface when it confirms the attachment; undefined when it does not. */
async function confirms(
  deps: RebuildDeps,
  path: string,
  ifname: string,
  hostIndex: number,
  addresses: string[],
): Promise<string | undefined> {
  try {
    if (!deps.netns.isNetns(path)) return undefined;
    const pod = deps.netns.openNetlinkIn(path);
    try {
      const podLink = await pod.getLink(ifname);
      if (podLink === undefined) return undefined;
      // The peer index is the host veth's index in the host namespace, when the kernel reports it.
      if (podLink.peerIndex !== undefined && podLink.peerIndex !== hostIndex) return undefined;
      const there = new Set((await pod.listAddresses(undefined, podLink.index)).map((a) => a.address));
      return addresses.every((a) => there.has(a)) ? podLink.mac : undefined;
    } finally {
      pod.close();
    }
  } catch {
    return undefined; // not a namespace we can read: not confirmed
  }
}
