import { CniCode, CniError } from '../cni/errors.ts';
import { hostPrefixLen } from './gateway.ts';
import { inspectAttachment } from './inspect.ts';
import type { AttachmentKey, DatapathDeps } from './types.ts';

/** The parts of prevResult CHECK compares with the kernel. */
export interface ExpectedAttachment {
  /** MAC of the pod interface from prevResult, when it carried one. */
  podMac?: string;
  /** "10.244.1.5/32" style addresses from prevResult.ips. */
  ips: string[];
}

/**
 * CHECK: the kernel must still show what ADD set up and what prevResult claims. Every difference is
 * listed in one precise error (code 104) so an operator sees all drift at once.
 */
export async function checkAttachment(
  deps: Pick<DatapathDeps, 'host' | 'netns' | 'ipam'>,
  req: AttachmentKey & { netns: string },
  expected: ExpectedAttachment,
): Promise<void> {
  const where = `${req.containerId.slice(0, 12)}/${req.ifname}`;
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
  const problems: string[] = [];
  const leased = new Set(lease.addresses.map((a) => `${a.address}/${hostPrefixLen(a.family)}`));
  for (const ip of expected.ips) {
    if (!leased.has(ip)) problems.push(`prevResult address ${ip} is not the address trellis leased`);
  }
  const inspection = await inspectAttachment(deps, req, lease.addresses);
  problems.push(...inspection.problems);
  const podMac = inspection.attachment?.pod.mac;
  if (expected.podMac !== undefined && podMac !== undefined && podMac !== expected.podMac.toLowerCase()) {
    problems.push(`interface ${req.ifname} has MAC ${podMac}, prevResult says ${expected.podMac}`);
  }
  if (problems.length > 0) {
    throw new CniError(CniCode.CHECK_FAILED, `CHECK ${where} found drift: ${problems.join('; ')}`);
  }
}
