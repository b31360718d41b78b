/**
 * A locally administered unicast MAC from the first six bytes given (bit 1 of the first octet set,
 * bit 0 clear): never a vendor's address, never taken for a multicast group. Lower-case, colon-separated.
 */
export function localUnicastMac(bytes: Uint8Array): string {
  const b = Array.from(bytes.subarray(0, 6));
  b[0] = (b[0]! & 0xfc) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
