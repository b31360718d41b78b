import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type LinkEventInterest,
  type NeighbourDeletion,
  TRELLIS_ROUTE_PROTOCOL as PROTO,
  type RouteInfo,
} from '../../../pkg/datapath/ports.ts';
import {
  ExistsError,
  type ExtendedNetlinkHandle,
  type LinkEvent,
  LinkNotFoundError,
  NetlinkError,
  type RouteEvent,
  subscribeRouteEvents,
} from '../../../pkg/netlink/index.ts';
import { CREATE_REPLACE, routeRequest } from '../../../pkg/netlink/requests.ts';
import { RtnlSocket } from '../../../pkg/netlink/socket.ts';
import {
  createNetlinkEvents,
  createNetnsPort,
  prepareEventSocket,
  withNetns,
} from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';

/**
 * The netlink adapter against the real kernel, always inside throwaway namespaces: every handle is
 * opened with openNetlinkIn, every assertion reads back with `ip -n NS -j` / `bridge -n NS -j`.
 */

interface IpAddr {
  ifname: string;
  addr_info: {
    family: string;
    local: string;
    prefixlen: number;
    scope: string;
    tentative?: boolean;
    nodad?: boolean;
  }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string | number;
  type?: string;
  flags: string[];
  prefsrc?: string;
  metric?: number;
}

const port = createNetnsPort();

/** Two link watches in `ns`: one unfiltered (what the kernel sent), one with the interest's filter. */
function linkWatches(ns: TestNetns, interest: LinkEventInterest) {
  const all: LinkEvent[] = [];
  const kept: LinkEvent[] = [];
  const subs = withNetns(ns.path, () => {
    const events = createNetlinkEvents();
    return [
      events.subscribeLinkEvents((e) => all.push(e)),
      events.subscribeLinkEvents((e) => kept.push(e), interest),
    ];
  });
  return { all, kept, subs };
}

/** A namespace with a veth pair (both ends inside it, up) and a handle opened in it. */
async function setup(
  pool: NetnsPool,
  tag: string,
): Promise<{ ns: TestNetns; h: ExtendedNetlinkHandle; dev: number; peer: number }> {
  const ns = pool.add(tag);
  const h = port.openNetlinkIn(ns.path);
  const fd = port.openNetnsFd(ns.path);
  try {
    await h.createVeth({ name: 'v0', mtu: 1500, peerName: 'v1', peerNetnsFd: fd, peerMtu: 1500 });
  } finally {
    port.closeFd(fd);
  }
  const dev = (await h.getLink('v0'))!.index;
  const peer = (await h.getLink('v1'))!.index;
  await h.setLinkUp(dev);
  await h.setLinkUp(peer);
  await h.addAddress({ family: 4, ifindex: dev, address: '10.88.0.1', prefixLen: 24 });
  return { ns, h, dev, peer };
}

const routesProto = (ns: string, family = '-4') =>
  ipJson<IpRoute[]>(ns, family, 'route', 'show', 'proto', String(PROTO));

