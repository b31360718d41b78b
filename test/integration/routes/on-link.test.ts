import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { readLocalLinks } from '../../../pkg/routes/local-links.ts';
import { RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import {
  ip,
  ipJson,
  NetnsPool,
  netnsSkipReason,
  nsPing,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';

/**
 * EC2's and Azure's dual-stack nodes: DHCPv6 gives the node its address as a /128, and only a router
 * advertisement's route (`proto ra`) makes the /64 around it on-link. Nodes A and B on one veth, each
 * with a /128 and that route (and the same for IPv4: a /32 beside an on-link /24): the agent's view of
 * its interfaces counts the addresses with the on-link prefix, so host-gw routes a peer's pod CIDR
 * straight to it, and a ping crosses. A /128 whose prefix is reached through a gateway, or whose
 * only route is a default one, keeps its own length.
 */
const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

describe.skipIf(netnsSkipReason !== undefined)('host-length node addresses inside an on-link prefix', () => {
  const pool = new NetnsPool();
  const handles: NetlinkHandle[] = [];
  let a: TestNetns;
  let b: TestNetns;
  let c: TestNetns;

  function open(ns: TestNetns): NetlinkHandle {
    const h = port!.openNetlinkIn(ns.path);
    handles.push(h);
    return h;
  }

  beforeAll(() => {
    a = pool.add('onl-a');
    b = pool.add('onl-b');
    c = pool.add('onl-c');
    ip(a.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b.name);
    ip(c.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    for (const [ns, dev] of [
      [a, 'eth0'],
      [b, 'eth0'],
      [c, 'eth0'],
      [c, 'eth1'],
    ] as const) {
      nsSysctl(ns.name, `net.ipv6.conf.${dev}.accept_dad`, '0');
      ip(ns.name, 'link', 'set', dev, 'up');
    }
    for (const [ns, me] of [
      [a, 'a'],
      [b, 'b'],
    ] as const) {
      ip(ns.name, 'addr', 'add', `2001:db8:5::${me}/128`, 'dev', 'eth0', 'nodad');
      ip(ns.name, 'route', 'add', '2001:db8:5::/64', 'dev', 'eth0', 'proto', 'ra');
      ip(ns.name, 'addr', 'add', `192.168.90.${me === 'a' ? 1 : 2}/32`, 'dev', 'eth0');
      ip(ns.name, 'route', 'add', '192.168.90.0/24', 'dev', 'eth0', 'proto', 'dhcp');
    }
    // B's pods (an address of its pod CIDR on lo) answer A through A's pod CIDR routed back.
    ip(b.name, 'addr', 'add', 'fd00:10:244:1::1/128', 'dev', 'lo');
    ip(b.name, 'addr', 'add', '10.244.1.1/32', 'dev', 'lo');
    ip(b.name, 'route', 'add', 'fd00:10:244::/64', 'via', '2001:db8:5::a', 'dev', 'eth0');
    ip(b.name, 'route', 'add', '10.244.0.0/24', 'via', '192.168.90.1', 'dev', 'eth0');
    // C: a /128 whose /64 is behind a router, and one with nothing but a default route.
    ip(c.name, 'addr', 'add', '2001:db8:6::c/128', 'dev', 'eth0', 'nodad');
    ip(c.name, 'addr', 'add', 'fe80::c/64', 'dev', 'eth0', 'nodad');
    ip(c.name, 'route', 'add', '2001:db8:6::/64', 'via', 'fe80::1', 'dev', 'eth0');
    ip(c.name, 'addr', 'add', '2001:db8:7::c/128', 'dev', 'eth1', 'nodad');
    ip(c.name, 'route', 'add', 'default', 'dev', 'eth1');
  });

  afterAll(() => {
    for (const h of handles.splice(0)) h.close();
    pool.cleanup();
  });

  const addressesOf = async (ns: TestNetns, dev: string): Promise<string[]> =>
    (await readLocalLinks(open(ns)))
      .find((l) => l.name === dev)!
      .addresses.map((x) => `${x.address}/${x.prefixLen}`)
      .sort();

  it('counts a /128 (and a /32) with the on-link prefix of its own link', async () => {
    expect(await addressesOf(a, 'eth0')).toEqual([
      '192.168.90.1/24',
      '2001:db8:5::a/64',
      expect.stringMatching(/^fe80::/),
    ]);
  });

  it('keeps the host length where the prefix is behind a gateway, or only a default route leads out', async () => {
    expect((await addressesOf(c, 'eth0')).filter((x) => !x.startsWith('fe80'))).toEqual([
      '2001:db8:6::c/128',
    ]);
    expect((await addressesOf(c, 'eth1')).filter((x) => !x.startsWith('fe80'))).toEqual([
      '2001:db8:7::c/128',
    ]);
  });

  it('host-gw routes the peer on that prefix directly, and traffic crosses', async () => {
    expect(nsPing(a.name, 'fd00:10:244:1::1')).toBe(false);
    const self: PeerNode = {
      name: 'node-a',
      podCIDRs: ['10.244.0.0/24', 'fd00:10:244::/64'],
      internalIPs: ['192.168.90.1', '2001:db8:5::a'],
    };
    const peer: PeerNode = {
      name: 'node-b',
      podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
      internalIPs: ['192.168.90.2', '2001:db8:5::b'],
    };
    const report = await new RouteReconciler({ handle: open(a) }).reconcile({
      synced: true,
      self,
      peers: [self, peer],
    });
    expect(report).toMatchObject({ errors: [], problems: [] });
    const ours = (family: '-4' | '-6') =>
      ipJson<{ dst: string; gateway?: string; dev?: string; protocol?: string }[]>(
        a.name,
        family,
        'route',
        'show',
        'table',
        'main',
      ).filter((r) => r.protocol === '126' && r.gateway !== undefined);
    expect(ours('-6')).toEqual([
      expect.objectContaining({ dst: 'fd00:10:244:1::/64', gateway: '2001:db8:5::b', dev: 'eth0' }),
    ]);
    expect(ours('-4')).toEqual([
      expect.objectContaining({ dst: '10.244.1.0/24', gateway: '192.168.90.2', dev: 'eth0' }),
    ]);
    expect(nsPing(a.name, 'fd00:10:244:1::1')).toBe(true);
    expect(nsPing(a.name, '10.244.1.1')).toBe(true);
  });
});
