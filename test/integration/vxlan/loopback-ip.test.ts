import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, ipJson, strictRpFilter } from '../../support/netns.ts';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import { throughTunnel, untilPairRoutes } from './pod-paths.ts';

/**
 * A node whose InternalIPs sit on lo as a /32 and a /128 (as with BGP-announced node addresses), auto
 * mode, real agents, strict reverse-path filtering. node-1 and node-2 share segment 0; node-1's
 * InternalIPs come from a range of their own (10.100.99.11, fd00:100:99::11), which node-2 reaches
 * through host routes via node-1's eth0. node-2 finds them on no subnet of its own and tunnels to node-1,
 * so node-1 must tunnel back (routed directly, its pods' packets would come in on node-2's eth0 while
 * node-2's route to them is the tunnel: strict rp_filter drops them, and node-1 drops node-2's likewise).
 * The MTUs come from eth0 (1500), the default route's device, not from lo (65536). Read from the kernel.
 */
const skip = testbedSkipReason();

const ON_LO = { v4: '10.100.99.11', v6: 'fd00:100:99::11' };

type Link = { ifname: string; mtu: number; linkinfo?: { info_data?: { local?: string; local6?: string } } };

const title =
  'cluster: a node whose InternalIP is on lo (/32, /128), strict rp_filter (auto mode, real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let p1: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    const n1 = tb.node('node-1');
    const n2 = tb.node('node-2');
    // The agent starts again on the new addressing, as it would on a node configured so from boot.
    await tb.stopAgent('node-1');
    ip(n1.ns, 'addr', 'add', `${ON_LO.v4}/32`, 'dev', 'lo');
    ip(n1.ns, 'addr', 'add', `${ON_LO.v6}/128`, 'dev', 'lo');
    ip(n2.ns, 'route', 'add', `${ON_LO.v4}/32`, 'via', n1.plan.v4);
    ip(n2.ns, '-6', 'route', 'add', `${ON_LO.v6}/128`, 'via', n1.plan.v6);
    await tb.api.call(
      'PATCH',
      '/api/v1/nodes/node-1/status',
      {
        status: {
          addresses: [
            { type: 'InternalIP', address: ON_LO.v4 },
            { type: 'InternalIP', address: ON_LO.v6 },
            { type: 'Hostname', address: 'node-1' },
          ],
        },
      },
      'application/merge-patch+json',
    );
    strictRpFilter(n1.ns, ['all', 'default', 'eth0']);
    strictRpFilter(n2.ns, ['all', 'default', 'eth0', 'trellis.v4']);
    await tb.startAgent('node-1');
    // A recreated device starts from `default` (1); set it anyway, whatever the agent did.
    strictRpFilter(n1.ns, ['trellis.v4']);
    p1 = await tb.addPod('node-1');
    await tb.addPod('node-2');
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;

    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it("node-1's VXLAN devices use the InternalIPs on lo and take eth0's MTU less the overhead, not lo's", () => {
    const n1 = tb.node('node-1');
    const dev = (name: string) => ipJson<Link[]>(n1.ns, '-d', 'link', 'show', 'dev', name)[0]!;
    expect(dev('trellis.v4').linkinfo?.info_data?.local).toBe(ON_LO.v4);
    expect(dev('trellis.v6').linkinfo?.info_data?.local6).toBe(ON_LO.v6);
    expect([dev('trellis.v4').mtu, dev('trellis.v6').mtu]).toEqual([1450, 1430]);
  });

  it("node-1's pods get eth0's MTU (1500), not lo's, on their interface and every route (auto mode)", () => {
    expect(tb.conflist('node-1').plugins[0]).toMatchObject({ mtu: 1500 });
    const eth0 = ipJson<Link[]>(p1.ns, 'link', 'show', 'dev', 'eth0')[0]!;
    expect(eth0.mtu).toBe(1500);
    for (const family of [4, 6] as const) {
      const [dflt] = ipJson<{ metrics?: { mtu?: number }[] }[]>(
        p1.ns,
        `-${family}`,
        'route',
        'show',
        'default',
      );
      // No route MTU: the node clamps TCP into its tunnels (cluster.test.ts).
      expect(dflt, `IPv${family} default route`).toBeDefined();
      expect(dflt?.metrics?.[0]?.mtu, `IPv${family} default route`).toBeUndefined();
    }
  });

  it("both nodes route each other's pods through VXLAN, and the pods talk both ways", async () => {
    await untilPairRoutes(tb, [tb.node('node-1'), tb.node('node-2')], throughTunnel);
    // The IPv6 route moved from eth0 to trellis.v6 in place of the direct one without an error.
    const failed = (node: string) =>
      tb.node(node).logs.filter((l) => l.msg === 'route could not be programmed');
    expect([...failed('node-1'), ...failed('node-2')]).toEqual([]);

    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 60_000);
});
