import { CniCode, CniError } from '../cni/errors.ts';
import type { CniResult } from '../cni/result.ts';
import { canonicalIp } from '../ip/address.ts';
import { canonicalCidr, parseCidr } from '../ip/cidr.ts';
import { defaultDst, gatewayFor, hostPrefixLen } from './gateway.ts';
import { type Inspection, inspectAttachment } from './inspect.ts';
import { otherNetworkOf, shortId } from './names.ts';
import type { Family } from './ports.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';

/** The parts of prevResult CHECK compares with the kernel. */
export interface ExpectedAttachment {
  /** MAC of the pod interface from prevResult, when it carried one. */
  podMac?: string | undefined;
  /** "10.244.1.5/32" style addresses from prevResult.ips on the pod interface (or on none named). */
  ips: string[];
  /** The families of the default routes prevResult lists: only those are looked for. */
  defaultRoutes: Family[];
  /**
   * The routes prevResult lists through trellis's gateways (169.254.1.1, fe80::1), the default ones
   * among them: ADD made them on the pod interface. Another plugin's routes are its own to check.
   */
  gatewayRoutes: ExpectedRoute[];
}

export interface ExpectedRoute {
  family: Family;
  /** Canonical, as the kernel lists it: "10.244.1.0/24", "::/0". */
  dst: string;
  /** The route's own MTU (RTAX_MTU), when prevResult lists one. */
  mtu?: number;
}

/**
 * What CHECK looks for, from the runtime's prevResult for the pod interface `ifname`. A later plugin
 * of the chain may have changed routes or added addresses (CNI 1.0.0, CHECK), so only what the
 * result still lists is checked: a default route it dropped is not looked for.
 */
export function expectedFromResult(prev: CniResult, ifname: string): ExpectedAttachment {
  const podIfIndex = prev.interfaces?.findIndex((i) => i.name === ifname && i.sandbox !== undefined) ?? -1;
  const ips = (prev.ips ?? []).filter((ip) => ip.interface === undefined || ip.interface === podIfIndex);
  const defaultRoutes = new Set<Family>();
  const gatewayRoutes: ExpectedRoute[] = [];
  for (const r of prev.routes ?? []) {
    // Compared as numbers, not text: "::0/0" is "::/0", "FD00::2/128" is "fd00::2/128".
    const dst = canonicalCidr(r.dst);
    const family = dst === undefined ? undefined : parseCidr(dst)?.family;
    if (dst === undefined || family === undefined) continue;
    // A default route through another gateway is a later plugin's (route-override's), not ours to
    // look for; one without a gateway goes through the pod address's, which is trellis's.
    const ours = r.gw === undefined || canonicalIp(r.gw) === gatewayFor(family);
    if (ours && dst === defaultDst(family)) defaultRoutes.add(family);
    if (r.gw === undefined || !ours) continue;
    // 0 is Go's unset.
    gatewayRoutes.push(r.mtu === undefined || r.mtu === 0 ? { family, dst } : { family, dst, mtu: r.mtu });
  }
  const podInterface = podIfIndex >= 0 ? prev.interfaces?.[podIfIndex] : undefined;
  return {
    podMac: podInterface?.mac,
    ips: ips.map((i) => canonicalInterfaceAddress(i.address)),
    defaultRoutes: [...defaultRoutes],
    gatewayRoutes,
  };
}

/** "FD00:0:0::2/128" as the kernel's listing writes it ("fd00::2/128"); other text as it is. */
function canonicalInterfaceAddress(text: string): string {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? undefined : canonicalIp(text.slice(0, slash));
  return ip === undefined ? text : `${ip}${text.slice(slash)}`;
}

/**
 * CHECK: the kernel must still show what ADD set up and what prevResult claims. Every difference is
 * listed in one precise error (code 104) so an operator sees all drift at once. An address of
 * prevResult that trellis did not lease (a later plugin's) must be on the interface, as ptp checks
 * every address of its result.
 */
