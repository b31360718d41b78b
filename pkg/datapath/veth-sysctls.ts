import { IPV6_MIN_MTU, type NetnsPort } from './ports.ts';

/**
 * The per-link sysctls of a pod's veth pair, by the ends' names at the time of writing (a rename
 * takes a link's net/ipv6/conf entry along, so a pair made ahead keeps what was written under its
 * temporary names).
 */
export function setVethSysctls(
  netns: Pick<NetnsPort, 'writeSysctl' | 'writeSysctlsInFd' | 'readSysctl'>,
  pod: { fd: number; path: string; name: string },
  hostName: string,
  ipv6: boolean,
  /** The pair's MTU: below 1280 the kernel gives a link no IPv6 at all (no net/ipv6/conf entry). */
  mtu: number,
): void {
  if (ipv6) {
    const inPod: [string, string][] = [];
    if (ipv6OffByDefault(netns)) {
      // A node hardened with net.ipv6.conf.default.disable_ipv6=1 gives new links no IPv6 (the
      // addresses' writes fail EACCES); a pod of an IPv6 pod CIDR needs it on both ends, as a v4-only
      // pod's host end gets it turned off below. (A pod namespace inherits that default only with
      // net.core.devconf_inherit_init_net set.)
      netns.writeSysctl(`net/ipv6/conf/${hostName}/disable_ipv6`, '0');
      inPod.push([`net/ipv6/conf/${pod.name}/disable_ipv6`, '0']);
    }
    // DAD off: the pod's link-local and global addresses are usable at once (no 1-2 s wait). No
    // router advertisements and no SLAAC in the pod: its routes are trellis's, and an address it
    // made up from a stray advertisement on the node would only be dropped by the source check.
    inPod.push(
      [`net/ipv6/conf/${pod.name}/accept_dad`, '0'],
      [`net/ipv6/conf/${pod.name}/accept_ra`, '0'],
      [`net/ipv6/conf/${pod.name}/autoconf`, '0'],
    );
    netns.writeSysctlsInFd(pod.fd, pod.path, inPod);
    netns.writeSysctl(`net/ipv6/conf/${hostName}/accept_dad`, '0');
    // A pod must never route the node: its host end takes no router advertisements, whatever the
    // node's `default` says (accept_ra=2, common on routers, takes them with forwarding on).
    netns.writeSysctl(`net/ipv6/conf/${hostName}/accept_ra`, '0');
  } else {
    // No IPv6 for this pod, so none on its host end: no link-local path from the pod to the
    // node's [::] listeners, no advertisements heard from it.
    if (mtu < IPV6_MIN_MTU) return;
    disableIpv6(netns, hostName);
  }
}

/** disable_ipv6 on a host link; nothing to do on a kernel without IPv6 (no net/ipv6 at all). */
function disableIpv6(netns: Pick<NetnsPort, 'writeSysctl' | 'readSysctl'>, link: string): void {
  try {
    netns.writeSysctl(`net/ipv6/conf/${link}/disable_ipv6`, '1');
  } catch (err) {
    if ((err as { cause?: NodeJS.ErrnoException }).cause?.code !== 'ENOENT') throw err;
    try {
      netns.readSysctl('net/ipv6/conf/default/disable_ipv6');
    } catch {
      return; // The kernel has no IPv6.
    }
    throw err;
  }
}

/** How long a reading of the node's IPv6 default is trusted (one read per ADD would double its sysctl work). */
const DEFAULT_READ_MS = 10_000;
const defaults = new WeakMap<object, { at: number; off: boolean }>();

/** Whether net.ipv6.conf.default.disable_ipv6 is 1 in the node's namespace (false without IPv6 at all). */
function ipv6OffByDefault(netns: Pick<NetnsPort, 'readSysctl'>): boolean {
  const now = performance.now();
  const known = defaults.get(netns);
  if (known !== undefined && now - known.at < DEFAULT_READ_MS) return known.off;
  let off = false;
  try {
    off = netns.readSysctl('net/ipv6/conf/default/disable_ipv6').trim() === '1';
  } catch {
    // No IPv6 in this kernel: nothing to turn on (the pod's addresses fail with their own error).
  }
  defaults.set(netns, { at: now, off });
  return off;
}
