import type { DeletedEntry } from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import type { PeerState } from './peer-state.ts';

/**
 * Whether a VXLAN neighbour or FDB entry is one the plan keeps in the kernel: a VXLAN peer's VTEP
 * neighbour (its VTEP address on that device) or FDB entry (its VTEP MAC to its node address).
 * Entries the kernel learned itself (the neighbour of a peer's IPv6 link-local, from its NDP) are
 * not: their ageing out needs no pass. A linear walk: deletions are rare.
 */
export function keepsOverlayEntry(state: PeerState, entry: DeletedEntry): boolean {
  const fdb = 'dst' in entry;
  const address = canonicalIp(fdb ? entry.dst : entry.address);
  const mac = fdb ? entry.mac.toLowerCase() : '';
  for (const record of state.peers.values()) {
    for (const d of record.decisions) {
      if (d.path !== 'vxlan' || d.ifindex !== entry.ifindex) continue;
      if (
        fdb
          ? d.vtepMac.toLowerCase() === mac && canonicalIp(d.nodeIP) === address
          : canonicalIp(d.vtepIP) === address
      )
        return true;
    }
  }
  return false;
}
