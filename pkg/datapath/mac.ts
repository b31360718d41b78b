import { createHash, randomBytes } from 'node:crypto';
import { localUnicastMac } from '../ip/index.ts';

/**
 * A random locally administered unicast MAC, as the kernel gives a veth end it was given none
 * (eth_hw_addr_random): ADD picks the pod end's MAC itself so that it knows it without asking the
 * kernel after creating the pair.
 */
export function randomMac(): string {
  return localUnicastMac(randomBytes(6));
}

/**
 * The pod end's MAC, derived from (container ID, ifname) like the host end's name: a pair made again
 * for the same attachment (a running pod's pair deleted by someone else, HostSideCheck) gives the pod
 * the MAC its ADD reported, so CHECK against that result still holds. Unique enough: it only has to
 * differ from the host end's on their point-to-point link (the host end's is random).
 */
export function podMac(containerId: string, ifname: string): string {
  const digest = createHash('sha256')
    .update('pod-mac\0')
    .update(containerId)
    .update('\0')
    .update(ifname)
    .digest();
  return localUnicastMac(digest.subarray(0, 6));
}
