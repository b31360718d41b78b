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

/**
 * The merge patch that makes our Node's VTEP annotations say `wanted` (a family without a device loses its
 * annotation: null removes it), or undefined when they already do.
 */
export function vtepAnnotationPatch(
  current: Readonly<Record<string, string>> | undefined,
  wanted: Partial<Record<Family, string>>,
): Record<string, string | null> | undefined {
  const patch: Record<string, string | null> = {};
  for (const family of [4, 6] as Family[]) {
    const key = VTEP_MAC_ANNOTATIONS[family];
    const want = wanted[family];
    const have = current?.[key];
    if (want === undefined) {
      if (have !== undefined) patch[key] = null;
    } else if (have !== want) {
      patch[key] = want;
    }
  }
  return Object.keys(patch).length === 0 ? undefined : patch;
}
