import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { formatIp, parseIp } from '../../../pkg/ip/index.ts';
import { chooseNext } from '../../../pkg/ipam/allocator.ts';
import { parseRange } from '../../../pkg/ipam/range.ts';

const v = (text: string): bigint => parseIp(text)!.value;
const set = (...texts: string[]): Set<bigint> => new Set(texts.map(v));

describe('chooseNext', () => {
  it.each([
    // range, used, last, expected
    ['10.244.1.0/29', [], undefined, '10.244.1.2'],
    ['10.244.1.0/29', [], '10.244.1.2', '10.244.1.3'],
    ['10.244.1.0/29', ['10.244.1.3', '10.244.1.4'], '10.244.1.2', '10.244.1.5'],
    // wraps around past the last usable address (.6; .7 is broadcast) to the first (.2)
    ['10.244.1.0/29', [], '10.244.1.6', '10.244.1.2'],
    ['10.244.1.0/29', ['10.244.1.2', '10.244.1.3'], '10.244.1.5', '10.244.1.6'],
    ['10.244.1.0/29', ['10.244.1.6', '10.244.1.2'], '10.244.1.5', '10.244.1.3'],
    // a last pointer from another range (pod CIDR changed) restarts at the first usable address
    ['10.244.1.0/29', [], '10.9.9.9', '10.244.1.2'],
    ['10.244.1.0/29', [], '10.244.1.0', '10.244.1.2'],
    ['10.244.1.0/30', [], '10.244.1.2', '10.244.1.2'],
    ['fd00:10:244:1::/120', [], 'fd00:10:244:1::ff', 'fd00:10:244:1::2'],
    ['fd00:10:244:1::/120', ['fd00:10:244:1::ff'], 'fd00:10:244:1::fe', 'fd00:10:244:1::2'],
    ['fd00:10:244:1::/64', [], undefined, 'fd00:10:244:1::2'],
    [
      'fd00:10:244:1::/64',
      ['fd00:10:244:1:ffff:ffff:ffff:ffff', 'fd00:10:244:1::2'],
      'fd00:10:244:1:ffff:ffff:ffff:fffe',
      'fd00:10:244:1::3',
    ],
  ] as const)('%s used=%j last=%s -> %s', (range, used, last, expected) => {
    const cidr = parseRange(range);
    const got = chooseNext(cidr, set(...used), last === undefined ? undefined : v(last));
    expect(formatIp(cidr.family, got)).toBe(expected);
  });

  it('does not hand the just-released address right back (round-robin)', () => {
    const cidr = parseRange('10.244.1.0/29');
    const used = set('10.244.1.2', '10.244.1.3');
    const a = chooseNext(cidr, used, v('10.244.1.3'));
    expect(formatIp(4, a)).toBe('10.244.1.4');
    // The pod behind .4 dies and its address is released; the next pod gets .5, not .4.
    expect(formatIp(4, chooseNext(cidr, used, a))).toBe('10.244.1.5');
  });

  it('reports exhaustion with the range and the counts', () => {
    const cidr = parseRange('10.244.1.0/29');
    const used = set('10.244.1.2', '10.244.1.3', '10.244.1.4', '10.244.1.5', '10.244.1.6');
    let err: unknown;
    try {
      chooseNext(cidr, used, v('10.244.1.4'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.IPAM_EXHAUSTED);
    expect((err as CniError).message).toBe('IPv4 range 10.244.1.0/29 is exhausted (5 of 5 addresses in use)');
  });

  it('exhausts a /30 after its single address, and an IPv6 /126 after two', () => {
    expect(() => chooseNext(parseRange('10.0.0.0/30'), set('10.0.0.2'), undefined)).toThrow(
      'IPv4 range 10.0.0.0/30 is exhausted (1 of 1 addresses in use)',
    );
    expect(() => chooseNext(parseRange('fd00::/126'), set('fd00::2', 'fd00::3'), undefined)).toThrow(
      'IPv6 range fd00::/126 is exhausted (2 of 2 addresses in use)',
    );
  });

  it('finds a free address in a /64 without enumerating it, even behind a run of used ones', () => {
    const cidr = parseRange('fd00:10:244:1::/64');
    const used = new Set<bigint>();
    for (let i = 2n; i < 5002n; i++) used.add(cidr.network + i);
    const start = performance.now();
    const got = chooseNext(cidr, used, undefined);
    expect(performance.now() - start).toBeLessThan(1000); // a scan of 2^64 would never return
    expect(formatIp(6, got)).toBe(formatIp(6, cidr.network + 5002n));
  });

  it('never returns a used or reserved address (exhaustive over small ranges)', () => {
    for (const range of ['10.0.0.0/29', '10.0.0.0/28', 'fd00::/125']) {
      const cidr = parseRange(range);
      const used = new Set<bigint>();
      let last: bigint | undefined;
      const seen: bigint[] = [];
      for (;;) {
        let got: bigint;
        try {
          got = chooseNext(cidr, used, last);
        } catch (e) {
          expect((e as CniError).code).toBe(CniCode.IPAM_EXHAUSTED);
          break;
        }
        expect(used.has(got)).toBe(false);
        expect(got).toBeGreaterThan(cidr.network + 1n);
        used.add(got);
        seen.push(got);
        last = got;
      }
      const size = 1n << BigInt((cidr.family === 4 ? 32 : 128) - cidr.prefixLen);
      expect(BigInt(seen.length)).toBe(size - (cidr.family === 4 ? 3n : 2n));
    }
  });
});
