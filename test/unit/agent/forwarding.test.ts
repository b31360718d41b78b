import pino from 'pino';
import { describe, expect, it } from 'vitest';
import {
  enableForwarding,
  forwardingSysctls,
  keepForwardingOn,
  raLearningInterfaces,
} from '../../../pkg/agent/forwarding.ts';

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

/** /proc/net/ipv6_route of a host that took a default route and a prefix from a router's advertisement. */
const RA_HOST_TABLE = `fd000099000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 004c0001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000cd1eafffef8d14f 00000400 00000001 00000000 00450003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001   eth1.7
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
`;

/** A sysctl port over a map, recording every write in order. */
function sysctls(initial: Record<string, string>) {
  const values = new Map(Object.entries(initial));
  const writes: [string, string][] = [];
  return {
    values,
    writes,
    port: {
      readSysctl: (key: string) => {
        const v = values.get(key);
        if (v === undefined) throw new Error(`ENOENT ${key}`);
        return v;
      },
      writeSysctl: (key: string, value: string) => {
        writes.push([key, value]);
        values.set(key, value);
      },
    },
  };
}

const silent = pino({ level: 'silent' });

describe('router advertisements and IPv6 forwarding', () => {
  it('finds the interfaces with routes the kernel learned from router advertisements (RTF_ADDRCONF)', () => {
    expect(raLearningInterfaces(RA_HOST_TABLE)).toEqual(['eth0']);
    expect(raLearningInterfaces('')).toEqual([]);
    expect(raLearningInterfaces('garbage\n1 2 3\n')).toEqual([]);
  });

  it('sets accept_ra=2 on them before IPv6 forwarding goes on, and leaves 0 and 2 alone', () => {
    const s = sysctls({
      'net/ipv6/conf/eth0/accept_ra': '1',
      'net/ipv6/conf/all/forwarding': '0',
      'net/ipv4/ip_forward': '0',
    });
    enableForwarding(s.port, ['10.244.1.0/24', 'fd00:10:244:1::/64'], {
      ipv6RouteTable: () => RA_HOST_TABLE,
      log: silent,
    });
    expect(s.writes).toEqual([
      ['net/ipv4/ip_forward', '1'],
      ['net/ipv6/conf/eth0/accept_ra', '2'],
      ['net/ipv6/conf/all/forwarding', '1'],
    ]);
    for (const held of ['0', '2']) {
      const t = sysctls({ 'net/ipv6/conf/eth0/accept_ra': held, 'net/ipv6/conf/all/forwarding': '0' });
      enableForwarding(t.port, ['fd00:10:244:1::/64'], { ipv6RouteTable: () => RA_HOST_TABLE, log: silent });
      expect(t.writes).toEqual([['net/ipv6/conf/all/forwarding', '1']]);
    }
  });

  it('writes nothing where forwarding is on already (a write of all/forwarding resets every interface)', () => {
    const s = sysctls({ 'net/ipv4/ip_forward': '1', 'net/ipv6/conf/all/forwarding': '1' });
    enableForwarding(s.port, ['10.244.1.0/24', 'fd00:10:244:1::/64'], {
      ipv6RouteTable: () => '',
      log: silent,
    });
    expect(s.writes).toEqual([]);
  });

  it('an IPv4-only node reads nothing of IPv6; a table it cannot read still lets forwarding go on', () => {
    const s = sysctls({ 'net/ipv4/ip_forward': '0' });
    enableForwarding(s.port, ['10.244.1.0/24'], {
      ipv6RouteTable: () => {
        throw new Error('must not be read');
      },
      log: silent,
    });
    expect(s.writes).toEqual([['net/ipv4/ip_forward', '1']]);
    const t = sysctls({ 'net/ipv6/conf/all/forwarding': '0' });
    enableForwarding(t.port, ['fd00:10:244:1::/64'], {
      ipv6RouteTable: () => {
        throw new Error('EACCES');
      },
      log: silent,
    });
    expect(t.writes).toEqual([['net/ipv6/conf/all/forwarding', '1']]);
  });

  it('keepForwardingOn does the same when it turns IPv6 forwarding back on', () => {
    const s = sysctls({ 'net/ipv6/conf/eth0/accept_ra': '1', 'net/ipv6/conf/all/forwarding': '0' });
    keepForwardingOn(s.port, ['fd00:10:244:1::/64'], silent, {
      ipv6RouteTable: () => RA_HOST_TABLE,
      log: silent,
    });
    expect(s.writes).toEqual([
      ['net/ipv6/conf/eth0/accept_ra', '2'],
      ['net/ipv6/conf/all/forwarding', '1'],
    ]);
  });
});
