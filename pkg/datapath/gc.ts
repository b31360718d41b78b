import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import type { Lease } from '../ipam/index.ts';
import { deleteLinkIfNamedInBackground } from './delete-link.ts';
import { attachmentKey, attachmentOfKey, hostVethName, isHostVethName } from './names.ts';
import { judgeLeaseNetns } from './netns-identity.ts';
import { TRELLIS_ROUTE_PROTOCOL } from './ports.ts';
import { isPreparedName } from './prepared-pairs.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';
import { ownerOfAlias, type VethOwner } from './veth-alias.ts';

export interface GcOutcome {
  releasedLeases: Lease[];
  /** Attachments whose quarantined lease record still held addresses, released with them. */
  releasedHeld?: AttachmentKey[];
  removedLinks: string[];
  /**
   * The start-up sweep's removed veths that routed pod addresses (a finished ADD, not half-done work):
   * their lease records were lost, and their pods are cut off. For an error line that names them.
   */
  removedRouted?: { name: string; addresses: string[]; why?: string }[];
  /**
   * The start-up sweep's routed veths without a lease record whose alias named their attachment
   * (veth-alias.ts): kept, their addresses held in IPAM until the lease is rebuilt from the kernel.
   */
  heldFromKernel?: { name: string; addresses: string[]; owner: VethOwner }[];
  /** Leases without their veth whose namespace the agent could not judge (EMFILE): kept. */
  unjudged?: { lease: Lease; error: string }[];
  /** The start-up sweep's leases whose pods are gone that the store could not release (EROFS): kept. */
  unreleased?: { lease: Lease; error: string }[];
}

/**
 * Which network a GC is for. `valid-attachments` lists the valid attachments of that one network
 * (libcni builds it per config list), so only its attachments may go: a pod with interfaces on two
 * trellis networks (Multus) keeps the other one. Attachments recorded without a network (leases from
 * before networks were recorded, records quarantined on disk) count as `unrecorded`'s: the config
 * list the agent publishes, which every one of them was added through unless an operator wrote
 * another.
 */
export interface GcScope {
  network: string;
  unrecorded: string;
}

/**
 * GC (CNI 1.1): everything trellis holds for the scope's network that is not a valid attachment goes:
 * leases and host veths. `busy` names attachments with a call in flight, which a concurrent GC must not
 * touch. Without a scope, every attachment counts (the agent's own sweeps).
 */
export async function gcAttachments(
  deps: DatapathDeps,
  valid: AttachmentKey[],
  busy: ReadonlySet<string> = new Set(),
  scope?: GcScope,
): Promise<GcOutcome> {
  const validKeys = new Set(valid.map(attachmentKey));
  const inScope = (network: string | undefined): boolean =>
    scope === undefined || (network ?? scope.unrecorded) === scope.network;
  const releasedLeases: Lease[] = [];
  // CNI 1.1: GC cleans up as much as it can and reports what it could not, so one lease the store
  // fails to release does not keep the others (or the veths) from going.
  const failures: string[] = [];
  for (const lease of deps.ipam.list()) {
    const k = attachmentKey(lease);
    if (validKeys.has(k) || busy.has(k) || !inScope(lease.network)) continue;
    try {
      if (deps.ipam.release(lease)) releasedLeases.push(lease);
    } catch (err) {
      failures.push(`${lease.containerId}/${lease.ifname}: ${toCniError(err).message}`);
    }
  }
  // An attachment whose lease record was quarantined (torn on disk) still holds its addresses; the
  // runtime says it is gone (its DEL missed): they go with its veth, as its DEL would take them.
  const releasedHeld: AttachmentKey[] = [];
  const keptHeld: AttachmentKey[] = [];
  const held = deps.ipam.heldKeys();
  // Its record unreadable, such an attachment's network is read off its host veth's alias (set at
  // ADD): GC of one network must not take another's (CNI 1.1: the valid list is that network's).
  const networkOfVeth =
    scope === undefined || held.length === 0 ? new Map<string, string>() : await vethNetworks(deps);
  for (const key of held) {
    const k = attachmentKey(key);
    if (validKeys.has(k) || busy.has(k)) continue;
    // The dump was awaited: an ADD of this attachment may have finished meanwhile (its held lease
    // restored, or a DEL and a new ADD), and release() would take the lease it just answered with.
    if (!heldWithoutLease(deps.ipam, key)) continue;
    if (!inScope(networkOfVeth.get(hostVethName(key.containerId, key.ifname)))) {
      keptHeld.push(key); // another network's: its veth stays with it
      continue;
    }
    try {
      if (deps.ipam.release(key)) releasedHeld.push({ containerId: key.containerId, ifname: key.ifname });
    } catch (err) {
      failures.push(`${key.containerId}/${key.ifname} (held): ${toCniError(err).message}`);
    }
  }
  const netnsOf = new Map(releasedLeases.map((l) => [hostVethName(l.containerId, l.ifname), l.netns]));
  const removedLinks = await removeHostVethsExcept(
    deps,
    () => {
      const keep = leasedVethNames(deps);
      for (const k of [...valid, ...keptHeld]) keep.add(hostVethName(k.containerId, k.ifname));
      for (const k of busy) {
        const { containerId, ifname } = attachmentOfKey(k);
        keep.add(hostVethName(containerId, ifname));
      }
      return keep;
    },
    (name) => netnsOf.get(name),
  );
  if (failures.length > 0) {
    throw new CniError(
      CniCode.IPAM_STORE_FAILED,
      `GC released ${releasedLeases.length + releasedHeld.length} leases and scheduled ${removedLinks.length} veths for deletion; ${failures.length} leases could not be released`,
      failures.join('\n'),
    );
  }
  return { releasedLeases, releasedHeld, removedLinks };
}

