import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipJson, strictRpFilter } from '../../support/netns.ts';
import { tcpMss } from '../../support/tcp-mss.ts';
import {
  Testbed,
  type TestbedNode,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';
import { nftTable, within } from '../faults/support.ts';
import { direct, throughTunnel, untilPairRoutes } from './pod-paths.ts';

/**
 * Changing --mode the way install.md says (a rolling restart of the DaemonSet) runs nodes of two modes
 * side by side for a while. host-gw to vxlan on one segment: the switched node must not drop the peer
 * that publishes no VTEP yet (it used to: "node skipped", no route, no pod traffic between the two);
 * and back, the vxlan node routes the peer that withdrew its VTEP directly.
 * auto to vxlan and back, under strict reverse-path filtering: the auto node must tunnel to the vxlan
 * one, which tunnels to everyone (it used to route it directly, and the filter dropped the pods' IPv4
 * packets both ways until both had switched). The pods started under auto keep the full MTU on their
 * routes, so TCP between them through the tunnel relies on both nodes' MSS clamp, vxlan mode's too.
 * Then to host-gw: no VXLAN device and no clamp left on that node, pods still reach each other.
 */
const skip = testbedSkipReason();

const title = 'cluster: a rolling change from host-gw to vxlan and back keeps pod traffic (real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }], mode: 'host-gw' });
    await tb.addPod('node-1');
    await tb.addPod('node-2');
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const routeTo = (from: TestbedNode, to: TestbedNode, family: 4 | 6) =>
    tb.routes(from.name, family).find((r) => r.dst === to.plan.podCIDRs[family === 4 ? 0 : 1]);

  it('one node switched: it routes the host-gw peer directly; both switched: both tunnel; back one by one: direct; every pod reaches every pod throughout', async () => {
    const [n1, n2] = tb.nodes();
    expect((await tb.connectivityMatrix()).failures).toEqual([]);

    await tb.restartAgent('node-1', { signal: 'SIGTERM', mode: 'vxlan' });
    for (const family of [4, 6] as const) {
      await within(
        5000,
        `node-1: IPv${family} route to node-2`,
        () => routeTo(n1!, n2!, family)?.dev === 'eth0',
      );
    }
    expect((await tb.connectivityMatrix()).failures).toEqual([]);

    await tb.restartAgent('node-2', { signal: 'SIGTERM', mode: 'vxlan' });
    await untilPairRoutes(tb, [n1!, n2!], throughTunnel, 5000);
    expect((await tb.connectivityMatrix()).failures).toEqual([]);

    // And back: the host-gw node withdraws its VTEP annotations, so the vxlan one routes it directly.
    await tb.restartAgent('node-1', { signal: 'SIGTERM', mode: 'host-gw' });
    await untilPairRoutes(tb, [n1!, n2!], direct, 5000);
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
    await tb.restartAgent('node-2', { signal: 'SIGTERM', mode: 'host-gw' });
    await untilPairRoutes(tb, [n1!, n2!], direct, 5000);
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 120_000);
});

const autoTitle =
  'cluster: a rolling change from auto to vxlan, back, and to host-gw keeps pod traffic under strict rp_filter (real agents)';
describe.skipIf(skip !== undefined)(
  skip === undefined ? autoTitle : `${autoTitle} (skipped: ${skip})`,
  () => {
    let tb: Testbed;
    let pods: [TestbedPod, TestbedPod];

    beforeAll(async () => {
      tb = await Testbed.create({ segments: [{ nodes: 2 }], mode: 'auto' });
      for (const n of tb.nodes()) strictRpFilter(n.ns, ['all', 'default', 'eth0', 'trellis.v4']);
      pods = [await tb.addPod('node-1'), await tb.addPod('node-2')];
    }, 120_000);

    afterAll(async () => {
      if (tb === undefined) return;
      await tb.teardown();
      expect(tb.leftovers()).toEqual([]);
    });

    it('one node switched to vxlan: both tunnel, TCP clamped; back: both direct; to host-gw: no device, no clamp; every pod reaches every pod', async () => {
      const [n1, n2] = tb.nodes();
      const both = (dev: (family: 4 | 6) => string) => untilPairRoutes(tb, [n1!, n2!], dev, 5000);
      await both(direct);
      expect((await tb.connectivityMatrix()).failures).toEqual([]);

      await tb.restartAgent('node-1', { signal: 'SIGTERM', mode: 'vxlan' });
      await both(throughTunnel);
      expect((await tb.connectivityMatrix()).failures).toEqual([]);
      // trellis.v4 is 1450 here: 1410 of MSS, less 12 of timestamps in every segment.
      const [p1, p2] = pods;
      expect(await tcpMss(p1.ns, p2.ns, p2.v4)).toEqual({ client: 1398, server: 1398, received: 1 << 20 });

      await tb.restartAgent('node-1', { signal: 'SIGTERM', mode: 'auto' });
      await both(direct);
      expect((await tb.connectivityMatrix()).failures).toEqual([]);

      await tb.restartAgent('node-1', { signal: 'SIGTERM', mode: 'host-gw' });
      await both(direct);
      expect((await tb.connectivityMatrix()).failures).toEqual([]);
      expect(ipJson<unknown[]>(n1!.ns, 'link', 'show', 'type', 'vxlan')).toEqual([]);
      const table = nftTable(tb, 'node-1');
      expect(table).toContain('masquerade');
      expect(table).not.toContain('maxseg');
      expect(await tcpMss(p1.ns, p2.ns, p2.v4)).toEqual({ client: 1448, server: 1448, received: 1 << 20 });
    }, 120_000);
  },
);
