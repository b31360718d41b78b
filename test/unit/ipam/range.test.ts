import { describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { formatIp, parseIp } from '../../../pkg/ip/index.ts';
import {
  gatewayAddress,
  isReserved,
  parseCidrOrThrow,
  parseIpOrThrow,
  parseRange,
  usableBounds,
} from '../../../pkg/ipam/range.ts';
import { thrown } from '../cni/thrown.ts';
import { NOT_CIDRS, NOT_IPS } from '../ip/cases.ts';

function codeOf(fn: () => unknown): { code: number; message: string } {
  const err = thrown(fn);
  return { code: err.code, message: err.message };
}

describe('bad address and CIDR text', () => {
  it.each(NOT_IPS)('rejects %j with INVALID_CONFIG naming the value', (input) => {
    const { code, message } = codeOf(() => parseIpOrThrow(input));
    expect(code).toBe(CniCode.INVALID_CONFIG);
    expect(message).toContain(JSON.stringify(input));
  });

  it.each(NOT_CIDRS)('rejects %s: %s', (input, why) => {
    const { code, message } = codeOf(() => parseCidrOrThrow(input));
    expect(code).toBe(CniCode.INVALID_CONFIG);
    expect(message).toContain(JSON.stringify(input));
    expect(message).toContain(why);
  });
});

describe('reserved addresses and range size', () => {
  it.each([
    // range, first usable, last usable, count
    ['10.244.1.0/24', '10.244.1.2', '10.244.1.254', 253n],
    ['10.244.1.0/29', '10.244.1.2', '10.244.1.6', 5n],
    ['10.244.1.0/30', '10.244.1.2', '10.244.1.2', 1n],
    ['fd00:10:244:1::/120', 'fd00:10:244:1::2', 'fd00:10:244:1::ff', 254n],
    ['fd00:10:244:1::/126', 'fd00:10:244:1::2', 'fd00:10:244:1::3', 2n],
    ['fd00:10:244:1::/64', 'fd00:10:244:1::2', 'fd00:10:244:1:ffff:ffff:ffff:ffff', (1n << 64n) - 2n],
  ])('%s hands out %s..%s (%s addresses)', (range, first, last, count) => {
    const c = parseRange(range);
    const b = usableBounds(c);
    expect(formatIp(c.family, b.first)).toBe(first);
    expect(formatIp(c.family, b.last)).toBe(last);
    expect(b.count).toBe(count);
    expect(isReserved(c, c.network)).toBe(true);
    expect(isReserved(c, c.network + 1n)).toBe(true);
    expect(isReserved(c, b.first)).toBe(false);
    expect(isReserved(c, b.last)).toBe(false);
  });

  it('names network + 1 as the conventional gateway, which is reserved', () => {
    const v4 = parseRange('10.244.1.0/24');
    expect(formatIp(4, gatewayAddress(v4))).toBe('10.244.1.1');
    expect(isReserved(v4, gatewayAddress(v4))).toBe(true);
    const v6 = parseRange('fd00:10:244:1::/64');
    expect(formatIp(6, gatewayAddress(v6))).toBe('fd00:10:244:1::1');
  });

  it('reserves the IPv4 broadcast address but not the last IPv6 address', () => {
    const v4 = parseRange('10.244.1.0/24');
    expect(isReserved(v4, parseIp('10.244.1.255')!.value)).toBe(true);
    const v6 = parseRange('fd00::/120');
    expect(isReserved(v6, parseIp('fd00::ff')!.value)).toBe(false);
  });

  it.each([
    ['10.244.1.0/31', 'IPv4 range 10.244.1.0/31 is too small', '/30 or shorter'],
    ['10.244.1.1/32', 'IPv4 range 10.244.1.1/32 is too small', '/30 or shorter'],
    ['fd00::/127', 'IPv6 range fd00::/127 is too small', '/126 or shorter'],
    ['fd00::1/128', 'IPv6 range fd00::1/128 is too small', '/126 or shorter'],
  ])('rejects %s as too small to allocate from', (range, what, hint) => {
    const { code, message } = codeOf(() => parseRange(range));
    expect(code).toBe(CniCode.INVALID_CONFIG);
    expect(message).toContain(what);
    expect(message).toContain(hint);
  });
});
