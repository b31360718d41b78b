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

/** RTF_ADDRCONF: a route the kernel learned from a router advertisement (a default or a prefix route). */
const RTF_ADDRCONF = 0x40000;

/**
 * The interfaces the kernel has routes from router advertisements on, read from /proc/net/ipv6_route
 * (one route per line: destination, its length, source, its length, next hop, metric, refcount, use,
 * flags, device; numbers in hex).
 */
export function raLearningInterfaces(ipv6RouteTable: string): string[] {
  const devices = new Set<string>();
  for (const line of ipv6RouteTable.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const flags = Number.parseInt(f[8]!, 16);
    if (Number.isInteger(flags) && (flags & RTF_ADDRCONF) !== 0 && f[9] !== 'lo') devices.add(f[9]!);
  }
  return [...devices].sort();
}

/** What IPv6 forwarding needs to leave a node's own IPv6 configuration alone. */
export interface RouterAdvertisementGuard {
  /** /proc/net/ipv6_route of the node's namespace. */
  ipv6RouteTable(): string;
  log: Logger;
}

/**
 * Before IPv6 forwarding goes on: every interface the node learns IPv6 routes on from router
 * advertisements, with accept_ra=1, gets accept_ra=2. With forwarding on, the kernel ignores RAs on
 * an interface at 1, and the moment forwarding is turned on it deletes the default routes it learned
 * from them (rt6_purge_dflt_routers): a node whose IPv6 default route comes from RAs (SLAAC; EC2)
 * would lose it at once, and its SLAAC addresses when they expire. At 2 it keeps taking them, as a
 * host does. Interfaces whose RAs a network manager handles itself (accept_ra=0) are left alone.
 */
export function keepRouterAdvertisements(netns: SysctlPort, guard: RouterAdvertisementGuard): void {
  let devices: string[];
  try {
    devices = raLearningInterfaces(guard.ipv6RouteTable());
  } catch (err) {
    guard.log.warn(
      { error: errorText(err) },
      'cannot read the IPv6 routes learned from router advertisements',
    );
    return;
  }
  for (const dev of devices) {
    const key = `net/ipv6/conf/${dev}/accept_ra`;
    try {
      if (netns.readSysctl(key) !== '1') continue;
      netns.writeSysctl(key, '2');
      guard.log.info(
        { link: dev, sysctl: key, was: '1' },
        'this node takes IPv6 routes from router advertisements here: accept_ra=2 keeps them with forwarding on',
      );
    } catch (err) {
      guard.log.warn({ link: dev, sysctl: key, error: errorText(err) }, 'accept_ra could not be set to 2');
    }
  }
}

/**
 * Forwarding on for the families of these pod CIDRs (only those); throws SysctlError. With `ra`, IPv6
 * forwarding first makes sure the node keeps its router advertisements (keepRouterAdvertisements).
 */
export function enableForwarding(
  netns: SysctlPort,
  podCIDRs: readonly string[],
  ra?: RouterAdvertisementGuard,
): void {
  for (const key of forwardingSysctls(podCIDRs)) turnOn(netns, key, ra);
}

function turnOn(netns: SysctlPort, key: string, ra: RouterAdvertisementGuard | undefined): void {
  if (key === FORWARDING_SYSCTLS[6] && ra !== undefined) keepRouterAdvertisements(netns, ra);
  // Read first: the kernel acts on every write of all/forwarding, not only on a change. Writing the 1
  // it holds sets every interface's own IPv6 forwarding to 1 again (an uplink its operator keeps a host
  // at 0 would stop taking router advertisements) at each start and pod CIDR change.
  if (alreadyOn(netns, key)) return;
  netns.writeSysctl(key, '1');
}

/** Whether `key` reads 1; false when it cannot be read (the write then says why). */
function alreadyOn(netns: SysctlPort, key: string): boolean {
  try {
    return netns.readSysctl(key) === '1';
  } catch {
    return false;
  }
}

/**
 * After every pass: forwarding turned off since (a `sysctl --system`, a network manager) is turned
 * back on, and said so. Read first: a pass must not write /proc/sys for nothing.
 */
export function keepForwardingOn(
  netns: SysctlPort,
  podCIDRs: readonly string[],
  log: Logger,
  ra?: RouterAdvertisementGuard,
  /** False: a failure is returned, not logged (a caller checking every few seconds rate-limits it). */
  logFailures = true,
): { sysctl: string; error: unknown } | undefined {
  let failed: { sysctl: string; error: unknown } | undefined;
  for (const key of forwardingSysctls(podCIDRs)) {
    try {
      const value = netns.readSysctl(key);
      if (value === '1') continue;
      turnOn(netns, key, ra);
      log.warn({ sysctl: key, was: value }, 'IP forwarding was off (something reset it); turned it back on');
    } catch (err) {
      failed ??= { sysctl: key, error: err };
      if (logFailures)
        log.warn({ sysctl: key, error: errorText(err) }, 'IP forwarding could not be checked or turned on');
    }
  }
  return failed;
}
