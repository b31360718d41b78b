import type { IpAddress } from '../ip/index.ts';

/** Special-purpose addresses that can never be a node's InternalIP; the reason, or undefined when usable. */
export function isUnusableNodeIp(ip: IpAddress): string | undefined {
  if (ip.value === 0n) return 'unspecified address';
  if (ip.family === 4) {
    const first = Number(ip.value >> 24n);
    if (first === 127) return 'loopback address';
    if (first >= 224) return 'multicast or reserved address';
    if (ip.value >> 16n === 0xa9fen) return 'link-local address';
    return undefined;
  }
  if (ip.value === 1n) return 'loopback address';
  if (ip.value >> 120n === 0xffn) return 'multicast address';
  if (ip.value >> 118n === 0x3fan) return 'link-local address';
  return undefined;
}
