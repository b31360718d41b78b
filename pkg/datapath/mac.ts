import { randomBytes } from 'node:crypto';

/**
 * A random locally administered unicast MAC, as the kernel gives a veth end it was given none
 * (eth_hw_addr_random): ADD picks the pod end's MAC itself so that it knows it without asking the
 * kernel after creating the pair.
 */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02; // unicast, locally administered
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
