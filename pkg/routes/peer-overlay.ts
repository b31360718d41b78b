/**
 * The neighbour and FDB entries one per-node step writes and removes for a peer reached through VXLAN
 * (a full pass derives all of them in pkg/vxlan entries.ts). Pure.
 */

import type { FdbEntry, NeighbourEntry } from '../datapath/ports.ts';
import type { PeerState } from './peer-state.ts';
import type { PeerDecision } from './types.ts';

type VxlanDecision = Extract<PeerDecision, { path: 'vxlan' }>;

/** Neighbour and FDB entries a peer's new VXLAN decisions need and its old ones did not have. */
export function overlayWrites(
  old: readonly PeerDecision[],
  next: readonly PeerDecision[],
): { neighbours: NeighbourEntry[]; fdb: FdbEntry[] } {
  const neighbours: NeighbourEntry[] = [];
  const fdb: FdbEntry[] = [];
  for (const d of next) {
    if (d.path !== 'vxlan') continue;
    const prev = old.find((o) => o.family === d.family && o.path === 'vxlan');
    const same =
      prev !== undefined &&
      prev.path === 'vxlan' &&
      prev.ifindex === d.ifindex &&
      prev.vtepIP === d.vtepIP &&
      prev.vtepMac.toLowerCase() === d.vtepMac.toLowerCase() &&
      prev.nodeIP === d.nodeIP;
    if (same) continue;
    neighbours.push(peerNeighbour(d));
    // Replaced, not appended: a MAC that moved to a new address keeps its one entry, re-pointed.
    fdb.push(peerFdb(d));
  }
  return { neighbours, fdb };
}

/**
 * The neighbour and FDB entries of the peer's old VXLAN decisions that neither its new decisions nor any
 * other peer's use (a peer deleted, moved to a direct route, or with a new MAC or VTEP address). Removing
 * them at once rather than at the next full pass keeps a deleted node from being reachable through the
 * tunnel by anyone holding its old address. The FDB entry of a MAC moved to a new address is re-pointed
 * by the write (replaceFdb), not removed.
 */
export function overlayStale(
  state: PeerState,
  name: string,
  old: readonly PeerDecision[],
  next: readonly PeerDecision[],
): { staleNeighbours: NeighbourEntry[]; staleFdb: FdbEntry[] } {
  const staleNeighbours: NeighbourEntry[] = [];
  const staleFdb: FdbEntry[] = [];
  const olds = old.filter((d) => d.path === 'vxlan');
  if (olds.length === 0) return { staleNeighbours, staleFdb };
  const neighKey = (ifindex: number, ip: string): string => `${ifindex} ${ip}`;
  const macKey = (ifindex: number, mac: string): string => `${ifindex} ${mac.toLowerCase()}`;
  const usedNeigh = new Set<string>();
  const usedMac = new Set<string>();
  const use = (d: PeerDecision): void => {
    if (d.path !== 'vxlan') return;
    usedNeigh.add(neighKey(d.ifindex, d.vtepIP));
    usedMac.add(macKey(d.ifindex, d.vtepMac));
  };
  for (const d of next) use(d);
  for (const [other, rec] of state.peers) if (other !== name) for (const d of rec.decisions) use(d);
  for (const d of olds) {
    if (d.path !== 'vxlan') continue;
    if (!usedNeigh.has(neighKey(d.ifindex, d.vtepIP))) staleNeighbours.push(peerNeighbour(d));
    if (!usedMac.has(macKey(d.ifindex, d.vtepMac))) staleFdb.push(peerFdb(d));
  }
  return { staleNeighbours, staleFdb };
}

/** The permanent neighbour vtepIP -> vtepMac the peer's onlink routes resolve their gateway with. */
function peerNeighbour(d: VxlanDecision): NeighbourEntry {
  return { family: d.family, ifindex: d.ifindex, address: d.vtepIP, mac: d.vtepMac, permanent: true };
}

/** The FDB entry vtepMac -> nodeIP that sends the peer's frames to its underlay address. */
function peerFdb(d: VxlanDecision): FdbEntry {
  return { ifindex: d.ifindex, mac: d.vtepMac, dst: d.nodeIP };
}
