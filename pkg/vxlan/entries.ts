/**
 * VXLAN decisions -> the neighbour and FDB entries the kernel needs, and the diff against what is listed on
 * our devices. Pure.
 *
 * For every peer reached through VXLAN, on our device of that family:
 *   neighbour  vtepIP -> vtepMac, permanent   (the onlink route's gateway resolves without ARP/NDP)
 *   FDB        vtepMac -> nodeIP              (the frame for that MAC goes to the peer's underlay address)
 * Ownership: every unicast entry on a trellis VXLAN device is ours (learning is off, nothing else writes
 * there); entries on other devices are never looked at. The kernel keeps NOARP neighbour entries for the
 * multicast groups the device joined (IPv6 ff02::...): those are the kernel's, never compared or removed.
 */

import type { FdbEntry, NeighbourEntry } from '../datapath/ports.ts';
import { canonicalIp, parseIp } from '../ip/index.ts';
import type { PeerDecision } from '../routes/types.ts';

export interface OverlayEntries {
  neighbours: NeighbourEntry[];
  fdb: FdbEntry[];
}

export function desiredEntries(decisions: readonly PeerDecision[]): OverlayEntries {
  const neighbours: NeighbourEntry[] = [];
  const fdb: FdbEntry[] = [];
  const seenNeigh = new Set<string>();
  const seenFdb = new Set<string>();
  for (const d of decisions) {
    if (d.path !== 'vxlan') continue;
    const n: NeighbourEntry = {
      family: d.family,
      ifindex: d.ifindex,
      address: d.vtepIP,
      mac: d.vtepMac,
      permanent: true,
    };
    const f: FdbEntry = { ifindex: d.ifindex, mac: d.vtepMac, dst: d.nodeIP };
    if (!seenNeigh.has(neighKey(n))) neighbours.push(n);
    if (!seenFdb.has(fdbKey(f))) fdb.push(f);
    seenNeigh.add(neighKey(n));
    seenFdb.add(fdbKey(f));
  }
  return { neighbours, fdb };
}

const ip = (s: string): string => canonicalIp(s) ?? s;

/** IPv4 224.0.0.0/4 or IPv6 ff00::/8: the kernel's multicast neighbour entries. */
function isMulticast(address: string): boolean {
  const a = parseIp(address);
  if (a === undefined) return false;
  return a.family === 4 ? a.value >> 28n === 0xen : a.value >> 120n === 0xffn;
}

export function neighKey(n: NeighbourEntry): string {
  return `${n.ifindex} ${ip(n.address)}`;
}

export function fdbKey(f: FdbEntry): string {
  return `${f.ifindex} ${f.mac.toLowerCase()} ${ip(f.dst)}`;
}

export interface EntryDiff<T> {
  /** Missing or different entries; written with replace (neighbours and FDB alike), idempotent. */
  write: T[];
  /**
   * Listed entries a write re-points rather than adds beside: an FDB MAC at an old underlay address
   * (the node's IP changed; a unicast MAC has one remote). Nothing to remove; a neighbour has none.
   */
  replaced: T[];
  /** Entries no decision wants: removed only after the routes, and only once synced. */
  remove: T[];
  unchanged: number;
}

/** `listed` may hold anything; only entries on `ours` (our device indexes) are compared and removed. */
export function diffNeighbours(
  desired: readonly NeighbourEntry[],
  listed: readonly NeighbourEntry[],
  ours: ReadonlySet<number>,
): EntryDiff<NeighbourEntry> {
  const out: EntryDiff<NeighbourEntry> = { write: [], replaced: [], remove: [], unchanged: 0 };
  const have = new Map<string, NeighbourEntry>();
  for (const n of listed) if (ours.has(n.ifindex) && !isMulticast(n.address)) have.set(neighKey(n), n);
  const wanted = new Set<string>();
  for (const d of desired) {
    const k = neighKey(d);
    wanted.add(k);
    const e = have.get(k);
    if (e !== undefined && e.mac.toLowerCase() === d.mac.toLowerCase() && e.permanent === true)
      out.unchanged++;
    else out.write.push(d);
  }
  for (const [k, e] of have) if (!wanted.has(k)) out.remove.push(e);
  return out;
}

export function diffFdb(
  desired: readonly FdbEntry[],
  listed: readonly FdbEntry[],
  ours: ReadonlySet<number>,
): EntryDiff<FdbEntry> {
  const out: EntryDiff<FdbEntry> = { write: [], replaced: [], remove: [], unchanged: 0 };
  const have = new Map<string, FdbEntry>();
  for (const f of listed) if (ours.has(f.ifindex)) have.set(fdbKey(f), f);
  const wanted = new Set<string>();
  const wantedMacs = new Set<string>();
  for (const d of desired) {
    const k = fdbKey(d);
    wanted.add(k);
    wantedMacs.add(`${d.ifindex} ${d.mac.toLowerCase()}`);
    if (have.has(k)) out.unchanged++;
    else out.write.push(d);
  }
  for (const [k, e] of have) {
    if (wanted.has(k)) continue;
    // Same MAC, other address: the entry that keeps the desired one from being written.
    if (wantedMacs.has(`${e.ifindex} ${e.mac.toLowerCase()}`)) out.replaced.push(e);
    else out.remove.push(e);
  }
  return out;
}
