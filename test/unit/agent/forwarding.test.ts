import { describe, expect, it } from 'vitest';
import { forwardingSysctls } from '../../../pkg/agent/forwarding.ts';

describe('forwardingSysctls', () => {
  it("turns on forwarding for the pod CIDRs' families only", () => {
    expect(forwardingSysctls(['10.244.1.0/24', 'fd00:1::/64'])).toEqual([
      'net/ipv4/ip_forward',
      'net/ipv6/conf/all/forwarding',
    ]);
    expect(forwardingSysctls(['fd00:1::/64'])).toEqual(['net/ipv6/conf/all/forwarding']);
    expect(forwardingSysctls(['10.244.1.0/24', '10.245.1.0/24'])).toEqual(['net/ipv4/ip_forward']);
    expect(forwardingSysctls([])).toEqual([]);
  });
});
