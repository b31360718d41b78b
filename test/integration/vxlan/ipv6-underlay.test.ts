import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ip, ipJson, nsPing } from '../../support/netns.ts';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';

/**
 * An IPv6-only cluster whose third node sits behind a router (so its pods are reached through
 * VXLAN), against two things IPv6 underlays do: a kubelet that lists the node's link-local address
 * as its first InternalIP, and an underlay MTU (1280-1349) too small for an IPv6 VXLAN device.
 */
const skip = testbedSkipReason();

interface VxlanDetails {
  ifname: string;
  linkinfo?: { info_data?: { local6?: string } };
}

const title = 'VXLAN over an IPv6 underlay: link-local InternalIPs, an underlay MTU below 1350';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed<6>;
  let pods: TestbedPod<6>[];

  beforeAll(async () => {
    tb = await Testbed.create({ families: [6], segments: [{ nodes: 2 }, { nodes: 1 }] });
    pods = [await tb.addPod('node-1'), await tb.addPod('node-2'), await tb.addPod('node-3')];
  }, 120_000);
  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const localOf = (node: string): string | undefined =>
    ipJson<VxlanDetails[]>(tb.node(node).ns, '-d', 'link', 'show', 'type', 'vxlan').find(
      (l) => l.ifname === 'trellis.v6',
    )?.linkinfo?.info_data?.local6;

  it("a link-local InternalIP listed first: the node's device keeps its global address, pods across the router still talk", async () => {
    const [, p2, p3] = pods as [TestbedPod<6>, TestbedPod<6>, TestbedPod<6>];
    const node2 = tb.node('node-2');
    const ll = /inet6 (fe80::[0-9a-f:]+)/.exec(
      execFileSync('ip', ['-n', node2.ns, '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'], {
        encoding: 'utf8',
      }),
    )?.[1];
    expect(ll).toBeDefined();
    expect(localOf('node-2')).toBe(node2.plan.v6);
    const marks = node2.logs.length;
    await tb.api.call(
      'PATCH',
      '/api/v1/nodes/node-2/status',
      {
        status: {
          addresses: [
            { type: 'InternalIP', address: ll },
            { type: 'InternalIP', address: node2.plan.v6 },
            { type: 'Hostname', address: 'node-2' },
          ],
        },
      },
      'application/merge-patch+json',
    );
    // node-2's own pass over the change has run (it reports the link-local InternalIP as ignored).
    await vi.waitFor(
      () => expect(node2.logs.slice(marks).some((l) => String(l.problem ?? '').includes(ll!))).toBe(true),
      { timeout: 15_000, interval: 100 },
    );
    expect(localOf('node-2')).toBe(node2.plan.v6);
    expect(node2.logs.slice(marks).filter((l) => l.msg === 'VXLAN overlay change failed')).toEqual([]);
    expect(nsPing(p2.ns, p3.v6)).toBe(true);
    expect(nsPing(p3.ns, p2.v6)).toBe(true);
  }, 60_000);

  it('an underlay MTU of 1340: no IPv6 device and one problem saying why, not EINVAL every pass; 1500 brings it back', async () => {
    const [p1, , p3] = pods as [TestbedPod<6>, TestbedPod<6>, TestbedPod<6>];
    const node1 = tb.node('node-1');
    const marks = node1.logs.length;
    for (const n of tb.nodes()) ip(n.ns, 'link', 'set', 'eth0', 'mtu', '1340');
    await vi.waitFor(
      () =>
        expect(
          node1.logs
            .slice(marks)
            .some((l) => String(l.problem ?? '').startsWith('the IPv6 VXLAN device would get MTU 1270')),
        ).toBe(true),
      { timeout: 15_000, interval: 100 },
    );
    expect(localOf('node-1')).toBeUndefined();
    try {
      // Nothing keeps failing: a pass or two more, and no device write was refused.
      await new Promise((r) => setTimeout(r, 1500));
      expect(node1.logs.slice(marks).filter((l) => l.msg === 'VXLAN overlay change failed')).toEqual([]);
      // The agent removed its device itself: no warning that a link "was deleted" or "is down".
      expect(
        node1.logs.slice(marks).filter((l) => String(l.msg).startsWith('a link routes to peers leave by')),
      ).toEqual([]);
    } finally {
      for (const n of tb.nodes()) ip(n.ns, 'link', 'set', 'eth0', 'mtu', '1500');
    }
    await vi.waitFor(() => expect(localOf('node-1')).toBe(node1.plan.v6), { timeout: 20_000, interval: 200 });
    await vi.waitFor(() => expect(nsPing(p1.ns, p3.v6)).toBe(true), {
      timeout: 20_000,
      interval: 500,
    });
  }, 90_000);
});