/**
 * The attachment holds addresses and has no lease: still what a sweep found, after an await in which
 * an ADD may have given it a lease, or a DEL released its hold.
 */
export function heldWithoutLease(
  ipam: Pick<DatapathDeps['ipam'], 'get' | 'heldAddresses'>,
  key: AttachmentKey,
): boolean {
  return ipam.get(key) === undefined && ipam.heldAddresses(key).length > 0;
}

/** The network each trellis host veth's alias names (veths without one are left out). */
async function vethNetworks(deps: Pick<DatapathDeps, 'host'>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const l of await deps.host.listLinks()) {
    const network = ownerOfAlias(l.name, l.alias)?.network;
    if (network !== undefined) out.set(l.name, network);
  }
  return out;
}

/** The host veth names of every lease IPAM holds now. */
function leasedVethNames(deps: Pick<DatapathDeps, 'ipam'>): Set<string> {
  return new Set(deps.ipam.list().map((l) => hostVethName(l.containerId, l.ifname)));
}

/**
 * Deletes every trellis host veth the kernel lists whose name `keep` does not return (scheduled off
 * the critical path). `keep` is asked once the dump is in, not before: an ADD can lease an address and
 * create its veth while the dump is read, and a set made earlier would not name that veth.
 */
async function removeHostVethsExcept(
  deps: Pick<DatapathDeps, 'host' | 'deleter'>,
  keep: () => ReadonlySet<string>,
  podNetnsOf?: (name: string) => string | undefined,
): Promise<string[]> {
  const links = await deps.host.listLinks();
  const kept = keep();
  return scheduleDeletions(
    deps,
    links.filter((l) => !kept.has(l.name)),
    podNetnsOf,
  );
}

/**
 * Deletes exactly these trellis host veths, where they exist (scheduled off the critical path), but
 * none `spare` names once the links are listed: an ADD meanwhile may have made one anew.
 */
export async function removeHostVeths(
  deps: Pick<DatapathDeps, 'host' | 'deleter'>,
  names: ReadonlySet<string>,
  spare: (name: string) => boolean = () => false,
  podNetnsOf?: (name: string) => string | undefined,
): Promise<string[]> {
  const links = await deps.host.listLinks();
  return scheduleDeletions(
    deps,
    links.filter((l) => names.has(l.name) && !spare(l.name)),
    podNetnsOf,
  );
}

/**
 * `podNetnsOf`: where a pair's pod end is, when its lease said: an ADD into that namespace (a runtime
 * reusing it for a new container) waits for the deletion, as after a DEL, and does not find the old
 * pod end's interface name taken.
 */
function scheduleDeletions(
  deps: Pick<DatapathDeps, 'host' | 'deleter'>,
  links: readonly { name: string; index: number }[],
  podNetnsOf: (name: string) => string | undefined = () => undefined,
  isOurs: (name: string) => boolean = isHostVethName,
): string[] {
  const removed: string[] = [];
  for (const link of links) {
    if (!isOurs(link.name) || deps.deleter.isPending(link.name)) continue;
    removed.push(link.name);
    // By index, checked again when the deletion runs: a veth made later under the same name (a new
    // ADD for the same container and ifname waits for this deletion first) is another link.
    deps.deleter.schedule(
      link.name,
      () => deleteLinkIfNamedInBackground(deps.host, link.index, link.name),
      podNetnsOf(link.name),
    );
  }
  return removed;
}

/**
 * Start-up sweep, without a runtime's list of valid attachments: a lease whose namespace AND host veth
 * are both gone belongs to a pod that no longer exists (the kernel destroys the pair with the
 * namespace), and a trellis veth without a lease is half-done work. Requiring both signals keeps a
 * mount-propagation problem (netns path invisible to the agent) from ever releasing a live pod's IP.
 * `held` names attachments whose lease record was quarantined (corrupt on disk) while IPAM still
 * holds their addresses: their pods may be running, so their veths stay until a DEL. A pair an
 * earlier run prepared for an ADD that never came (prepared-pairs.ts) goes too.
 *
 * A veth that routes pod addresses had a lease (ADD leases first), so without one its record was
 * lost: when its alias names its attachment, IPAM holds those addresses for it (Ipam.hold) and it
 * stays, its lease rebuilt from the kernel later (lease-rebuild.ts); otherwise (made before veths had
 * aliases, or an address another lease holds) it goes, as its addresses may be handed out again.
 */
