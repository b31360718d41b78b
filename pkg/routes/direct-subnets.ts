/**
 * The subnets a node in auto mode routes peers directly on, published as Node annotations so each end of
 * a pair can see the other's rule and both take the same path. Pure.
 *
 * A node alone cannot tell: with 10.0.0.5/16 on one node and 10.0.1.7/24 on the other, on one L2, the
 * first finds its peer on its own subnet and routes directly, the second does not and tunnels, and strict
 * reverse-path filtering drops the pods' packets on both. Published, the first sees that the /24 does not
 * hold its address and tunnels too.
 */

import type { Family } from '../datapath/ports.ts';
import { type Cidr, cidrContains, compareCidr, formatCidr, type IpAddress, parseCidr } from '../ip/index.ts';

/**
 * Per underlay family. Absent: the node routes directly to any peer on a subnet connected to it (host-gw;
 * no VXLAN device of the family, in vxlan mode or in auto with its InternalIP on no connected subnet) or
 * its agent predates the annotation; peers keep their own rule. Empty: it routes directly to no peer that
 * has a tunnel (vxlan mode, or auto with its InternalIP on no connected subnet). See ownDirectSubnets.
 */
export const DIRECT_SUBNET_ANNOTATIONS: Readonly<Record<Family, string>> = Object.freeze({
  4: 'trellis.dev/direct-subnets-v4',
  6: 'trellis.dev/direct-subnets-v6',
});

/** The annotations' text per family, as published (parsed where a plan needs it: parseDirectSubnets). */
export function directSubnetsFromAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): Partial<Record<Family, string>> {
  // Each family spelt out, as vtepMacsFromAnnotations (pkg/vxlan/annotations.ts) and for its reason.
  const out: Partial<Record<Family, string>> = {};
  const text4 = annotations?.[DIRECT_SUBNET_ANNOTATIONS[4]];
  if (text4 !== undefined) out[4] = text4;
  const text6 = annotations?.[DIRECT_SUBNET_ANNOTATIONS[6]];
  if (text6 !== undefined) out[6] = text6;
  return out;
}

/** Our direct-subnet annotations as they should read (annotationPatch): absent for a family without. */
export function directSubnetAnnotations(
  wanted: Partial<Record<Family, string>>,
): Record<string, string | undefined> {
  return { [DIRECT_SUBNET_ANNOTATIONS[4]]: wanted[4], [DIRECT_SUBNET_ANNOTATIONS[6]]: wanted[6] };
}

/** The annotation's text: comma-separated networks in CIDR order, "" for none. */
export function formatDirectSubnets(subnets: Iterable<Cidr>): string {
  return [...subnets]
    .sort(compareCidr)
    .map(formatCidr)
    .filter((t, i, all) => all.indexOf(t) === i)
    .join(',');
}

/**
 * The published subnets of one family, and the entries that are not networks of that family (as
 * written, for the report). The valid entries stand on their own: "10.0.0.0/24,bogus" still says the
 * node routes directly on 10.0.0.0/24, and only there.
 */
export function parseDirectSubnets(text: string, family: Family): { subnets: Cidr[]; invalid: string[] } {
  const subnets: Cidr[] = [];
  const invalid: string[] = [];
  if (text === '') return { subnets, invalid };
  for (const part of text.split(',')) {
    const c = parseCidr(part.trim());
    if (c === undefined || c.family !== family) invalid.push(part);
    else subnets.push(c);
  }
  return { subnets, invalid };
}

/** True when one of the published subnets holds one of the addresses. */
export function subnetsHoldAny(subnets: readonly Cidr[], ips: readonly IpAddress[]): boolean {
  return subnets.some((s) => ips.some((ip) => ip.family === s.family && cidrContains(s, ip)));
}
