import { ip, nsSysctl, type TestNetns } from '../../support/netns.ts';

/**
 * A pod wired by hand as ADD wires one (veth `vpod`/eth0, /32 and /128, link-local gateways, host
 * routes of trellis's protocol), for overlay tests that run the VXLAN overlay without a datapath.
 * `ipv6On`: the node gives new links no IPv6 (default.disable_ipv6=1), so its end gets it back, as
 * veth-sysctls.ts does.
 */
export function wireHandmadePod(
  node: TestNetns,
  pod: TestNetns,
  v4: string,
  v6: string,
  opts: { ipv6On?: boolean } = {},
): void {
  ip(node.name, 'link', 'add', 'vpod', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.name);
  if (opts.ipv6On === true) nsSysctl(node.name, 'net/ipv6/conf/vpod/disable_ipv6', '0');
  nsSysctl(node.name, 'net.ipv6.conf.vpod.accept_dad', '0');
  nsSysctl(pod.name, 'net.ipv6.conf.eth0.accept_dad', '0');
  ip(node.name, 'link', 'set', 'vpod', 'up');
  ip(pod.name, 'link', 'set', 'eth0', 'up');
  ip(pod.name, 'addr', 'add', `${v4}/32`, 'dev', 'eth0');
  ip(pod.name, 'addr', 'add', `${v6}/128`, 'dev', 'eth0', 'nodad');
  ip(pod.name, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(pod.name, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(pod.name, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');
  ip(node.name, 'addr', 'add', '169.254.1.1/32', 'dev', 'vpod');
  ip(node.name, 'addr', 'add', 'fe80::1/64', 'dev', 'vpod', 'nodad');
  ip(node.name, 'route', 'add', `${v4}/32`, 'dev', 'vpod', 'scope', 'link', 'proto', '126');
  ip(node.name, '-6', 'route', 'add', `${v6}/128`, 'dev', 'vpod', 'proto', '126');
}
