/**
 * The VTEP MAC of a node's VXLAN device: derived from the node name and the family, so an agent restart, a
 * recreated device or a reboot keeps it, and peers' neighbour and FDB entries stay valid. Locally
 * administered (bit 1 of the first octet set) and unicast (bit 0 clear), so it never collides with a vendor
 * MAC and is never taken for a multicast group.
 */

import { createHash } from 'node:crypto';
import type { Family } from '../datapath/ports.ts';
import { localUnicastMac } from '../ip/index.ts';

export function vtepMac(nodeName: string, family: Family): string {
  return localUnicastMac(createHash('sha256').update(`trellis vtep\0${family}\0${nodeName}`).digest());
}

/**
 * A MAC as lower-case colon-separated hex, or undefined when the text is not a usable VTEP MAC (malformed,
 * all zeros, or multicast/broadcast).
 */
export function parseVtepMac(text: string): string | undefined {
  if (typeof text !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) return undefined;
  const mac = text.toLowerCase();
  if (mac === '00:00:00:00:00:00') return undefined;
  if ((Number.parseInt(mac.slice(0, 2), 16) & 0x01) !== 0) return undefined;
  return mac;
}