export async function checkAttachment(
  deps: Pick<DatapathDeps, 'host' | 'netns' | 'ipam'>,
  req: AttachmentKey & { netns: string },
  expected: ExpectedAttachment,
  scope: { network?: string; unrecorded?: string } = {},
): Promise<void> {
  const where = `${shortId(req.containerId)}/${req.ifname}`;
  if (!deps.netns.isNetns(req.netns)) {
    throw new CniError(
      CniCode.NETNS_NOT_FOUND,
      `CHECK ${where}: network namespace ${req.netns} does not exist or is not a network namespace`,
    );
  }
  const lease = deps.ipam.get(req);
  if (lease === undefined) {
    throw new CniError(
      CniCode.CHECK_FAILED,
      `CHECK ${where}: trellis holds no address lease for this attachment`,
    );
  }
  // As with ADD and DEL, the attachment is its network's: another network's pod on the same
  // container id and ifname is not this network's to vouch for.
  const leaseNetwork = otherNetworkOf(lease, scope.network, scope.unrecorded);
  if (leaseNetwork !== undefined) {
    throw new CniError(
      CniCode.CHECK_FAILED,
      `CHECK ${where}: the attachment is network ${JSON.stringify(leaseNetwork)}'s, not ${JSON.stringify(scope.network)}'s`,
    );
  }
  const problems: string[] = [];
  const leased = new Set(lease.addresses.map((a) => `${a.address}/${hostPrefixLen(a.family)}`));
  // Only trellis's own default routes: prevResult lists none it did not make on this interface.
  const inspection = await inspectAttachment(deps, req, lease.addresses, expected.defaultRoutes, false);
  problems.push(...inspection.problems);
  const onInterface = inspection.podAddresses;
  for (const ip of expected.ips) {
    if (!leased.has(ip) && onInterface !== undefined && !onInterface.includes(ip)) {
      problems.push(`prevResult address ${ip} is neither trellis's lease nor on ${req.ifname}`);
    }
  }
  if (inspection.pod !== undefined) problems.push(...podDrift(inspection.pod, expected, req.ifname));
  const podMac = inspection.attachment?.pod.mac;
  if (expected.podMac !== undefined && podMac !== undefined && podMac !== expected.podMac.toLowerCase()) {
    problems.push(`interface ${req.ifname} has MAC ${podMac}, prevResult says ${expected.podMac}`);
  }
  if (problems.length > 0) {
    throw new CniError(CniCode.CHECK_FAILED, `CHECK ${where} found drift: ${problems.join('; ')}`);
  }
}

/**
 * What the pod itself shows against prevResult beyond addresses and default routes (inspect.ts
 * looks for those): the routes through trellis's gateways with their MTUs, and the interface MTU.
 * A missing default route is inspect.ts's to report, so only a present one's MTU is compared here.
 */
function podDrift(
  pod: NonNullable<Inspection['pod']>,
  expected: ExpectedAttachment,
  ifname: string,
): string[] {
  const problems: string[] = [];
  // The interface's own MTU is not compared: a later plugin of the chain may set it (tuning's `mtu`)
  // without changing the result it passes on, as ptp does not compare it either. The routes' MTUs
  // are trellis's alone.
  for (const want of expected.gatewayRoutes) {
    const gw = gatewayFor(want.family);
    const found = pod.routes.find(
      (r) => r.ifindex === pod.index && r.gateway === gw && canonicalCidr(r.dst) === want.dst,
    );
    const isDefault = want.dst === defaultDst(want.family);
    if (found === undefined) {
      if (!isDefault) problems.push(`route ${want.dst} via ${gw} dev ${ifname} is missing in the pod`);
      continue;
    }
    if (want.mtu !== undefined && found.mtu !== want.mtu) {
      const has = found.mtu === undefined ? 'no MTU of its own' : `MTU ${found.mtu}`;
      problems.push(`route ${want.dst} via ${gw} has ${has}, prevResult says ${want.mtu}`);
    }
  }
  return problems;
}
