import type { CniResult, ResultDns } from '../cni/result.ts';
import { LATEST_VERSION } from '../cni/version.ts';
import { gatewayFor, hostPrefixLen } from './gateway.ts';
import type { Attachment } from './types.ts';

/**
 * The ADD result in the latest (1.1) shape; the caller converts it to the runtime's version.
 * interfaces[0] is the host veth, interfaces[1] the pod interface (with `sandbox`), and every ip
 * points at the pod interface. Chained plugins (portmap, bandwidth) read exactly these fields.
 */
export function attachmentResult(att: Attachment, dns?: ResultDns): CniResult {
  const result: CniResult = {
    cniVersion: LATEST_VERSION,
    interfaces: [
      { name: att.host.name, mac: att.host.mac },
      { name: att.pod.name, mac: att.pod.mac, mtu: att.pod.mtu, sandbox: att.netns },
    ],
    ips: att.addresses.map((a) => ({
      address: `${a.address}/${hostPrefixLen(a.family)}`,
      gateway: gatewayFor(a.family),
      interface: 1,
    })),
    routes: att.routes.map((r) =>
      r.mtu === undefined ? { dst: r.dst, gw: r.gateway } : { dst: r.dst, gw: r.gateway, mtu: r.mtu },
    ),
  };
  if (dns !== undefined) result.dns = dns;
  return result;
}
