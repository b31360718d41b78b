import { describe, expect, it } from 'vitest';
import type { RouteLookup } from '../../../pkg/datapath/ports.ts';
import { onLinkPrefixLen, onLinkProbe } from '../../../pkg/routes/on-link.ts';
import type { LocalAddress } from '../../../pkg/routes/types.ts';

const v6: LocalAddress = { family: 6, address: '2600:1f14:abc:de00::1234', prefixLen: 128 };
const v4: LocalAddress = { family: 4, address: '10.0.0.7', prefixLen: 32 };
const onLink = (dst: string, ifindexes = [2]): RouteLookup => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  ifindexes,
  onLink: true,
});

describe('onLinkProbe: the neighbour to look up for a host-length address', () => {
  it('flips the last bit of a usable /128 or /32', () => {
    expect(onLinkProbe(v6)).toBe('2600:1f14:abc:de00::1235');
    expect(onLinkProbe(v4)).toBe('10.0.0.6');
  });

  it('asks nothing for a subnet address, a link-local or loopback one', () => {
    expect(onLinkProbe({ ...v6, prefixLen: 64 })).toBeUndefined();
    expect(onLinkProbe({ family: 4, address: '169.254.1.1', prefixLen: 32 })).toBeUndefined();
    expect(onLinkProbe({ family: 6, address: 'fe80::1', prefixLen: 128 })).toBeUndefined();
    expect(onLinkProbe({ family: 4, address: '127.0.0.1', prefixLen: 32 })).toBeUndefined();
  });
});

describe('onLinkPrefixLen: the length a host-length address counts with', () => {
  it("an RA's on-link /64 through the address's own link (a DHCP client's /24 for IPv4)", () => {
    expect(onLinkPrefixLen(v6, 2, onLink('2600:1f14:abc:de00::/64'))).toBe(64);
    expect(onLinkPrefixLen(v4, 2, onLink('10.0.0.0/24'))).toBe(24);
  });

  it('its own: no route, a gateway, another link, several links, a default route, a prefix not holding it', () => {
    expect(onLinkPrefixLen(v6, 2, undefined)).toBe(128);
    const { onLink: _, ...viaGateway } = onLink('2600:1f14:abc:de00::/64');
    expect(onLinkPrefixLen(v6, 2, viaGateway)).toBe(128);
    expect(onLinkPrefixLen(v6, 3, onLink('2600:1f14:abc:de00::/64'))).toBe(128);
    expect(onLinkPrefixLen(v6, 2, onLink('2600:1f14:abc:de00::/64', [2, 3]))).toBe(128);
    expect(onLinkPrefixLen(v6, 2, onLink('::/0'))).toBe(128);
    expect(onLinkPrefixLen(v4, 2, onLink('10.0.1.0/24'))).toBe(32);
    expect(onLinkPrefixLen(v4, 2, onLink('2600:1f14:abc:de00::/64'))).toBe(32);
  });
});
