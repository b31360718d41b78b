/**
 * Services the way kube-proxy's nftables mode programs them (pkg/proxy/nftables in kubernetes), cut
 * down to what a pod network has to carry: ClusterIPs and NodePorts DNATed to one endpoint each,
 * marked for masquerade where kube-proxy marks them (from outside the cluster CIDR, a pod reaching
 * itself through its Service, NodePorts of externalTrafficPolicy Cluster), and a postrouting chain
 * that masquerades marked packets. One table per family, `ip kube-proxy` and `ip6 kube-proxy`, as
 * kube-proxy names them; trellis's own table (`inet trellis`) must work beside them untouched.
 *
 * Plain text in, `nft -f -` out: tests load it into a node namespace of their own. Priorities are
 * numbers (dstnat -100, srcnat 100): Debian 12's nft 1.0.6 names `dstnat` for prerouting only.
 */
import type { Family } from './testbed/plan.ts';

export interface ServiceEndpoint {
  /** The endpoint pod's address of the rule's family. */
  readonly address: string;
  readonly port: number;
}

export interface ServiceRule {
  /** Used in chain names: [a-z0-9-]. */
  readonly name: string;
  readonly protocol: 'tcp' | 'udp';
  readonly clusterIP: string;
  readonly port: number;
  /** The node port, served on every local address of the node (kube-proxy's `fib daddr type local`). */
  readonly nodePort?: number;
  /** externalTrafficPolicy Local: NodePort traffic keeps the client's source (no masquerade). */
  readonly externalLocal?: boolean;
  readonly endpoint: ServiceEndpoint;
}

/** kube-proxy's masquerade mark (--masquerade-bit 14). */
const MASQ_MARK = '0x00004000';

/** The ruleset for one family: `clusterCIDR` is kube-proxy's --cluster-cidr of that family. */
export function kubeProxyRuleset(
  family: Family,
  clusterCIDR: string,
  services: readonly ServiceRule[],
): string {
  const ipKw = family === 4 ? 'ip' : 'ip6';
  const hostPort = (a: string, p: number): string => (family === 4 ? `${a}:${p}` : `[${a}]:${p}`);
  const lines = [
    `table ${ipKw} kube-proxy {`,
    '\tchain mark-for-masquerade {',
    `\t\tmeta mark set meta mark | ${MASQ_MARK}`,
    '\t}',
    '\tchain masquerading {',
    `\t\tmeta mark & ${MASQ_MARK} == 0 return`,
    `\t\tmeta mark set meta mark ^ ${MASQ_MARK}`,
    '\t\tmasquerade fully-random',
    '\t}',
    '\tchain nat-prerouting {',
    '\t\ttype nat hook prerouting priority -100; policy accept;',
    '\t\tjump services',
    '\t}',
    '\tchain nat-output {',
    '\t\ttype nat hook output priority -100; policy accept;',
    '\t\tjump services',
    '\t}',
    '\tchain nat-postrouting {',
    '\t\ttype nat hook postrouting priority 100; policy accept;',
    '\t\tjump masquerading',
    '\t}',
    '\tchain services {',
  ];
  for (const s of services) {
    lines.push(`\t\t${ipKw} daddr ${s.clusterIP} ${s.protocol} dport ${s.port} goto service-${s.name}`);
  }
  for (const s of services) {
    if (s.nodePort === undefined) continue;
    const loopback = family === 4 ? 'ip daddr != 127.0.0.0/8 ' : '';
    lines.push(
      `\t\tfib daddr type local ${loopback}${s.protocol} dport ${s.nodePort} goto external-${s.name}`,
    );
  }
  lines.push('\t}');
  for (const s of services) {
    const ep = s.endpoint;
    lines.push(
      `\tchain service-${s.name} {`,
      `\t\t${ipKw} saddr != ${clusterCIDR} jump mark-for-masquerade`,
      `\t\tgoto endpoint-${s.name}`,
      '\t}',
      `\tchain endpoint-${s.name} {`,
      // A pod reaching itself through its Service: without the masquerade its reply would go
      // straight back inside the pod, never un-DNATed.
      `\t\t${ipKw} saddr ${ep.address} jump mark-for-masquerade`,
      `\t\tmeta l4proto ${s.protocol} dnat to ${hostPort(ep.address, ep.port)}`,
      '\t}',
    );
    if (s.nodePort !== undefined) {
      lines.push(
        `\tchain external-${s.name} {`,
        // Local: only the node's own traffic is masqueraded; the client's source reaches the pod.
        s.externalLocal === true
          ? '\t\tfib saddr type local jump mark-for-masquerade'
          : '\t\tjump mark-for-masquerade',
        `\t\tgoto endpoint-${s.name}`,
        '\t}',
      );
    }
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
