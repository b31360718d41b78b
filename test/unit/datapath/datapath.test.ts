import { describe, expect, it } from 'vitest';
import { convertResult, parseResult } from '../../../pkg/cni/result.ts';
import { BackgroundDeleter } from '../../../pkg/datapath/background-deleter.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import { hostVethName, isHostVethName } from '../../../pkg/datapath/names.ts';
import { podRoutes, withoutHeldDefaults } from '../../../pkg/datapath/pod-routes.ts';
import { attachmentResult } from '../../../pkg/datapath/result.ts';
import { UndoStack } from '../../../pkg/datapath/undo.ts';

describe('host veth names', () => {
  it('are deterministic, 15 characters, recognisable, and differ per (container, ifname)', () => {
    const a = hostVethName('abc', 'eth0');
    expect(a).toBe(hostVethName('abc', 'eth0'));
    expect(a).toHaveLength(15);
    expect(isHostVethName(a)).toBe(true);
    expect(hostVethName('abc', 'eth1')).not.toBe(a);
    expect(hostVethName('ab', 'ceth0')).not.toBe(hostVethName('abc', 'eth0'));
    expect(isHostVethName('trellis.v4')).toBe(false);
    expect(isHostVethName('eth0')).toBe(false);
  });
});

describe('attachmentResult', () => {
  const att = {
    containerId: 'c',
    ifname: 'eth0',
    netns: '/var/run/netns/p',
    host: { name: 'trl000000000000', index: 7, mac: 'aa:aa:aa:aa:aa:aa' },
    pod: { name: 'eth0', index: 2, mac: 'bb:bb:bb:bb:bb:bb', mtu: 1450 },
    addresses: [
      { family: 4 as const, address: '10.244.1.5', range: '10.244.1.0/24' },
      { family: 6 as const, address: 'fd00::5', range: 'fd00::/64' },
    ],
    routes: podRoutes([4, 6], { mtu: 1450 }),
  };

  it('is a valid 1.1 result that converts to 0.4.0 and 0.3.1 shapes chained plugins accept', () => {
    const r = attachmentResult(att, { nameservers: ['10.96.0.10'] });
    expect(parseResult(r, '1.1.0')).toEqual(r);
    expect(r.ips).toEqual([
      { address: '10.244.1.5/32', gateway: '169.254.1.1', interface: 1 },
      { address: 'fd00::5/128', gateway: 'fe80::1', interface: 1 },
    ]);
    expect(r.interfaces?.[1]).toEqual({
      name: 'eth0',
      mac: 'bb:bb:bb:bb:bb:bb',
      mtu: 1450,
      sandbox: '/var/run/netns/p',
    });
    const legacy = convertResult(r, '0.4.0');
    expect(legacy.ips?.map((i) => i.version)).toEqual(['4', '6']);
    expect(parseResult(legacy, '0.4.0')).toEqual(legacy);
    expect(parseResult(convertResult(r, '0.3.1'), '0.3.1').ips).toHaveLength(2);
  });

  it('reports the routes ADD programmed, with the MTU of traffic that leaves the node', () => {
    expect(attachmentResult(att).routes).toEqual([
      { dst: '0.0.0.0/0', gw: '169.254.1.1' },
      { dst: '::/0', gw: 'fe80::1' },
    ]);
    const split = podRoutes([4, 6], {
      mtu: 1500,
      routeMtu: 1430,
      nodeCidrs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
    });
    const r = attachmentResult({ ...att, routes: split });
    expect(r.routes).toEqual([
      { dst: '0.0.0.0/0', gw: '169.254.1.1', mtu: 1430 },
      { dst: '10.244.1.0/24', gw: '169.254.1.1' },
      { dst: '::/0', gw: 'fe80::1', mtu: 1430 },
      { dst: 'fd00:10:244:1::/64', gw: 'fe80::1' },
    ]);
    expect(parseResult(r, '1.1.0')).toEqual(r);
  });
});

describe('podRoutes', () => {
  const nodeCidrs = ['10.244.1.0/24', 'fd00:10:244:1::/64'];

  it('only the families the pod has, and no MTU split when traffic leaving the node needs none', () => {
    expect(podRoutes([4], { mtu: 1500, nodeCidrs })).toEqual([
      { family: 4, dst: '0.0.0.0/0', gateway: '169.254.1.1' },
    ]);
    // A route MTU that is not below the interface's (host-gw, or --mtu) changes nothing.
    expect(podRoutes([6], { mtu: 1400, routeMtu: 1400, nodeCidrs })).toEqual([
      { family: 6, dst: '::/0', gateway: 'fe80::1' },
    ]);
  });

  it('no IPv6 route below 1280, where the kernel would refuse every datagram: IPv6 then stays at the interface MTU', () => {
    // A 1340-byte underlay with an IPv6 InternalIP (overhead 70): no IPv6 tunnel fits in 1270.
    expect(podRoutes([4, 6], { mtu: 1340, routeMtu: 1270, nodeCidrs })).toEqual([
      { family: 4, dst: '0.0.0.0/0', gateway: '169.254.1.1', mtu: 1270 },
      { family: 4, dst: '10.244.1.0/24', gateway: '169.254.1.1' },
      { family: 6, dst: '::/0', gateway: 'fe80::1' },
    ]);
    expect(podRoutes([6], { mtu: 1500, routeMtu: 1280, nodeCidrs })[0]).toMatchObject({ mtu: 1280 });
  });

  it("split: the default route at the overlay MTU, this node's pod CIDRs of the same family at full MTU", () => {
    expect(podRoutes([6], { mtu: 1500, routeMtu: 1430, nodeCidrs })).toEqual([
      { family: 6, dst: '::/0', gateway: 'fe80::1', mtu: 1430 },
      { family: 6, dst: 'fd00:10:244:1::/64', gateway: 'fe80::1' },
    ]);
  });
});

