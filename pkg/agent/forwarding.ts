import { familyOfText } from '../ip/index.ts';

/** Each family's forwarding switch; the routed datapath turns it on (stated in the docs). */
const FORWARDING_SYSCTLS: Readonly<Record<4 | 6, string>> = Object.freeze({
  4: 'net/ipv4/ip_forward',
  6: 'net/ipv6/conf/all/forwarding',
});

/**
 * The forwarding sysctls a node with these pod CIDRs needs: those of its pod CIDRs' families, and no
 * other. A single-stack node keeps the other family as it was: IPv6 forwarding on makes a host ignore
 * router advertisements (accept_ra=1), so an IPv4-only node's own SLAAC addresses and IPv6 default
 * route would lapse; and a kernel booted without IPv6 has no such sysctl to write.
 */
export function forwardingSysctls(podCIDRs: readonly string[]): string[] {
  const families = new Set(podCIDRs.map(familyOfText));
  return ([4, 6] as const).filter((f) => families.has(f)).map((f) => FORWARDING_SYSCTLS[f]);
}
