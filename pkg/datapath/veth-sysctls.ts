import type { NetnsPort } from './ports.ts';

/**
 * The per-link sysctls of a pod's veth pair, by the ends' names at the time of writing (a rename
 * takes a link's net/ipv6/conf entry along, so a pair made ahead keeps what was written under its
 * temporary names).
 */
export function setVethSysctls(
  netns: Pick<NetnsPort, 'writeSysctl' | 'writeSysctlInFd' | 'readSysctl'>,
  pod: { fd: number; path: string; name: string },
  hostName: string,
  ipv6: boolean,
): void {
  if (ipv6) {
    // DAD off: the pod's link-local and global addresses are usable at once (no 1-2 s wait).
    netns.writeSysctlInFd(pod.fd, pod.path, `net/ipv6/conf/${pod.name}/accept_dad`, '0');
    netns.writeSysctl(`net/ipv6/conf/${hostName}/accept_dad`, '0');
    // A pod must never route the node: its host end takes no router advertisements, whatever the
    // node's `default` says (accept_ra=2, common on routers, takes them with forwarding on).
    netns.writeSysctl(`net/ipv6/conf/${hostName}/accept_ra`, '0');
  } else {
    // No IPv6 for this pod, so none on its host end: no link-local path from the pod to the
    // node's [::] listeners, no advertisements heard from it.
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
