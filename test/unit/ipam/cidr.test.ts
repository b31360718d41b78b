import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import {
  canonicalIp,
  cidrSize,
  contains,
  formatCidr,
  formatIp,
  gatewayAddress,
  isReserved,
  nthAddress,
  parseCidr,
  parseIp,
  parseRange,
  tryParseIp,
  usableBounds,
} from '../../../pkg/ipam/cidr.ts';

function codeOf(fn: () => unknown): { code: number; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return { code: (err as CniError).code, message: (err as CniError).message };
  }
  throw new Error('expected a CniError');
}

describe('IP parsing and canonical form', () => {
  it.each([
    ['10.244.1.5', '10.244.1.5'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['fd00:10:244:1::5', 'fd00:10:244:1::5'],
    ['FD00:0010:0244:0001:0000:0000:0000:0005', 'fd00:10:244:1::5'],
    ['fd00:10:244:1:0:0:0:5', 'fd00:10:244:1::5'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    // RFC 5952: a single zero group is not compressed; the longest run wins; the first on a tie.
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
  ])('%s -> %s', (input, canonical) => {
    expect(canonicalIp(input)).toBe(canonical);
    const ip = parseIp(input);
    expect(formatIp(ip.family, ip.value)).toBe(canonical);
  });

  it.each([
    '',
    '10.244.1',
    '10.244.1.256',
    '10.244.01.5',
    '10.244.1.5.6',
    ' 10.0.0.1',
    'fd00::1::2',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7::8',
    'fe80::1%eth0',
    'g::1',
    '12345::1',
    '1.2.3.4::',
    '::1.2.3',
    '1:2:3:4:5:6:7:1.2.3.4',
  ])('rejects %j with INVALID_CONFIG naming the value', (input) => {
    expect(tryParseIp(input)).toBeUndefined();
    const { code, message } = codeOf(() => parseIp(input));
    expect(code).toBe(CniCode.INVALID_CONFIG);
    expect(message).toContain(JSON.stringify(input));
  });
});

describe('CIDRs', () => {
  it('parses, formats canonically and computes sizes with bigints', () => {
    const v6 = parseCidr('FD00:10:244:1:0::/64');
    expect(formatCidr(v6)).toBe('fd00:10:244:1::/64');
    expect(cidrSize(v6)).toBe(1n << 64n);
    expect(cidrSize(parseCidr('10.244.0.0/16'))).toBe(65536n);
    expect(cidrSize(parseCidr('0.0.0.0/0'))).toBe(1n << 32n);
  });

  it.each([
    ['10.244.1.0', 'expected ADDRESS/PREFIX'],
    ['10.244.1.0/33', 'prefix must be 0-32'],
    ['fd00::/129', 'prefix must be 0-128'],
    ['10.244.1.0/024', 'prefix must be 0-32'],
    ['10.244.1.0/-1', 'prefix must be 0-32'],
    ['10.244.1.0/24/1', 'expected ADDRESS/PREFIX'],
    ['10.244.1.5/24', 'host bits are set (the network is 10.244.1.0/24)'],
    ['fd00:10:244:1::5/64', 'host bits are set (the network is fd00:10:244:1::/64)'],
    ['nope/24', 'bad address'],
  ])('rejects %s: %s', (input, why) => {
    const { code, message } = codeOf(() => parseCidr(input));
    expect(code).toBe(CniCode.INVALID_CONFIG);
    expect(message).toContain(JSON.stringify(input));
    expect(message).toContain(why);
  });

  it('contains() respects family and bounds', () => {
    const c = parseCidr('10.244.1.0/24');
    expect(contains(c, parseIp('10.244.1.0'))).toBe(true);
    expect(contains(c, parseIp('10.244.1.255'))).toBe(true);
    expect(contains(c, parseIp('10.244.2.0'))).toBe(false);
    expect(contains(c, parseIp('10.244.0.255'))).toBe(false);
    // Same numeric value, other family.
    expect(contains(c, { family: 6, value: parseIp('10.244.1.7').value })).toBe(false);
    const v6 = parseCidr('fd00:10:244:1::/64');
    expect(contains(v6, parseIp('fd00:10:244:1:ffff:ffff:ffff:ffff'))).toBe(true);
    expect(contains(v6, parseIp('fd00:10:244:2::'))).toBe(false);
  });

  it('nthAddress() indexes from the network address and refuses out-of-range indexes', () => {
    const c = parseCidr('fd00:10:244:1::/64');
    expect(formatIp(6, nthAddress(c, 5n))).toBe('fd00:10:244:1::5');
    expect(formatIp(6, nthAddress(c, (1n << 64n) - 1n))).toBe('fd00:10:244:1:ffff:ffff:ffff:ffff');
    expect(() => nthAddress(c, 1n << 64n)).toThrow(RangeError);
    expect(() => nthAddress(parseCidr('10.0.0.0/30'), -1n)).toThrow(RangeError);
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
    expect(isReserved(v4, parseIp('10.244.1.255').value)).toBe(true);
    const v6 = parseRange('fd00::/120');
    expect(isReserved(v6, parseIp('fd00::ff').value)).toBe(false);
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
