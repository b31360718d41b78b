import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExtendedNetlinkHandle } from '../../../pkg/netlink/index.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, nsSysctl, type TestNetns } from '../../support/netns.ts';

/**
 * NetlinkHandle.routeTo against the kernel, in a throwaway namespace with two uplinks (veth pairs whose
 * both ends stay inside it): the route a lookup matched and every device it sends through.
 */
const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

describe.skipIf(netnsSkipReason !== undefined)('routeTo (RTM_GETROUTE for one address)', () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let h: ExtendedNetlinkHandle;
  const index: Record<string, number> = {};

  beforeAll(() => {
    ns = pool.add('rlook');
    for (const [up, v4, v6] of [
      ['up1', '169.254.21', 'fd00:21:'],
      ['up2', '169.254.22', 'fd00:22:'],
    ] as const) {
      ip(ns.name, 'link', 'add', up, 'type', 'veth', 'peer', 'name', `p-${up}`);
      ip(ns.name, 'link', 'set', up, 'up');
      ip(ns.name, 'link', 'set', `p-${up}`, 'up');
      ip(ns.name, 'addr', 'add', `${v4}.2/30`, 'dev', up);
      ip(ns.name, 'addr', 'add', `${v6}:2/64`, 'dev', up, 'nodad');
      index[up] = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', up)[0]!.ifindex;
    }
    ip(ns.name, 'addr', 'add', '10.100.99.11/32', 'dev', 'lo');
    ip(
      ns.name,
      'route',
      'add',
      'default',
      'nexthop',
      'via',
      '169.254.21.1',
      'nexthop',
      'via',
      '169.254.22.1',
    );
    ip(
      ns.name,
      '-6',
      'route',
      'add',
      'default',
      'nexthop',
      'via',
      'fd00:21::1',
      'nexthop',
      'via',
      'fd00:22::1',
    );
    h = port!.openNetlinkIn(ns.path);
  });

  afterAll(() => {
    h?.close();
    pool.cleanup();
  });

  it('a multipath default route: the default prefix and both devices, for both families', async () => {
    const v4 = await h.routeTo('8.8.8.8');
    expect(v4).toMatchObject({ family: 4, dst: '0.0.0.0/0' });
    expect(v4?.ifindexes.sort()).toEqual([index.up1, index.up2].sort());
    const v6 = await h.routeTo('2001:4860:4860::8888');
    expect(v6).toMatchObject({ family: 6, dst: '::/0' });
    expect(v6?.ifindexes.sort()).toEqual([index.up1, index.up2].sort());
  });

  it("keyHolder: a route of ours with a nexthop someone appended (IPv6 merges it) is no step's to replace", async () => {
    ip(ns.name, '-6', 'route', 'add', 'fd00:77::/64', 'via', 'fd00:21::1', 'proto', '126');
    // The handle's per-node step writes (peer-apply.ts PeerStepWrites), not in its port type.
    const holder = (dst: string): Promise<unknown> =>
      (h as unknown as { keyHolder(dst: string): Promise<unknown> }).keyHolder(dst);
    try {
      expect(await holder('fd00:77::/64')).toEqual({ kind: 'route', protocol: 126, table: 254 });
      ip(ns.name, '-6', 'route', 'append', 'fd00:77::/64', 'via', 'fd00:22::1');
      expect(await holder('fd00:77::/64')).toEqual({
        kind: 'unknown',
        why: 'a multipath route holds fd00:77::/64',
      });
    } finally {
      // One nexthop per delete; the namespace goes with the file's other routes anyway.
      for (let i = 0; i < 2; i++) {
        try {
          ip(ns.name, '-6', 'route', 'del', 'fd00:77::/64');
        } catch {
          break;
        }
      }
    }
  });

  it('a more specific route: its own prefix and device, on-link (no gateway: the connected /30)', async () => {
    expect(await h.routeTo('169.254.22.1')).toEqual({
      family: 4,
      dst: '169.254.22.0/30',
      ifindexes: [index.up2],
      onLink: true,
    });
  });

  it('a default route on a nexthop group shown by id only (nexthop_compat_mode=0): the members’ devices', async () => {
    try {
      ip(ns.name, 'nexthop', 'add', 'id', '1', 'via', '169.254.21.1', 'dev', 'up1');
      ip(ns.name, 'nexthop', 'add', 'id', '2', 'via', '169.254.22.1', 'dev', 'up2');
      ip(ns.name, 'nexthop', 'add', 'id', '10', 'group', '1/2');
      ip(ns.name, 'route', 'replace', 'default', 'nhid', '10');
      nsSysctl(ns.name, 'net.ipv4.nexthop_compat_mode', '0');
      expect(
        ipJson<{ nexthops?: unknown }[]>(ns.name, 'route', 'show', 'default')[0]?.nexthops,
      ).toBeUndefined();
      const v4 = await h.routeTo('8.8.8.8');
      expect(v4).toMatchObject({ family: 4, dst: '0.0.0.0/0' });
      expect(v4?.ifindexes.sort()).toEqual([index.up1, index.up2].sort());
    } finally {
      nsSysctl(ns.name, 'net.ipv4.nexthop_compat_mode', '1');
      ip(
        ns.name,
        'route',
        'replace',
        'default',
        'nexthop',
        'via',
        '169.254.21.1',
        'nexthop',
        'via',
        '169.254.22.1',
      );
      ip(ns.name, 'nexthop', 'flush');
    }
  });

  it('none where no unicast route leads: blackhole, unreachable, prohibit, a local address, no route', async () => {
    ip(ns.name, 'route', 'add', 'blackhole', '8.8.8.0/24');
    ip(ns.name, 'route', 'add', 'unreachable', '8.8.4.0/24');
    ip(ns.name, 'route', 'add', 'prohibit', '9.9.9.0/24');
    expect(await h.routeTo('8.8.8.8')).toBeUndefined();
    expect(await h.routeTo('8.8.4.4')).toBeUndefined();
    expect(await h.routeTo('9.9.9.9')).toBeUndefined();
    expect(await h.routeTo('10.100.99.11')).toBeUndefined();
    ip(ns.name, '-6', 'route', 'del', 'default');
    expect(await h.routeTo('2001:4860:4860::8888')).toBeUndefined();
  });
});