describe.skipIf(netnsSkipReason !== undefined)('pkg/netlink (root, real kernel, test namespaces)', () => {
  const pool = new NetnsPool();
  const handles: ExtendedNetlinkHandle[] = [];
  const track = <T extends { h: ExtendedNetlinkHandle }>(x: T): T => {
    handles.push(x.h);
    return x;
  };
  afterEach(() => {
    for (const h of handles.splice(0)) h.close();
    pool.cleanup();
  });

  it('manages links: get by name and index, MTU, up, delete, typed errors', async () => {
    const { ns, h, dev, peer } = track(await setup(pool, 'link'));
    const byName = await h.getLink('v0');
    expect(await h.getLinkByIndex(dev)).toEqual(byName);
    expect(byName).toMatchObject({ name: 'v0', kind: 'veth', up: true, peerIndex: peer });
    expect(await h.getLink('nope0')).toBeUndefined();
    expect(await h.getLinkByIndex(9999)).toBeUndefined();

    await h.setLinkMtu(dev, 1380);
    expect(ipJson<{ mtu: number }[]>(ns.name, 'link', 'show', 'v0')[0]!.mtu).toBe(1380);

    const fd = port.openNetnsFd(ns.path);
    try {
      await expect(
        h.createVeth({ name: 'v0', mtu: 1500, peerName: 'v9', peerNetnsFd: fd, peerMtu: 1500 }),
      ).rejects.toBeInstanceOf(ExistsError);
    } finally {
      port.closeFd(fd);
    }

    await h.deleteLink(dev);
    const names = ipJson<{ ifname: string }[]>(ns.name, 'link').map((l) => l.ifname);
    expect(names).not.toContain('v0');
    expect(names).not.toContain('v1'); // deleting one end removes the pair
    const err = await h.deleteLink(dev).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LinkNotFoundError);
    expect(err).toMatchObject({ errno: 'ENODEV', code: 103, op: `RTM_DELLINK #${dev}` });
  });

  it('adds addresses idempotently; noDad makes an IPv6 address usable at once (not tentative)', async () => {
    const { ns, h, dev } = track(await setup(pool, 'addr'));
    await h.addAddress({ family: 6, ifindex: dev, address: 'fd00:88::1', prefixLen: 64, noDad: true });
    await h.addAddress({ family: 6, ifindex: dev, address: 'fd00:88::1', prefixLen: 64, noDad: true });
    await h.addAddress({ family: 6, ifindex: dev, address: 'fd00:88::2', prefixLen: 64 });
    await h.addAddress({ family: 4, ifindex: dev, address: '10.88.0.1', prefixLen: 24 });

    const info = ipJson<IpAddr[]>(ns.name, 'addr', 'show', 'dev', 'v0')[0]!.addr_info;
    const one = info.filter((a) => a.local === 'fd00:88::1');
    expect(one).toHaveLength(1);
    expect(one[0]!.tentative).toBeUndefined();
    expect(one[0]!.nodad).toBe(true);
    // The control: without noDad the kernel runs DAD, so the address starts tentative.
    expect(info.find((a) => a.local === 'fd00:88::2')!.tentative).toBe(true);
    expect(info.filter((a) => a.local === '10.88.0.1')).toHaveLength(1);

    const listed = await h.listAddresses(6, dev);
    expect(listed).toContainEqual({
      family: 6,
      ifindex: dev,
      address: 'fd00:88::1',
      prefixLen: 64,
      scope: 'universe',
    });
    expect(listed.every((a) => a.family === 6 && a.ifindex === dev)).toBe(true);
    expect(await h.listAddresses(4, dev)).toEqual([
      { family: 4, ifindex: dev, address: '10.88.0.1', prefixLen: 24, scope: 'universe' },
    ]);
    await expect(
      h.addAddress({ family: 4, ifindex: 9999, address: '10.9.9.9', prefixLen: 32 }),
    ).rejects.toBeInstanceOf(LinkNotFoundError);
  });

  it('lists an address with a peer (point-to-point) as its local address, IPv4 and IPv6', async () => {
    const { ns, h, dev } = track(await setup(pool, 'peer'));
    ip(ns.name, 'addr', 'add', '10.77.0.1/32', 'peer', '10.77.0.2', 'dev', 'v0');
    ip(ns.name, '-6', 'addr', 'add', 'fd00:77::1/128', 'peer', 'fd00:77::2', 'dev', 'v0', 'nodad');
    const listed = (await h.listAddresses(undefined, dev)).map((a) => `${a.address}/${a.prefixLen}`);
    expect(listed).toEqual(expect.arrayContaining(['10.77.0.1/32', 'fd00:77::1/128']));
    expect(listed.filter((a) => a.startsWith('10.77.0.2') || a.startsWith('fd00:77::2'))).toEqual([]);
  });

  it("setUp applies up, address and route steps in one datagram, in order; an existing address counts as added, a keepExisting route keeps another's", async () => {
    const { ns, h } = track(await setup(pool, 'setup'));
    const fd = port.openNetnsFd(ns.path);
    try {
      await h.createVeth({ name: 'w0', mtu: 1500, peerName: 'w1', peerNetnsFd: fd, peerMtu: 1500 });
    } finally {
      port.closeFd(fd);
    }
    const w0 = (await h.getLink('w0'))!.index;
    const steps = [
      { kind: 'up', index: w0 },
      {
        kind: 'address',
        address: { family: 4, ifindex: w0, address: '169.254.1.1', prefixLen: 32, scope: 'link' },
      },
      // Needs w0 up: only valid because the kernel applies the datagram's messages in order.
      {
        kind: 'route',
        route: { family: 4, dst: '10.99.0.5/32', ifindex: w0, scope: 'link', protocol: PROTO },
      },
    ] as const;
    expect(await h.setUp(steps)).toEqual(['done', 'done', 'done']);
    // Again: the address exists (kept), the route is replaced.
    expect(await h.setUp(steps)).toEqual(['done', 'kept', 'done']);
    expect(ipJson<{ flags: string[] }[]>(ns.name, 'link', 'show', 'w0')[0]!.flags).toContain('UP');
    expect(ipJson<IpAddr[]>(ns.name, 'addr', 'show', 'dev', 'w0')[0]!.addr_info.map((a) => a.local)).toEqual([
      '169.254.1.1',
    ]);
    expect(routesProto(ns.name).filter((r) => r.dst === '10.99.0.5')).toMatchObject([{ dev: 'w0' }]);

    // keepExisting: a destination another device holds stays that device's; a free one is created.
    const w1 = (await h.getLink('w1'))!.index;
    const onW1 = (dst: string) => ({ family: 4, dst, ifindex: w1, scope: 'link', protocol: PROTO }) as const;
    expect(
      await h.setUp([
        { kind: 'up', index: w1 },
        { kind: 'route', route: onW1('10.99.0.5/32'), keepExisting: true },
        { kind: 'route', route: onW1('10.99.0.8/32'), keepExisting: true },
      ]),
    ).toEqual(['done', 'kept', 'done']);
    expect(
      routesProto(ns.name)
        .filter((r) => r.dst === '10.99.0.5' || r.dst === '10.99.0.8')
        .map((r) => [r.dst, r.dev]),
    ).toEqual([
      ['10.99.0.5', 'w0'],
      ['10.99.0.8', 'w1'],
    ]);

    // A failing step is reported (typed), and the steps after it were still applied.
    const err = await h
      .setUp([
        { kind: 'route', route: { family: 4, dst: '10.99.0.6/32', ifindex: 9999, scope: 'link' } },
        {
          kind: 'route',
          route: { family: 4, dst: '10.99.0.7/32', ifindex: w0, scope: 'link', protocol: PROTO },
        },
      ])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).op).toContain('10.99.0.6/32');
    expect(routesProto(ns.name).map((r) => r.dst)).toContain('10.99.0.7');
  });

  it('replaces, lists by protocol, and deletes routes: gateway, blackhole, onlink, src, metric, table, IPv6', async () => {
    const { ns, h, dev } = track(await setup(pool, 'rt'));
    await h.addAddress({ family: 6, ifindex: dev, address: 'fd00:88::1', prefixLen: 64, noDad: true });
    // Someone else's route to the same destination space, which we must never list or delete.
    ip(ns.name, 'route', 'add', '10.200.0.0/24', 'via', '10.88.0.3', 'proto', 'static');

    const viaGw: RouteInfo = {
      family: 4,
      dst: '10.244.2.0/24',
      gateway: '10.88.0.2',
      ifindex: dev,
      protocol: PROTO,
    };
    const hole: RouteInfo = { family: 4, dst: '10.244.0.0/16', type: 'blackhole', protocol: PROTO };
    const onlink: RouteInfo = {
      family: 4,
      dst: '10.244.3.0/24',
      gateway: '192.0.2.33',
      ifindex: dev,
      onlink: true,
      protocol: PROTO,
    };
    const withSrc: RouteInfo = {
      family: 4,
      dst: '10.244.4.0/24',
      ifindex: dev,
      src: '10.88.0.1',
      metric: 50,
      protocol: PROTO,
    };
    const v6: RouteInfo = {
      family: 6,
      dst: 'fd00:244:2::/64',
      gateway: 'fd00:88::2',
      ifindex: dev,
      protocol: PROTO,
      metric: 256,
    };
    const other: RouteInfo = { family: 4, dst: '10.244.5.0/24', ifindex: dev, table: 100, protocol: PROTO };
    for (const r of [viaGw, hole, onlink, withSrc, v6, other]) {
      await h.replaceRoute(r);
      await h.replaceRoute(r); // idempotent
    }

    const shown = routesProto(ns.name);
    expect(shown.map((r) => r.dst).sort()).toEqual([
      '10.244.0.0/16',
      '10.244.2.0/24',
      '10.244.3.0/24',
      '10.244.4.0/24',
    ]);
    expect(shown.find((r) => r.dst === '10.244.0.0/16')!.type).toBe('blackhole');
    expect(shown.find((r) => r.dst === '10.244.3.0/24')!.flags).toContain('onlink');
    expect(shown.find((r) => r.dst === '10.244.4.0/24')).toMatchObject({ prefsrc: '10.88.0.1', metric: 50 });
    expect(ipJson<IpRoute[]>(ns.name, '-6', 'route', 'show', 'proto', String(PROTO))).toMatchObject([
      { dst: 'fd00:244:2::/64', gateway: 'fd00:88::2', metric: 256 },
    ]);
    expect(ipJson<IpRoute[]>(ns.name, 'route', 'show', 'table', '100')).toMatchObject([
      { dst: '10.244.5.0/24', dev: 'v0' },
    ]);

    const listed = await h.listRoutes({ family: 4, protocol: PROTO });
    expect(listed).toHaveLength(4);
    expect(listed).toContainEqual({ ...viaGw, scope: 'universe', type: 'unicast' });
    expect(listed).toContainEqual({ ...hole, scope: 'universe' });
    expect(listed).toContainEqual({ ...onlink, scope: 'universe', type: 'unicast' });
    expect(listed).toContainEqual({ ...withSrc, scope: 'link', type: 'unicast' });
    expect(await h.listRoutes({ family: 6, protocol: PROTO })).toEqual([
      { ...v6, scope: 'universe', type: 'unicast' },
    ]);
    expect(await h.listRoutes({ protocol: PROTO, table: 100 })).toEqual([
      { ...other, scope: 'link', type: 'unicast' },
    ]);
    expect((await h.listRoutes({ family: 4, ifindex: dev })).map((r) => r.dst)).toContain('10.88.0.0/24');

    // Replace moves the route to a new gateway instead of adding a second one.
    await h.replaceRoute({ ...viaGw, gateway: '10.88.0.9' });
    expect(routesProto(ns.name).filter((r) => r.dst === '10.244.2.0/24')).toMatchObject([
      { gateway: '10.88.0.9' },
    ]);

    // Delete by our protocol: idempotent, and someone else's route with another protocol survives.
    for (const r of [{ ...viaGw, gateway: '10.88.0.9' }, hole, onlink, withSrc, v6, other]) {
      await h.deleteRoute(r);
      await h.deleteRoute(r);
    }
    await h.deleteRoute({ family: 4, dst: '10.200.0.0/24', protocol: PROTO });
    expect(routesProto(ns.name)).toEqual([]);
    expect(await h.listRoutes({ protocol: PROTO })).toEqual([]);
    expect(ipJson<IpRoute[]>(ns.name, 'route', 'show', '10.200.0.0/24')).toHaveLength(1);
  });

  it('types route failures: missing device, unreachable gateway without onlink', async () => {
    const { h, dev } = track(await setup(pool, 'rterr'));
    const missing = await h
      .replaceRoute({ family: 4, dst: '10.244.9.0/24', ifindex: 9999, protocol: PROTO })
      .catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(LinkNotFoundError);
    expect(missing).toMatchObject({ errno: 'ENODEV', op: 'RTM_NEWROUTE 10.244.9.0/24 dev #9999' });
    const unreachable = await h
      .replaceRoute({ family: 4, dst: '10.244.9.0/24', gateway: '192.0.2.1', ifindex: dev, protocol: PROTO })
      .catch((e: unknown) => e);
    expect(unreachable).toBeInstanceOf(NetlinkError);
    expect((unreachable as NetlinkError).errno).toBe('ENETUNREACH');
  });

  it('replaces, lists and deletes permanent neighbours', async () => {
    const { ns, h, dev } = track(await setup(pool, 'nb'));
    const n4 = { family: 4 as const, ifindex: dev, address: '10.88.0.7', mac: '0a:58:0a:58:00:07' };
    const n6 = { family: 6 as const, ifindex: dev, address: 'fd00:88::7', mac: '0a:58:0a:58:00:77' };
    await h.replaceNeighbour(n4);
    await h.replaceNeighbour(n6);
    await h.replaceNeighbour({ ...n4, mac: '0a:58:0a:58:00:08' });
    const shown = ipJson<{ dst: string; lladdr: string; state: string[] }[]>(
      ns.name,
      'neigh',
      'show',
      'dev',
      'v0',
    );
    expect(shown).toContainEqual(
      expect.objectContaining({ dst: '10.88.0.7', lladdr: '0a:58:0a:58:00:08', state: ['PERMANENT'] }),
    );
    expect(shown).toContainEqual(
      expect.objectContaining({ dst: 'fd00:88::7', lladdr: '0a:58:0a:58:00:77', state: ['PERMANENT'] }),
    );
    const listed = await h.listNeighbours(dev);
    expect(listed).toContainEqual({ ...n4, mac: '0a:58:0a:58:00:08', permanent: true });
    expect(listed).toContainEqual({ ...n6, permanent: true });
    await h.deleteNeighbour(n4);
    await h.deleteNeighbour(n4);
    await h.deleteNeighbour(n6);
    expect(ipJson<{ dst: string }[]>(ns.name, 'neigh', 'show', 'dev', 'v0').map((n) => n.dst)).not.toContain(
      '10.88.0.7',
    );
    expect((await h.listNeighbours(dev)).filter((n) => n.permanent)).toEqual([]);
  });

  it('creates a VXLAN device and manages its FDB (append, list, delete)', async () => {
    const { ns, h, dev } = track(await setup(pool, 'vx'));
    const vx = await h.createVxlan({
      name: 'vx0',
      vni: 4242,
      port: 8472,
      localIp: '10.88.0.1',
      dev,
      mtu: 1450,
    });
    expect(vx).toMatchObject({ name: 'vx0', kind: 'vxlan', mtu: 1450, up: false });
    const detail = ipJson<{ linkinfo: { info_kind: string; info_data: Record<string, unknown> } }[]>(
      ns.name,
      '-d',
      'link',
      'show',
      'vx0',
    )[0]!;
    expect(detail.linkinfo.info_kind).toBe('vxlan');
    expect(detail.linkinfo.info_data).toMatchObject({
      id: 4242,
      local: '10.88.0.1',
      link: 'v0',
      port: 8472,
      learning: false,
    });
    await expect(
      h.createVxlan({ name: 'vx0', vni: 1, port: 8472, localIp: '10.88.0.1', mtu: 1450 }),
    ).rejects.toBeInstanceOf(ExistsError);
    await h.setLinkUp(vx.index);

    const remote = { ifindex: vx.index, mac: '0a:00:00:00:00:02', dst: '10.88.0.2' };
    const other = { ifindex: vx.index, mac: '0a:00:00:00:00:03', dst: '10.88.0.3' };
    const moved = { ...remote, dst: '10.88.0.9' };
    const bridge = () =>
      (
        JSON.parse(
          execFileSync('bridge', ['-n', ns.name, '-j', 'fdb', 'show', 'dev', 'vx0'], { encoding: 'utf8' }),
        ) as {
          mac: string;
          dst?: string;
        }[]
      )
        .filter((e) => e.dst !== undefined)
        .map((e) => `${e.mac}>${e.dst}`)
        .sort();
    // Created when missing, unchanged when written again.
    for (const e of [remote, other, remote]) await h.replaceFdb(e);
    expect(bridge()).toEqual(['0a:00:00:00:00:02>10.88.0.2', '0a:00:00:00:00:03>10.88.0.3']);
    expect(await h.listFdb(vx.index)).toEqual(expect.arrayContaining([remote, other]));

    // A MAC written with a new address: its one entry re-pointed, no second remote, and the kernel
    // never reports the entry deleted (a delete and add would leave a moment without it).
    const monitor = spawn('bridge', ['-n', ns.name, 'monitor', 'fdb'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let seen = '';
    monitor.stdout.on('data', (d: Buffer) => {
      seen += d.toString();
    });
    // The monitor is listening once it shows a probe entry written after it started.
    let probe = { ifindex: vx.index, mac: '0a:00:00:00:00:0f', dst: '10.88.0.100' };
    let from = 0;
    try {
      // Re-pointed until one change shows: a change made before the monitor subscribed is never shown.
      for (let i = 0; !seen.includes('10.88.0.1'); i++) {
        if (i === 100) throw new Error('bridge monitor showed nothing in 5 s');
        probe = { ...probe, dst: `10.88.0.${100 + (i % 100)}` };
        await h.replaceFdb(probe);
        await new Promise((r) => setTimeout(r, 50));
      }
      from = seen.length;
      await h.replaceFdb(moved);
      await waitFor(() => seen.slice(from).includes('10.88.0.9'));
    } finally {
      monitor.kill();
      await h.deleteFdb(probe);
    }
    expect(seen.slice(from)).not.toMatch(/Deleted/);
    expect(bridge()).toEqual(['0a:00:00:00:00:02>10.88.0.9', '0a:00:00:00:00:03>10.88.0.3']);

    await h.deleteFdb(moved);
    await h.deleteFdb(moved);
    expect(bridge()).toEqual(['0a:00:00:00:00:03>10.88.0.3']);
    expect(await h.listFdb(vx.index)).toEqual([other]);
  });

  it('reports route events, including a delete done by someone else with `ip route del`', async () => {
    const { ns, h, dev } = track(await setup(pool, 'ev'));
    const events: RouteEvent[] = [];
    const sub = withNetns(ns.path, () => createNetlinkEvents().subscribeRouteEvents((e) => events.push(e)));
    try {
      const r: RouteInfo = {
        family: 4,
        dst: '10.244.7.0/24',
        gateway: '10.88.0.2',
        ifindex: dev,
        protocol: PROTO,
      };
      await h.replaceRoute(r);
      await waitFor(() => events.some((e) => e.type === 'add' && e.route.dst === r.dst));
      // The handle writes the route through a nexthop object of its own; the event names it.
      const nhid = ipJson<{ nhid?: number }[]>(ns.name, 'route', 'show', '10.244.7.0/24')[0]?.nhid;
      expect(nhid).toBeGreaterThan(0);
      ip(ns.name, 'route', 'del', '10.244.7.0/24', 'proto', String(PROTO));
      await waitFor(() => events.some((e) => e.type === 'delete' && e.route.dst === r.dst));
      const del = events.find((e) => e.type === 'delete' && e.route.dst === r.dst);
      expect(del).toEqual({
        type: 'delete',
        table: 254,
        route: { ...r, scope: 'universe', type: 'unicast' },
        nexthopId: nhid,
      });
    } finally {
      sub.close();
    }
  });

  it('reports routes it cannot express (prohibit, multipath) by their key and protocol', async () => {
    const { ns } = track(await setup(pool, 'evu'));
    const events: RouteEvent[] = [];
    const sub = withNetns(ns.path, () => createNetlinkEvents().subscribeRouteEvents((e) => events.push(e)));
    try {
      ip(ns.name, 'route', 'add', 'prohibit', '10.244.8.0/24', 'proto', 'static');
      ip(
        ns.name,
        'route',
        'add',
        '10.244.9.0/24',
        'proto',
        'boot',
        'nexthop',
        'via',
        '10.88.0.2',
        'nexthop',
        'via',
        '10.88.0.3',
      );
      ip(ns.name, 'route', 'del', '10.244.8.0/24');
      const key = (dst: string, protocol: number): RouteInfo => ({
        family: 4,
        dst,
        protocol,
        unreadable: true,
      });
      const want: RouteEvent[] = [
        { type: 'add', table: 254, route: key('10.244.8.0/24', 4) },
        { type: 'add', table: 254, route: key('10.244.9.0/24', 3) },
        { type: 'delete', table: 254, route: key('10.244.8.0/24', 4) },
      ];
      // The main table only: the kernel's own IPv6 routes for the veth (ff00::/8 in the local table,
      // added by addrconf's deferred work) may be announced meanwhile on a loaded machine.
      const keyed = () =>
        events.filter((e) => 'route' in e && e.route.unreadable === true && e.table === 254);
      await waitFor(() => keyed().length >= 3);
      expect(keyed()).toEqual(want);
      // A listing shows the multipath route by key only when asked to.
      const h = port.openNetlinkIn(ns.path);
      try {
        expect((await h.listRoutes({ family: 4 })).some((r) => r.dst === '10.244.9.0/24')).toBe(false);
        expect((await h.listRoutes({ family: 4, unreadable: true })).filter((r) => r.unreadable)).toEqual([
          key('10.244.9.0/24', 3),
        ]);
      } finally {
        h.close();
      }
    } finally {
      sub.close();
    }
  });

  it('reports link events and signals overflow when the kernel drops notifications', async () => {
    const { ns, h, dev } = track(await setup(pool, 'lev'));
    const links: LinkEvent[] = [];
    const sub = withNetns(ns.path, () => createNetlinkEvents().subscribeLinkEvents((e) => links.push(e)));
    // A tiny receive buffer that a burst of route notifications is bound to overflow.
    const routes: RouteEvent[] = [];
    const small = withNetns(ns.path, () =>
      subscribeRouteEvents((e) => routes.push(e), {
        prepareFd: (fd, wants) => prepareEventSocket(fd, wants, 4096),
      }),
    );
    try {
      await h.setLinkMtu(dev, 1400);
      ip(ns.name, 'link', 'del', 'v0');
      await waitFor(() => links.some((e) => e.type === 'delete' && e.link.name === 'v0'));
      expect(links).toContainEqual({ type: 'add', link: expect.objectContaining({ name: 'v0', mtu: 1400 }) });

      const hole = (i: number): RouteInfo => ({
        family: 4,
        dst: `10.${60 + (i >> 8)}.${i & 255}.0/24`,
        type: 'blackhole',
        protocol: PROTO,
      });
      await h.replaceRoutes(Array.from({ length: 2000 }, (_, i) => hole(i)));
      await waitFor(() => routes.some((e) => e.type === 'overflow'));
      // The process is still alive and the subscription still delivers after the overflow.
      routes.length = 0;
      ip(ns.name, 'route', 'del', '10.60.5.0/24');
      await waitFor(() => routes.some((e) => e.type === 'delete' && e.route.dst === '10.60.5.0/24'));
    } finally {
      sub.close();
      small.close();
    }
  });

  it('has the kernel drop the notifications an interest does not name (a socket filter), keeping the rest', async () => {
    const { ns } = track(await setup(pool, 'flt'));
    ip(ns.name, 'link', 'set', 'lo', 'up'); // blackhole nexthops need it
    const all: RouteEvent[] = [];
    const kept: RouteEvent[] = [];
    const allLinks: LinkEvent[] = [];
    const keptLinks: LinkEvent[] = [];
    const subs = withNetns(ns.path, () => {
      const events = createNetlinkEvents();
      return [
        events.subscribeRouteEvents((e) => all.push(e)),
        events.subscribeRouteEvents((e) => kept.push(e), {
          routes: [
            { change: 'any', table: 254, protocol: 2, type: 'unicast' },
            { change: 'delete', protocol: PROTO },
          ],
          nexthopDeletions: { protocol: PROTO },
        }),
        events.subscribeLinkEvents((e) => allLinks.push(e)),
        events.subscribeLinkEvents((e) => keptLinks.push(e), { changes: ['delete'] }),
      ];
    });
    const nexthopGone = (list: RouteEvent[], id: number) => () =>
      list.some((e) => e.type === 'nexthop-deleted' && e.id === id);
    try {
      ip(ns.name, 'route', 'add', 'blackhole', '10.61.0.0/24', 'proto', String(PROTO)); // ours added: dropped
      ip(ns.name, 'route', 'add', 'blackhole', '10.62.0.0/24', 'proto', 'static'); // not ours: dropped
      ip(ns.name, 'route', 'del', '10.62.0.0/24');
      ip(ns.name, 'route', 'del', '10.61.0.0/24'); // ours deleted: kept
      // A connected subnet (kept); its local-table routes (the address, the broadcast) are dropped.
      ip(ns.name, 'addr', 'add', '10.63.0.1/24', 'dev', 'v0');
      ip(ns.name, 'nexthop', 'add', 'id', '71', 'blackhole', 'proto', String(PROTO));
      ip(ns.name, 'nexthop', 'add', 'id', '72', 'blackhole', 'proto', 'static');
      ip(ns.name, 'nexthop', 'del', 'id', '72'); // another protocol's object: dropped
      ip(ns.name, 'nexthop', 'del', 'id', '71'); // ours: kept, and the last change made
      await waitFor(nexthopGone(kept, 71));
      await waitFor(nexthopGone(all, 71));

      const summary = (e: RouteEvent) =>
        e.type === 'add' || e.type === 'delete'
          ? `${e.type} ${e.route.dst} table ${e.table} proto ${e.route.protocol}`
          : e.type === 'nexthop-deleted'
            ? `nexthop-deleted ${e.id}`
            : e.type;
      expect(kept.map(summary)).toEqual([
        `delete 10.61.0.0/24 table 254 proto ${PROTO}`,
        'add 10.63.0.0/24 table 254 proto 2',
        'nexthop-deleted 71',
      ]);
      // The unfiltered socket saw what the filter dropped: so the kernel dropped it, not the parser.
      expect(all.map(summary)).toEqual(
        expect.arrayContaining([
          `add 10.61.0.0/24 table 254 proto ${PROTO}`,
          'add 10.62.0.0/24 table 254 proto 4',
          'delete 10.62.0.0/24 table 254 proto 4',
          'add 10.63.0.1/32 table 255 proto 2',
          'nexthop-deleted 72',
          ...kept.map(summary),
        ]),
      );

      ip(ns.name, 'link', 'set', 'v0', 'mtu', '1400');
      ip(ns.name, 'link', 'del', 'v0');
      await waitFor(() => keptLinks.some((e) => e.type === 'delete' && e.link.name === 'v0'));
      await waitFor(() => allLinks.some((e) => e.type === 'delete' && e.link.name === 'v0'));
      expect(allLinks).toContainEqual({
        type: 'add',
        link: expect.objectContaining({ name: 'v0', mtu: 1400 }),
      });
      expect(keptLinks.length).toBeGreaterThan(0);
      expect(keptLinks.every((e) => e.type === 'delete')).toBe(true);
    } finally {
      for (const s of subs) s.close();
    }
  });

  it("has the kernel keep only the named links' notifications (an ifindex interest), of any index", async () => {
    const ns = pool.add('lidx');
    ip(ns.name, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'a1');
    ip(ns.name, 'link', 'add', 'b0', 'type', 'veth', 'peer', 'name', 'b1');
    // An index above 255 and above 65535 too: the filter compares all four bytes.
    ip(ns.name, 'link', 'add', 'c0', 'index', '70000', 'type', 'veth', 'peer', 'name', 'c1');
    const index = (dev: string) =>
      ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', dev)[0]!.ifindex;
    const [a0, b0] = [index('a0'), index('b0')];
    expect(index('c0')).toBe(70000);
    const { all, kept, subs } = linkWatches(ns, { changes: ['add'], links: [a0, 70000] });
    try {
      ip(ns.name, 'link', 'set', 'b0', 'mtu', '1300'); // not named: dropped
      ip(ns.name, 'link', 'set', 'a0', 'mtu', '1400');
      ip(ns.name, 'link', 'set', 'c0', 'mtu', '1200');
      ip(ns.name, 'link', 'del', 'a0'); // a deletion: not asked for
      await waitFor(() => all.some((e) => e.type === 'delete' && e.link.name === 'a0'));
      await waitFor(() =>
        kept.some((e) => e.type === 'add' && e.link.index === 70000 && e.link.mtu === 1200),
      );
      expect(all).toContainEqual({ type: 'add', link: expect.objectContaining({ index: b0, mtu: 1300 }) });
      expect(kept).toContainEqual({ type: 'add', link: expect.objectContaining({ index: a0, mtu: 1400 }) });
      expect(kept.every((e) => e.type === 'add' && [a0, 70000].includes(e.link.index))).toBe(true);
    } finally {
      for (const s of subs) s.close();
    }
  });

  it("has the kernel keep only the notifications that set a link down ('down'): not a new link's, not other changes", async () => {
    const ns = pool.add('ldown');
    const { all, kept, subs } = linkWatches(ns, { changes: ['down'] });
    const said = (list: LinkEvent[]) =>
      list.flatMap((e) =>
        e.type === 'add' && e.wentDown === true && ['b0', 'b1'].includes(e.link.name)
          ? [`${e.link.name} down`]
          : [],
      );
    try {
      // Made down (announced with every flag changed), set up, its MTU changed: none kept.
      ip(ns.name, 'link', 'add', 'b0', 'type', 'veth', 'peer', 'name', 'b1');
      ip(ns.name, 'link', 'set', 'b0', 'up');
      ip(ns.name, 'link', 'set', 'b1', 'up'); // b0's carrier comes up: a change, not a down
      ip(ns.name, 'link', 'set', 'b0', 'mtu', '1400');
      ip(ns.name, 'link', 'set', 'b1', 'down'); // kept; b0 loses its carrier but stays up
      ip(ns.name, 'link', 'set', 'b1', 'up');
      ip(ns.name, 'link', 'set', 'b0', 'down'); // kept
      // Deleting an up link closes it first (IFF_RUNNING changed too): not kept, its DELLINK follows.
      ip(ns.name, 'link', 'set', 'b0', 'up');
      ip(ns.name, 'link', 'del', 'b0');
      await waitFor(() => all.some((e) => e.type === 'delete' && e.link.name === 'b1'));
      await waitFor(() => said(kept).length === 2);
      expect(said(kept)).toEqual(['b1 down', 'b0 down']);
      // The unfiltered socket read the same downs among the rest: the kernel dropped the rest.
      expect(said(all)).toEqual(said(kept));
      expect(all.length).toBeGreaterThan(kept.length + 4);
      expect(kept.every((e) => e.type === 'add' && e.wentDown === true)).toBe(true);
    } finally {
      for (const s of subs) s.close();
    }
  });

  it("has the kernel keep a link's neighbour deletions but those of NOARP entries (its own multicast ones)", async () => {
    const ns = pool.add('ndel');
    ip(ns.name, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'a1');
    ip(ns.name, 'link', 'set', 'a0', 'up');
    ip(ns.name, 'link', 'set', 'a1', 'up');
    const a0 = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', 'a0')[0]!.ifindex;
    const kept: NeighbourDeletion[] = [];
    const sub = withNetns(ns.path, () => {
      const events = createNetlinkEvents();
      return events.subscribeNeighbourDeletions!((e) => kept.push(e), [a0]);
    });
    try {
      ip(
        ns.name,
        'neigh',
        'add',
        '10.88.0.9',
        'lladdr',
        '02:00:00:00:00:09',
        'dev',
        'a0',
        'nud',
        'permanent',
      );
      ip(ns.name, 'neigh', 'del', '10.88.0.9', 'dev', 'a0'); // announced FAILED: kept
      await waitFor(() => kept.length === 1);
      ip(ns.name, 'neigh', 'add', 'fd00::9', 'lladdr', '02:00:00:00:00:09', 'dev', 'a0', 'nud', 'noarp');
      ip(ns.name, 'neigh', 'add', '10.88.0.8', 'lladdr', '02:00:00:00:00:08', 'dev', 'a0', 'nud', 'noarp');
      ip(ns.name, 'neigh', 'add', 'fd00::7', 'lladdr', '02:00:00:00:00:07', 'dev', 'a0', 'nud', 'permanent');
      // The link going down flushes its entries, each announced in the state it had: the two NOARP
      // ones (and the kernel's own for ff02::16 and the like) dropped, the permanent one kept.
      ip(ns.name, 'link', 'set', 'a0', 'down');
      await waitFor(() => kept.length >= 2);
      expect(ipJson<unknown[]>(ns.name, 'neigh', 'show', 'dev', 'a0')).toEqual([]);
      // A last deletion, on a link not named, then one on a0: nothing else came in between.
      ip(ns.name, 'link', 'set', 'a0', 'up');
      ip(
        ns.name,
        'neigh',
        'add',
        '10.88.0.7',
        'lladdr',
        '02:00:00:00:00:07',
        'dev',
        'a1',
        'nud',
        'permanent',
      );
      ip(ns.name, 'neigh', 'del', '10.88.0.7', 'dev', 'a1');
      ip(
        ns.name,
        'neigh',
        'add',
        '10.88.0.6',
        'lladdr',
        '02:00:00:00:00:06',
        'dev',
        'a0',
        'nud',
        'permanent',
      );
      ip(ns.name, 'neigh', 'del', '10.88.0.6', 'dev', 'a0');
      await waitFor(() => kept.length >= 3);
      // Each names the entry deleted (the agent tells its own deletions by it).
      expect(kept).toEqual([
        { type: 'deleted', ifindex: a0, family: 2, entry: { ifindex: a0, address: '10.88.0.9' } },
        { type: 'deleted', ifindex: a0, family: 10, entry: { ifindex: a0, address: 'fd00::7' } },
        { type: 'deleted', ifindex: a0, family: 2, entry: { ifindex: a0, address: '10.88.0.6' } },
      ]);
    } finally {
      sub.close();
    }
  });

  it('turns an exception thrown by a subscriber into an ordinary uncaught exception, not an abort', () => {
    const ns = pool.add('throw');
    const mod = (p: string) => JSON.stringify(new URL(`../../../pkg/${p}`, import.meta.url).pathname);
    const script = `
      import { openNetlink } from ${mod('netlink/index.ts')};
      import { createNetlinkEvents, withNetns } from ${mod('netns/index.ts')};
      process.on('uncaughtException', (e) => { console.log('uncaught ' + e.message); process.exit(0); });
      const path = ${JSON.stringify(ns.path)};
      withNetns(path, () => createNetlinkEvents().subscribeRouteEvents(() => { throw new Error('boom'); }, ));
      const h = withNetns(path, () => openNetlink());
      await h.replaceRoute({ family: 4, dst: '10.9.0.0/16', type: 'blackhole', protocol: 126 });
      setTimeout(() => { console.log('no event'); process.exit(1); }, 2000);
    `;
    const r = spawnSync(
      'sh',
      ['-c', 'ulimit -c 0; exec "$0" "$@"', process.execPath, '--input-type=module', '-e', script],
      {
        encoding: 'utf8',
      },
    );
    expect(r.signal).toBeNull();
    expect(r.stdout.trim()).toBe('uncaught boom');
    expect(r.status).toBe(0);
  });

  it('serves concurrent requests and dumps on one handle', async () => {
    const { ns, h, dev } = track(await setup(pool, 'conc'));
    ip(ns.name, 'neigh', 'add', '10.88.0.9', 'lladdr', '02:00:00:00:00:09', 'dev', 'v0', 'nud', 'permanent');
    const routes = Array.from(
      { length: 600 },
      (_, i): RouteInfo => ({
        family: 4,
        dst: `10.${70 + (i >> 8)}.${i & 255}.0/24`,
        ifindex: dev,
        protocol: PROTO,
      }),
    );
    const [links, , addrs, dumped, listed] = await Promise.all([
      h.listLinks(),
      Promise.all(routes.map((r) => h.replaceRoute(r))),
      h.listAddresses(4),
      h.listRoutes({ family: 4 }),
      h.listNeighbours(),
    ]);
    expect(links.map((l) => l.name).sort()).toEqual(['lo', 'v0', 'v1']);
    expect(addrs.map((a) => a.address)).toContain('10.88.0.1');
    // The dump that ran among the writes is whole: the connected route is there, whatever of the
    // 600 it caught are real ones.
    expect(dumped.map((r) => r.dst)).toContain('10.88.0.0/24');
    expect(dumped.filter((r) => r.protocol === PROTO).every((r) => routes.some((w) => w.dst === r.dst))).toBe(
      true,
    );
    expect(listed).toContainEqual(
      expect.objectContaining({ family: 4, address: '10.88.0.9', mac: '02:00:00:00:00:09', ifindex: dev }),
    );
    expect(await h.listRoutes({ family: 4, protocol: PROTO })).toHaveLength(600);
  });

  it('does a CNI ADD worth of requests five times: the pod default route and the host routes are in place', async () => {
    const host = pool.add('addh');
    const pod = pool.add('addp');
    const hh = port.openNetlinkIn(host.path);
    handles.push(hh);
    for (let i = 0; i < 5; i++) {
      const ph = port.openNetlinkIn(pod.path);
      const fd = port.openNetnsFd(pod.path);
      try {
        await hh.createVeth({
          name: `veth${i}`,
          mtu: 1450,
          peerName: `eth${i}`,
          peerNetnsFd: fd,
          peerMtu: 1450,
        });
      } finally {
        port.closeFd(fd);
      }
      const [hostEnd, podEnd] = await Promise.all([hh.getLink(`veth${i}`), ph.getLink(`eth${i}`)]);
      port.writeSysctlIn(pod.path, `net/ipv6/conf/eth${i}/accept_dad`, '0');
      await Promise.all([hh.setLinkUp(hostEnd!.index), ph.setLinkUp(podEnd!.index)]);
      await ph.addAddress({
        family: 4,
        ifindex: podEnd!.index,
        address: `10.244.1.${10 + i}`,
        prefixLen: 32,
      });
      await ph.addAddress({
        family: 6,
        ifindex: podEnd!.index,
        address: `fd00:244:1::${10 + i}`,
        prefixLen: 128,
        noDad: true,
      });
      await ph.replaceRoute({ family: 4, dst: '169.254.1.1/32', ifindex: podEnd!.index, scope: 'link' });
      await ph.replaceRoute({
        family: 4,
        dst: '0.0.0.0/0',
        gateway: '169.254.1.1',
        ifindex: podEnd!.index,
        onlink: true,
      });
      await ph.replaceNeighbour({
        family: 4,
        ifindex: podEnd!.index,
        address: '169.254.1.1',
        mac: hostEnd!.mac,
      });
      await hh.replaceRoute({
        family: 4,
        dst: `10.244.1.${10 + i}/32`,
        ifindex: hostEnd!.index,
        protocol: PROTO,
      });
      ph.close();
    }
    expect(ipJson<IpRoute[]>(pod.name, 'route', 'show', 'default')).toMatchObject([
      { gateway: '169.254.1.1', dev: 'eth4' },
    ]);
    expect(ipJson<IpRoute[]>(host.name, 'route', 'show', 'proto', String(PROTO))).toHaveLength(5);
  });

  it("makes a burst's requests as their datagrams go, not all before the first is sent", async () => {
    const { ns } = track(await setup(pool, 'lazy'));
    const sock = withNetns(ns.path, () => new RtnlSocket());
    try {
      const total = 2000;
      let made = 0;
      const pending = sock.burst({
        length: total,
        at: (i) => {
          made++;
          const dst = `10.${100 + (i >> 8)}.${i & 255}.0/24`;
          return routeRequest({ family: 4, dst, type: 'blackhole', protocol: PROTO }, CREATE_REPLACE);
        },
      });
      // The first datagrams (4 lanes of 64) go at once; the rest are made as ACKs come back.
      const before = made;
      const results = await pending;
      expect(before).toBeGreaterThan(0);
      expect(before).toBeLessThanOrEqual(4 * 64);
      expect(made).toBe(total);
      expect(results.filter((r) => r !== undefined)).toEqual([]);
      expect(ip(ns.name, 'route', 'show', 'proto', String(PROTO)).trim().split('\n')).toHaveLength(total);

      // A request that cannot be made is that request's error; the rest of its datagram still goes.
      const again = await sock.burst({
        length: 100,
        at: (i) => {
          if (i === 63) throw new TypeError('no body for this one');
          return routeRequest(
            { family: 4, dst: `10.99.${i}.0/24`, type: 'blackhole', protocol: PROTO },
            CREATE_REPLACE,
          );
        },
      });
      expect(again[63]).toMatchObject({
        errno: 'EINVAL',
        message: expect.stringContaining('no body for this one'),
      });
      expect(again.filter((r) => r !== undefined)).toHaveLength(1);
      expect(
        ip(ns.name, 'route', 'show', 'proto', String(PROTO), 'root', '10.99.0.0/16').trim().split('\n'),
      ).toHaveLength(99);
    } finally {
      sock.close();
    }
  });

  it('programs a 5,000-route burst and reports per-route failures', async () => {
    const { ns, h, dev } = track(await setup(pool, 'burst'));
    const routes: RouteInfo[] = [];
    for (let i = 0; i < 5000; i++) {
      routes.push({
        family: 4,
        dst: `10.${100 + (i >> 8)}.${i & 255}.0/24`,
        gateway: '10.88.0.2',
        ifindex: dev,
        protocol: PROTO,
      });
    }
    // The agent's own subscription (16 MiB forced buffer) absorbs the whole burst without a drop.
    const seen: RouteEvent[] = [];
    const sub = withNetns(ns.path, () => createNetlinkEvents().subscribeRouteEvents((e) => seen.push(e)));
    await h.replaceRoutes(routes);
    await waitFor(() => seen.filter((e) => e.type === 'add').length >= 5000, 5000);
    expect(seen.some((e) => e.type === 'overflow')).toBe(false);
    sub.close();
    await h.replaceRoutes(routes); // again, unchanged: nothing added, nothing fails
    const listed = await h.listRoutes({ family: 4, protocol: PROTO });
    expect(listed).toHaveLength(5000);
    expect(ip(ns.name, 'route', 'show', 'proto', String(PROTO)).trim().split('\n')).toHaveLength(5000);

    const results = await h.replaceRoutesSettled([
      routes[0]!,
      { family: 4, dst: '10.250.0.0/24', ifindex: 9999, protocol: PROTO },
      routes[1]!,
    ]);
    expect(results[0]).toBeUndefined();
    expect(results[1]).toBeInstanceOf(LinkNotFoundError);
    expect(results[2]).toBeUndefined();
    // A failure in the message that carries the datagram's only ACK request.
    const lastFails = await h.replaceRoutesSettled([
      routes[0]!,
      { family: 4, dst: '10.250.1.0/24', ifindex: 9998, protocol: PROTO },
    ]);
    expect(lastFails[0]).toBeUndefined();
    expect(lastFails[1]).toMatchObject({ errno: 'ENODEV', op: 'RTM_NEWROUTE 10.250.1.0/24 dev #9998' });
    // Failures spread over several datagrams of a large burst are all reported, in place.
    const mixed = routes.slice(0, 300).map((r, i) => (i % 70 === 69 ? { ...r, ifindex: 9997 } : r));
    const mixedResults = await h.replaceRoutesSettled(mixed);
    expect(mixedResults.flatMap((e, i) => (e === undefined ? [] : [i]))).toEqual([69, 139, 209, 279]);
    await expect(
      h.replaceRoutes([{ family: 4, dst: '10.250.0.0/24', ifindex: 9999, protocol: PROTO }]),
    ).rejects.toBeInstanceOf(LinkNotFoundError);
  });
});

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