describe('withoutHeldDefaults', () => {
  const wanted = podRoutes([4, 6], { mtu: 1500, routeMtu: 1450, nodeCidrs: ['10.244.1.0/24'] });

  it("leaves out a family's default route when the pod's main table has one, whatever its metric, device or type", () => {
    const kept = withoutHeldDefaults(wanted, [
      { family: 4, dst: '0.0.0.0/0', gateway: '192.168.5.1', ifindex: 2, metric: 100, type: 'unicast' },
      { family: 4, dst: '192.168.5.0/24', ifindex: 2, scope: 'link' },
    ]);
    // The other routes stay: keepExisting settles those.
    expect(kept).toEqual(wanted.filter((r) => r.dst !== '0.0.0.0/0'));
    // A multipath default (listed by key only) holds it too.
    expect(withoutHeldDefaults(wanted, [{ family: 6, dst: '::/0', protocol: 3, unreadable: true }])).toEqual(
      wanted.filter((r) => r.dst !== '::/0'),
    );
  });

  it("keeps them when the pod has none, or only in another table (an sbr or VRF table serves that interface's sources)", () => {
    expect(withoutHeldDefaults(wanted, [])).toEqual(wanted);
    expect(
      withoutHeldDefaults(wanted, [
        { family: 4, dst: '0.0.0.0/0', gateway: '192.168.5.1', ifindex: 2, table: 200 },
        { family: 6, dst: 'fd99::/64', ifindex: 2 },
      ]),
    ).toEqual(wanted);
  });
});

describe('KeyedMutex', () => {
  it('serialises one key and runs different keys in parallel', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const step = (tag: string, ms: number) =>
      new Promise<void>((r) =>
        setTimeout(() => {
          order.push(tag);
          r();
        }, ms),
      );
    await Promise.all([
      m.run('a', () => step('a1', 30)),
      m.run('a', () => step('a2', 1)),
      m.run('b', () => step('b1', 5)),
    ]);
    expect(order).toEqual(['b1', 'a1', 'a2']);
    expect(m.size).toBe(0);
  });
});

describe('UndoStack', () => {
  it('undoes in reverse order and collects undo failures without throwing', async () => {
    const u = new UndoStack();
    const done: string[] = [];
    u.push('first', () => void done.push('first'));
    u.push('broken', () => {
      throw new Error('boom');
    });
    u.push('last', async () => void done.push('last'));
    const failures = await u.unwind();
    expect(done).toEqual(['last', 'first']);
    expect(failures.map((f) => f.what)).toEqual(['broken']);
  });

  it('forgets everything after commit', async () => {
    const u = new UndoStack();
    let ran = false;
    u.push('x', () => {
      ran = true;
    });
    u.commit();
    expect(await u.unwind()).toEqual([]);
    expect(ran).toBe(false);
  });
});

describe('BackgroundDeleter', () => {
  it('orders work per name, lets callers wait for it, and reports failures without rejecting', async () => {
    const errors: string[] = [];
    const d = new BackgroundDeleter((name) => errors.push(name));
    let finished = false;
    d.schedule('trl1', async () => {
      await new Promise((r) => setTimeout(r, 20));
      finished = true;
    });
    d.schedule('trl2', async () => {
      throw new Error('gone');
    });
    expect(d.isPending('trl1')).toBe(true);
    await d.wait('trl1');
    expect(finished).toBe(true);
    await d.drain();
    expect(errors).toEqual(['trl2']);
    expect(d.isPending('trl1')).toBe(false);
  });

  it('lets an ADD wait for every pending pair whose pod end is in its namespace, and no other', async () => {
    const d = new BackgroundDeleter(() => {});
    const done: string[] = [];
    const slow = (name: string, ms: number) => async () => {
      await new Promise((r) => setTimeout(r, ms));
      done.push(name);
    };
    d.schedule('trlA', slow('trlA', 30), '/var/run/netns/pod-1');
    d.schedule('trlB', slow('trlB', 10), '/var/run/netns/pod-1');
    d.schedule('trlC', slow('trlC', 200), '/var/run/netns/pod-2');
    d.schedule('trlD', slow('trlD', 200)); // a GC orphan: namespace unknown
    await d.waitForNetns('/var/run/netns/pod-1');
    expect(done.sort()).toEqual(['trlA', 'trlB']);
    await d.waitForNetns('/var/run/netns/pod-3'); // nothing there: at once
    expect(done).toHaveLength(2);
    await d.drain();
    await d.waitForNetns('/var/run/netns/pod-2');
    expect(done).toHaveLength(4);
  });
});
