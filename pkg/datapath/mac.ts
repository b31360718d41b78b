import { randomBytes } from 'node:crypto';
import { localUnicastMac } from '../ip/index.ts';

/**
 * A random locally administered unicast MAC, as the kernel gives a veth end it was given none
 * (eth_hw_addr_random): ADD picks the pod end's MAC itself so that it knows it without asking the
 * kernel after creating the pair.
 */
export function randomMac(): string {
  return localUnicastMac(randomBytes(6));
}