export async function sweepOrphans(
  deps: DatapathDeps,
  held: readonly AttachmentKey[] = [],
): Promise<GcOutcome> {
  const listed = await deps.host.listLinks();
  const links = new Set(listed.map((l) => l.name));
  const releasedLeases: Lease[] = [];
  const unjudged: NonNullable<GcOutcome['unjudged']> = [];
  const unreleased: NonNullable<GcOutcome['unreleased']> = [];
  for (const lease of deps.ipam.list()) {
    if (links.has(hostVethName(lease.containerId, lease.ifname))) continue;
    // Gone also when its path names another namespace now (a reused PID, a reboot): netns-identity.ts.
    const verdict = judgeLeaseNetns(lease, deps.netns);
    if (!('live' in verdict)) {
      // The agent cannot tell (out of descriptors or memory): kept, which is always safe here; the
      // lease collector and the next start judge it again.
      unjudged.push({ lease, error: verdict.unjudged });
      continue;
    }
    if (verdict.live) continue;
    try {
      if (deps.ipam.release(lease)) releasedLeases.push(lease);
    } catch (err) {
      // A store that takes no writes (a state directory remounted read-only): the lease stays, as
      // the agent must still start, route and answer (ADD and DEL then fail with the store's error).
      unreleased.push({ lease, error: toCniError(err).message });
    }
  }
  const heldFromKernel: NonNullable<GcOutcome['heldFromKernel']> = [];
  const refused = new Map<string, string>();
  const keep = (): Set<string> => {
    const names = leasedVethNames(deps);
    for (const k of held) names.add(hostVethName(k.containerId, k.ifname));
    for (const h of heldFromKernel) names.add(h.name);
    return names;
  };
  // Looked at before any is deleted: a deleted veth's routes go with it.
  const kept = keep();
  const routed = await routedBy(
    deps.host,
    listed,
    listed.filter((l) => isHostVethName(l.name) && !kept.has(l.name)).map((l) => l.name),
  );
  const aliases = new Map(listed.map((l) => [l.name, l.alias]));
  for (const r of routed) {
    const owner = ownerOfAlias(r.name, aliases.get(r.name));
    if (owner === undefined) continue;
    try {
      deps.ipam.hold(owner, r.addresses);
      heldFromKernel.push({ ...r, owner });
    } catch (err) {
      refused.set(r.name, toCniError(err).message);
    }
  }
  const removedLinks = await removeHostVethsExcept(deps, keep);
  const removedRouted = routed
    .filter((r) => removedLinks.includes(r.name))
    .map((r) => (refused.has(r.name) ? { ...r, why: refused.get(r.name) } : r));
  removedLinks.push(...scheduleDeletions(deps, listed, undefined, isPreparedName));
  return {
    releasedLeases,
    removedLinks,
    ...(removedRouted.length === 0 ? {} : { removedRouted }),
    ...(heldFromKernel.length === 0 ? {} : { heldFromKernel }),
    ...(unjudged.length === 0 ? {} : { unjudged }),
    ...(unreleased.length === 0 ? {} : { unreleased }),
  };
}

/**
 * Of the veths `names`, those a pod host route of ours (a /32 or /128, scope link) goes through, with
 * its addresses: ADD got that far, so the veth was a running pod's whose lease record is gone (a
 * state directory lost or replaced), not an ADD that crashed half-way (its lease is written first).
 */
async function routedBy(
  host: DatapathDeps['host'],
  links: readonly { name: string; index: number }[],
  names: readonly string[],
): Promise<{ name: string; addresses: string[] }[]> {
  if (names.length === 0) return [];
  const wanted = new Set(names);
  const byIndex = new Map(links.filter((l) => wanted.has(l.name)).map((l) => [l.index, l.name]));
  const routes = (
    await Promise.all(
      ([4, 6] as const).map((family) => host.listRoutes({ family, protocol: TRELLIS_ROUTE_PROTOCOL })),
    )
  ).flat();
  const out = new Map<string, string[]>();
  for (const r of routes) {
    const name = r.ifindex === undefined ? undefined : byIndex.get(r.ifindex);
    if (name === undefined || r.gateway !== undefined || r.type === 'blackhole') continue;
    out.set(name, [...(out.get(name) ?? []), r.dst.slice(0, r.dst.indexOf('/'))]);
  }
  return [...out].map(([name, addresses]) => ({ name, addresses }));
}
