/** The VTEP annotations on Node objects: reading peers' and computing the patch for our own. Pure. */

import type { Family } from '../datapath/ports.ts';
import { VTEP_MAC_ANNOTATIONS } from './constants.ts';
import { parseVtepMac } from './mac.ts';

/** The usable VTEP MACs a node publishes; a malformed value counts as absent. */
export function vtepMacsFromAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): Partial<Record<Family, string>> {
  const out: Partial<Record<Family, string>> = {};
  for (const family of [4, 6] as Family[]) {
    const raw = annotations?.[VTEP_MAC_ANNOTATIONS[family]];
    const mac = raw === undefined ? undefined : parseVtepMac(raw);
    if (mac !== undefined) out[family] = mac;
  }
  return out;
}

/** Our VTEP annotations as they should read (annotationPatch): a family without a device has none. */
export function vtepAnnotations(wanted: Partial<Record<Family, string>>): Record<string, string | undefined> {
  return { [VTEP_MAC_ANNOTATIONS[4]]: wanted[4], [VTEP_MAC_ANNOTATIONS[6]]: wanted[6] };
}
