import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalIp, formatIp, parseIp } from '../../../pkg/ip/index.ts';
import { NOT_IPS } from './cases.ts';

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
    const ip = parseIp(input)!;
    expect(formatIp(ip.family, ip.value)).toBe(canonical);
  });

  it.each(NOT_IPS)('rejects %j', (input) => {
    expect(parseIp(input)).toBeUndefined();
  });
});

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
        expect(ip, text).toBeDefined();
        const out = formatIp(ip!);
        expect(isIP(out)).toBe(ip!.family);
        expect(parseIp(out)).toEqual(ip);
      }),
    );
  });
});
