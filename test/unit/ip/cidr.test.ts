import { describe, expect, it } from 'vitest';
import {
  canonicalCidr,
  cidrContains,
  cidrProblem,
  cidrSize,
  cidrsOverlap,
  formatCidr,
  formatIp,
  nthAddress,
  parseCidr,
  parseIp,
} from '../../../pkg/ip/index.ts';
import { NOT_CIDRS } from './cases.ts';

describe('CIDRs', () => {
  it('parses, formats canonically and computes sizes with bigints', () => {
    const v6 = parseCidr('FD00:10:244:1:0::/64')!;
    expect(formatCidr(v6)).toBe('fd00:10:244:1::/64');
    expect(cidrSize(v6)).toBe(1n << 64n);
    expect(cidrSize(parseCidr('10.244.0.0/16')!)).toBe(65536n);
    expect(cidrSize(parseCidr('0.0.0.0/0')!)).toBe(1n << 32n);
  });

  it.each(NOT_CIDRS)('rejects %s: %s', (input, why) => {
    expect(parseCidr(input)).toBeUndefined();
    expect(cidrProblem(input)).toBe(why);
  });

  it('cidrContains() respects family and bounds', () => {
    const c = parseCidr('10.244.1.0/24')!;
    expect(cidrContains(c, parseIp('10.244.1.0')!)).toBe(true);
    expect(cidrContains(c, parseIp('10.244.1.255')!)).toBe(true);
    expect(cidrContains(c, parseIp('10.244.2.0')!)).toBe(false);
    expect(cidrContains(c, parseIp('10.244.0.255')!)).toBe(false);
    // Same numeric value, other family.
    expect(cidrContains(c, { family: 6, value: parseIp('10.244.1.7')!.value })).toBe(false);
    const v6 = parseCidr('fd00:10:244:1::/64')!;
    expect(cidrContains(v6, parseIp('fd00:10:244:1:ffff:ffff:ffff:ffff')!)).toBe(true);
    expect(cidrContains(v6, parseIp('fd00:10:244:2::')!)).toBe(false);
  });

  it('nthAddress() indexes from the network address and refuses out-of-range indexes', () => {
    const c = parseCidr('fd00:10:244:1::/64')!;
    expect(formatIp(6, nthAddress(c, 5n))).toBe('fd00:10:244:1::5');
    expect(formatIp(6, nthAddress(c, (1n << 64n) - 1n))).toBe('fd00:10:244:1:ffff:ffff:ffff:ffff');
    expect(() => nthAddress(c, 1n << 64n)).toThrow(RangeError);
    expect(() => nthAddress(parseCidr('10.0.0.0/30')!, -1n)).toThrow(RangeError);
  });
});

describe('parseCidr', () => {
  it('is strict about host bits unless asked not to be', () => {
    expect(canonicalCidr('10.244.1.0/24')).toBe('10.244.1.0/24');
    expect(canonicalCidr('10.244.1.5/24')).toBeUndefined();
    expect(parseCidr('10.244.1.5/24', { strict: false })?.network).toBe(parseIp('10.244.1.0')!.value);
    expect(canonicalCidr('fd00:10:244:1:0::/64')).toBe('fd00:10:244:1::/64');
    expect(canonicalCidr('10.0.0.0/33')).toBeUndefined();
    expect(canonicalCidr('10.0.0.0/08')).toBeUndefined();
    expect(canonicalCidr('10.0.0.0')).toBeUndefined();
    expect(canonicalCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
  });

  it('detects overlap only within a family', () => {
    const a = parseCidr('10.244.0.0/16')!;
    expect(cidrsOverlap(a, parseCidr('10.244.3.0/24')!)).toBe(true);
    expect(cidrsOverlap(a, parseCidr('10.245.0.0/24')!)).toBe(false);
    expect(cidrsOverlap(parseCidr('::/0')!, a)).toBe(false);
  });
});