describe.skipIf(netnsSkipReason !== undefined)(
  'answersFor (a pod host route vouched for by one lookup)',
  () => {
    const pool = new NetnsPool();
    let ns: TestNetns;
    let h: ExtendedNetlinkHandle;
    let veth = 0;
    let other = 0;
    const v4 = { family: 4 as const, dst: '10.244.7.5/32', scope: 'link' as const, protocol: 126 };
    const v6 = { family: 6 as const, dst: 'fd00:10:244:7::5/128', scope: 'link' as const, protocol: 126 };

    beforeAll(() => {
      ns = pool.add('ansf');
      for (const name of ['trlhost', 'trlother']) {
        ip(ns.name, 'link', 'add', name, 'type', 'veth', 'peer', 'name', `p-${name}`);
        ip(ns.name, 'link', 'set', name, 'up');
        ip(ns.name, 'link', 'set', `p-${name}`, 'up');
      }
      veth = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', 'trlhost')[0]!.ifindex;
      other = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', 'trlother')[0]!.ifindex;
      h = port!.openNetlinkIn(ns.path);
    });

    afterAll(() => {
      h?.close();
      pool.cleanup();
    });

    it('true for the route itself, both families; false once it is gone, or is not quite it', async () => {
      ip(ns.name, 'route', 'add', v4.dst, 'dev', 'trlhost', 'proto', '126', 'scope', 'link');
      ip(ns.name, '-6', 'route', 'add', v6.dst, 'dev', 'trlhost', 'proto', '126');
      expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(true);
      expect(await h.answersFor({ ...v6, ifindex: veth })).toBe(true);
      // Another device, another protocol, another table asked for: not this route.
      expect(await h.answersFor({ ...v4, ifindex: other })).toBe(false);
      expect(await h.answersFor({ ...v6, ifindex: veth, protocol: 4 })).toBe(false);
      expect(await h.answersFor({ ...v4, ifindex: veth, table: 100 })).toBe(false);

      // Gone: a shorter prefix answers (or nothing does).
      ip(ns.name, 'route', 'add', '10.244.7.0/24', 'dev', 'trlhost', 'proto', '126');
      ip(ns.name, 'route', 'del', v4.dst, 'dev', 'trlhost');
      ip(ns.name, '-6', 'route', 'del', v6.dst, 'dev', 'trlhost');
      expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(false);
      expect(await h.answersFor({ ...v6, ifindex: veth })).toBe(false);

      // Someone else's route of the same key: another protocol, or through a gateway.
      ip(ns.name, 'route', 'add', v4.dst, 'dev', 'trlhost', 'scope', 'link');
      expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(false);
      ip(ns.name, 'addr', 'add', '169.254.30.2/30', 'dev', 'trlother');
      ip(ns.name, 'route', 'replace', v4.dst, 'via', '169.254.30.1', 'proto', '126');
      expect(await h.answersFor({ ...v4, ifindex: other })).toBe(false);
    });

    it('false where a policy rule sends the lookup to another table first', async () => {
      ip(ns.name, 'route', 'replace', v4.dst, 'dev', 'trlhost', 'proto', '126', 'scope', 'link');
      expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(true);
      ip(ns.name, 'route', 'add', v4.dst, 'dev', 'trlother', 'proto', '126', 'table', '100');
      ip(ns.name, 'rule', 'add', 'to', v4.dst, 'lookup', '100', 'pref', '100');
      try {
        expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(false);
      } finally {
        ip(ns.name, 'rule', 'del', 'pref', '100');
      }
      expect(await h.answersFor({ ...v4, ifindex: veth })).toBe(true);
    });
  },
);
