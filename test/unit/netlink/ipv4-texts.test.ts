import { describe, expect, it } from 'vitest';
import {
  ipv4PrefixTextAt,
  ipv4TextAt,
  rememberIpv4PrefixText,
  rememberIpv4Text,
} from '../../../pkg/netlink/ipv4-texts.ts';

const bytes = (...b: number[]): Buffer => Buffer.from([0xee, ...b]);

describe('IPv4 texts read from the kernel', () => {
  it('formats addresses and prefixes from their bytes, at an offset', () => {
    expect(ipv4TextAt(bytes(192, 0, 2, 1), 1)).toBe('192.0.2.1');
    expect(ipv4PrefixTextAt(bytes(10, 244, 7, 0), 1, 24)).toBe('10.244.7.0/24');
    // The same bytes under another length are another prefix; the address alone another key.
    expect(ipv4PrefixTextAt(bytes(10, 244, 7, 0), 1, 25)).toBe('10.244.7.0/25');
    expect(ipv4TextAt(bytes(10, 244, 7, 0), 1)).toBe('10.244.7.0');
  });

  it('takes a text written by the agent only when it is the one the bytes make', () => {
    rememberIpv4Text('192.0.2.010');
    rememberIpv4Text('198.51.100.7 ');
    rememberIpv4PrefixText('10.245.1.0/024', '10.245.1.0', 24);
    rememberIpv4PrefixText('10.245.2.0/24', '10.245.2.00', 24);
    expect(ipv4TextAt(bytes(192, 0, 2, 10), 1)).toBe('192.0.2.10');
    expect(ipv4TextAt(bytes(198, 51, 100, 7), 1)).toBe('198.51.100.7');
    expect(ipv4PrefixTextAt(bytes(10, 245, 1, 0), 1, 24)).toBe('10.245.1.0/24');
    expect(ipv4PrefixTextAt(bytes(10, 245, 2, 0), 1, 24)).toBe('10.245.2.0/24');
    rememberIpv4PrefixText('10.245.3.0/8', '10.245.3.0', 8);
    expect(ipv4PrefixTextAt(bytes(10, 245, 3, 0), 1, 8)).toBe('10.245.3.0/8');
  });

  it('stays right past its bound (cleared, not grown)', () => {
    for (let i = 0; i < 70_000; i++) {
      const b = bytes(10, (i >> 16) & 255, (i >> 8) & 255, i & 255);
      expect(ipv4TextAt(b, 1)).toBe(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    }
    expect(ipv4TextAt(bytes(10, 0, 0, 1), 1)).toBe('10.0.0.1');
  });
});
