import type { NetnsPort } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { familyOfText } from '../ip/index.ts';
import type { Logger } from '../observe/logger.ts';

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

type SysctlPort = Pick<NetnsPort, 'readSysctl' | 'writeSysctl'>;

/** Forwarding on for the families of these pod CIDRs (only those); throws SysctlError. */
export function enableForwarding(netns: SysctlPort, podCIDRs: readonly string[]): void {
  for (const key of forwardingSysctls(podCIDRs)) netns.writeSysctl(key, '1');
}

/**
 * After every pass: forwarding turned off since (a `sysctl --system`, a network manager) is turned
 * back on, and said so. Read first: a pass must not write /proc/sys for nothing.
 */
export function keepForwardingOn(netns: SysctlPort, podCIDRs: readonly string[], log: Logger): void {
  for (const key of forwardingSysctls(podCIDRs)) {
    try {
      const value = netns.readSysctl(key);
      if (value === '1') continue;
      netns.writeSysctl(key, '1');
      log.warn({ sysctl: key, was: value }, 'IP forwarding was off (something reset it); turned it back on');
    } catch (err) {
      log.warn({ sysctl: key, error: errorText(err) }, 'IP forwarding could not be checked or turned on');
    }
  }
}
