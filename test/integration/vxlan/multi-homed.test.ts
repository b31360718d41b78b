import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, strictRpFilter } from '../../support/netns.ts';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import { plugIn } from '../../support/testbed/wiring.ts';
import { logsSince, within } from '../faults/support.ts';

/**
 * A multi-homed node under strict reverse-path filtering (rp_filter=1, RHEL's default), auto mode, real
 * agents. node-1 sits on segment 0 and gets a second leg on segment 1, where node-2 lives; node-2
 * reaches node-1's InternalIP over that leg (a host route), so traffic between the nodes themselves is
 * symmetric and passes the filter. The pods' path must be symmetric too: were node-1 to route node-2's
 * pods directly over its leg while node-2 (which has no leg on node-1's subnet) tunnels back, node-2's
 * kernel would drop node-1's pods' packets (they arrive on eth0, their source routes via trellis.v4)
 * and node-1 the replies. Read from the kernel: both nodes route each other's pods through VXLAN, and
 * the pods talk.
 */
const skip = testbedSkipReason();

const LEG = { v4: '10.100.1.50', v6: 'fd00:100:1::50' };

const title = 'cluster: a multi-homed node under strict rp_filter (auto mode, real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let p1: TestbedPod;
  let p2: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 1 }, { nodes: 1 }] });
    p1 = await tb.addPod('node-1');
    p2 = await tb.addPod('node-2');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it("routes each other's pods through VXLAN both ways, and the pods talk", async () => {
    const n1 = tb.node('node-1');
    const n2 = tb.node('node-2');
    const mark = n1.logs.length;
    plugIn(tb.fabricNs, n1.ns, 'eth1', 'n1leg', 1);
    ip(n1.ns, 'addr', 'add', `${LEG.v4}/24`, 'dev', 'eth1');
    ip(n1.ns, 'addr', 'add', `${LEG.v6}/64`, 'dev', 'eth1', 'nodad');
    ip(n2.ns, 'route', 'add', `${n1.plan.v4}/32`, 'via', LEG.v4);
    ip(n2.ns, '-6', 'route', 'add', `${n1.plan.v6}/128`, 'via', LEG.v6);
    strictRpFilter(n1.ns, ['all', 'default', 'eth0', 'eth1', 'trellis.v4']);
    strictRpFilter(n2.ns, ['all', 'default', 'eth0', 'trellis.v4']);
    // Node to node works over the leg, both ways, under the filter.
    expect((await tb.ping(n1.ns, n2.plan.v4)).rttMs).toBeDefined();
    expect((await tb.ping(n2.ns, n1.plan.v4)).rttMs).toBeDefined();

    // A connected subnet appearing asks for a full pass; the one after the leg decides.
    await within(10_000, 'node-1: a pass after the leg was added', () =>
      logsSince(tb, 'node-1', mark).some((l) => l.msg === 'reconciled'),
    );
    const devOf = (node: string, dst: string): string | undefined =>
      (tb.routes(node, 4) as { dst: string; dev?: string }[]).find((r) => r.dst === dst)?.dev;
    expect(devOf('node-1', n2.plan.podCIDRs[0])).toBe('trellis.v4');
    expect(devOf('node-2', n1.plan.podCIDRs[0])).toBe('trellis.v4');

    for (const [from, to] of [
      [p1, p2],
      [p2, p1],
    ] as const) {
      expect((await tb.ping(from.ns, to.v4, 3)).rttMs, `${from.name} -> ${to.name} (IPv4)`).toBeDefined();
      expect((await tb.ping(from.ns, to.v6, 3)).rttMs, `${from.name} -> ${to.name} (IPv6)`).toBeDefined();
    }
  }, 60_000);
});
