import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  canonicalCidr,
  canonicalIp,
  cidrContains,
  cidrsOverlap,
  formatIp,
  isUnusableNodeIp,
  mergeRanges,
  parseCidr,
  parseIp,
} from '../../../pkg/routes/cidr.ts';

describe('parseIp / formatIp', () => {
  it('accepts canonical and non-canonical spellings and renders RFC 5952 text', () => {
    expect(canonicalIp('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('FD00:0:0:0:0:0:0:1')).toBe('fd00::1');
    expect(canonicalIp('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(canonicalIp('::')).toBe('::');
    expect(canonicalIp('::ffff:10.1.2.3')).toBe('::ffff:a01:203');
    expect(canonicalIp('1:0:0:2::')).toBe('1:0:0:2::');
    expect(canonicalIp('1:2:3:4:5:6:7:8')).toBe('1:2:3:4:5:6:7:8');
  });

  it('rejects what Go net.ParseIP rejects', () => {
    for (const bad of [
      '',
      '1.2.3',
      '01.2.3.4',
      '1.2.3.256',
      '1.2.3.4 ',
      'fe80::1%eth0',
      '1::2::3',
      ':::',
      '1:2:3:4:5:6:7:8:9',
      '12345::',
      'x',
    ]) {
      expect(parseIp(bad), bad).toBeUndefined();
    }
  });

  it('round-trips every address and agrees with node:net on validity of the output', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (text) => {
        const ip = parseIp(text);
        if (ip === undefined) return; // fast-check may emit zero-padded octets we reject on purpose
        const out = formatIp(ip);
        expect(isIP(out)).toBe(ip.family);
        expect(parseIp(out)).toEqual(ip);
      }),
    );
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

describe('isUnusableNodeIp', () => {
  it('flags special-purpose addresses', () => {
    for (const s of ['127.0.0.1', '0.0.0.0', '169.254.1.1', '224.0.0.1', '::1', '::', 'fe80::1', 'ff02::1']) {
      expect(isUnusableNodeIp(parseIp(s)!), s).toBeDefined();
    }
    for (const s of ['10.0.0.1', '192.168.1.1', 'fd00::1', '2001:db8::1']) {
      expect(isUnusableNodeIp(parseIp(s)!), s).toBeUndefined();
    }
  });
});

describe('mergeRanges', () => {
  it('joins overlapping and adjacent blocks', () => {
    const blocks = ['10.0.1.0/24', '10.0.0.0/24', '10.0.0.128/25', '10.0.3.0/24'].map((s) => parseCidr(s)!);
    const r = mergeRanges(blocks).map(
      ([lo, hi]) => `${formatIp({ family: 4, value: lo })}-${formatIp({ family: 4, value: hi })}`,
    );
    expect(r).toEqual(['10.0.0.0-10.0.1.255', '10.0.3.0-10.0.3.255']);
  });

  it('covers exactly the union of the inputs (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 24, max: 32 })), {
          maxLength: 12,
        }),
        fc.integer({ min: 0, max: 511 }),
        (specs, probe) => {
          const blocks = specs.map(([n, len]) => parseCidr(`10.0.${n}.0/${len}`, { strict: false })!);
          const ranges = mergeRanges(blocks);
          const ip = { family: 4 as const, value: parseIp('10.0.0.0')!.value + BigInt(probe * 131) };
          const inBlocks = blocks.some((b) => cidrContains(b, ip));
          const inRanges = ranges.some(([lo, hi]) => ip.value >= lo && ip.value <= hi);
          expect(inRanges).toBe(inBlocks);
          for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0] > ranges[i - 1]![1] + 1n).toBe(true);
        },
      ),
    );
  });
});
