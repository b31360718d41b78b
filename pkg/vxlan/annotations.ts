/** The VTEP annotations on Node objects: reading peers' and computing the patch for our own. Pure. */

import type { Family } from '../datapath/ports.ts';
import { VTEP_MAC_ANNOTATIONS } from './constants.ts';
import { parseVtepMac } from './mac.ts';

/**
 * The VTEP MACs a node publishes, canonical (lower case). A malformed value is passed on as written: the
 * planner counts it as none (pkg/routes/desired.ts) but says the node published a bad one, where
 * dropping it here made the log say the node had published nothing.
 */
export function vtepMacsFromAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): Partial<Record<Family, string>> {
  // Each family spelt out, no loop: every Node's view passes here at a cold pass, and a for…of over a
  // literal is an array and an iterator per call without V8's optimizing tiers (scripts/build.ts).
  const out: Partial<Record<Family, string>> = {};
  const raw4 = annotations?.[VTEP_MAC_ANNOTATIONS[4]];
  if (raw4 !== undefined) out[4] = parseVtepMac(raw4) ?? raw4;
  const raw6 = annotations?.[VTEP_MAC_ANNOTATIONS[6]];
  if (raw6 !== undefined) out[6] = parseVtepMac(raw6) ?? raw6;
  return out;
}

/** Our VTEP annotations as they should read (annotationPatch): a family without a device has none. */
export function vtepAnnotations(wanted: Partial<Record<Family, string>>): Record<string, string | undefined> {
  return { [VTEP_MAC_ANNOTATIONS[4]]: wanted[4], [VTEP_MAC_ANNOTATIONS[6]]: wanted[6] };
}
