import { isIPv4 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bytesToIp,
  bytesToMac,
  familyOf,
  ipToBytes,
  ipv4Value,
  macToBytes,
  parsePrefix,
} from '../../../pkg/netlink/ip.ts';

describe('address bytes', () => {
  it('encodes IPv4 and IPv6 (compressed, full, dotted tail)', () => {
    expect([...ipToBytes('10.244.1.5')]).toEqual([10, 244, 1, 5]);
    expect(ipToBytes('fd00::5').toString('hex')).toBe('fd000000000000000000000000000005');
    expect(ipToBytes('::').toString('hex')).toBe('0'.repeat(32));
    expect(ipToBytes('1:2:3:4:5:6:7:8').toString('hex')).toBe('00010002000300040005000600070008');
    expect(ipToBytes('::ffff:1.2.3.4').toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(ipToBytes('fe80::1%eth0').toString('hex')).toBe('fe800000000000000000000000000001');
  });

  it('rejects what is not an address', () => {
    expect(() => ipToBytes('10.0.0')).toThrow(TypeError);
    expect(() => ipToBytes('fd00:::1')).toThrow(TypeError);
    expect(() => familyOf('eth0')).toThrow(TypeError);
  });

  it('formats IPv6 the RFC 5952 way (longest zero run, first on a tie, never a single zero)', () => {
    const fmt = (hex: string) => bytesToIp(Buffer.from(hex, 'hex'));
    expect(fmt('00000000000000000000000000000000')).toBe('::');
    expect(fmt('00000000000000000000000000000001')).toBe('::1');
    expect(fmt('fe800000000000000000000000000001')).toBe('fe80::1');
    expect(fmt('20010db8000000010000000000000001')).toBe('2001:db8:0:1::1');
    expect(fmt('20010db8000000000001000000000001')).toBe('2001:db8::1:0:0:1');
    expect(fmt('20010db8000100010001000100010001')).toBe('2001:db8:1:1:1:1:1:1');
    expect(fmt('20010db8000000010001000100010001')).toBe('2001:db8:0:1:1:1:1:1');
    expect(fmt('00000000000000000000ffff0a000001')).toBe('::ffff:10.0.0.1');
  });

  it('agrees with the WHATWG URL serializer (RFC 5952) and round-trips, for any 16 bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => {
          // Zero runs are what the formatter is about: make them common.
          return a.map((b, i) => (a[(i * 7) % 16]! < 100 ? 0 : b));
        }),
        (bytes) => {
          const text = bytesToIp(bytes);
          expect([...ipToBytes(text)]).toEqual([...bytes]);
          if (!text.includes('.')) expect(new URL(`http://[${text}]/`).hostname).toBe(`[${text}]`);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('reads a dotted quad exactly as node:net isIPv4 accepts it', () => {
    expect(ipv4Value('10.244.1.5')).toBe(0x0af40105);
    expect(ipv4Value('255.255.255.255')).toBe(0xffffffff);
    expect(ipv4Value('0.0.0.0')).toBe(0);
    for (const bad of [
      '01.2.3.4',
      '1.2.3.04',
      '256.1.1.1',
      '1.2.3',
      '1.2.3.4.5',
      '1..2.3',
      ' 1.2.3.4',
      '1.2.3.4/8',
      '',
    ]) {
      expect(ipv4Value(bad)).toBe(-1);
    }
    const quad = fc
      .array(
        fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('0', '00', '01', '', 'x')),
        {
          minLength: 3,
          maxLength: 5,
        },
      )
      .map((parts) => parts.join('.'));
    fc.assert(
      fc.property(fc.oneof(quad, fc.string({ maxLength: 16 })), (text) => {
        expect(ipv4Value(text) >= 0).toBe(isIPv4(text));
        if (isIPv4(text)) expect([...ipToBytes(text)]).toEqual(text.split('.').map(Number));
      }),
      { numRuns: 3000 },
    );
  });

  it('parses prefixes and rejects bad lengths', () => {
    expect(parsePrefix('10.244.2.0/24')).toEqual({ family: 4, address: '10.244.2.0', prefixLen: 24 });
    expect(parsePrefix('::/0')).toEqual({ family: 6, address: '::', prefixLen: 0 });
    expect(parsePrefix('10.0.0.1')).toEqual({ family: 4, address: '10.0.0.1', prefixLen: 32 });
    expect(() => parsePrefix('10.0.0.0/33')).toThrow(TypeError);
    expect(() => parsePrefix('10.0.0.0/')).toThrow(TypeError);
    expect(() => parsePrefix('fd00::/129')).toThrow(TypeError);
  });

  it('converts MACs both ways and rejects malformed ones', () => {
    expect([...macToBytes('0A:bb:cc:dd:ee:01')]).toEqual([0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
    expect(bytesToMac(Uint8Array.from([0x0a, 0xbb, 0, 0xdd, 0xee, 1]))).toBe('0a:bb:00:dd:ee:01');
    expect(() => macToBytes('0a:bb:cc:dd:ee')).toThrow(TypeError);
    expect(() => macToBytes('0a-bb-cc-dd-ee-ff')).toThrow(TypeError);
  });
});
