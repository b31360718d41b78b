import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip } from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { direct, throughTunnel, untilPairRoutes } from './pod-paths.ts';

/**
 * EC2's and Azure's dual-stack nodes: DHCPv6 gives each node its IPv6 address as a /128, and the /64
 * around it is on-link only through the route a router advertisement adds (`proto ra`). Two nodes on
 * one L2, addressed so, auto mode, real agents: they count their /128 with that /64, publish it, and
 * route each other's IPv6 pods directly, as over IPv4. When the RA's route goes from node-2 while both
 * run, node-2's /128 is on no subnet any more: its kernel watch asks for a pass, it tunnels, publishes
 * no IPv6 subnet, and node-1 tunnels back to it. Read from the kernel and the API; the pods talk
 * throughout.
 */
const skip = testbedSkipReason();

const title = 'cluster: /128 node addresses inside an RA on-link /64 (auto mode, real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    // The agents start again on the new addressing, as they would on nodes configured so from boot.
    for (const n of tb.nodes()) {
      await tb.stopAgent(n.name);
      ip(n.ns, '-6', 'addr', 'del', `${n.plan.v6}/64`, 'dev', 'eth0');
      ip(n.ns, '-6', 'addr', 'add', `${n.plan.v6}/128`, 'dev', 'eth0', 'nodad');
      ip(n.ns, '-6', 'route', 'add', 'fd00:100::/64', 'dev', 'eth0', 'proto', 'ra');
      ip(n.ns, '-6', 'route', 'replace', 'default', 'via', n.plan.gateway6);
    }
    for (const n of tb.nodes()) await tb.startAgent(n.name);
    await tb.addPod('node-1');
    await tb.addPod('node-2');
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const published = async (node: string): Promise<string | undefined> => {
    const o = (await tb.api.call('GET', `/api/v1/nodes/${node}`)) as {
      metadata: { annotations?: Record<string, string> };
    };
    return o.metadata.annotations?.['trellis.dev/direct-subnets-v6'];
  };

  it('each node routes the other’s IPv6 pods directly, publishes the /64, and the pods talk', async () => {
    const [n1, n2] = [tb.node('node-1'), tb.node('node-2')];
    await untilPairRoutes(tb, [n1, n2], direct);
    expect(await published('node-1')).toBe('fd00:100::/64');
    expect(await published('node-2')).toBe('fd00:100::/64');
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 60_000);

  it("the RA's route gone from node-2 while running: both tunnel IPv6 (IPv4 stays direct), the pods still talk", async () => {
    const [n1, n2] = [tb.node('node-1'), tb.node('node-2')];
    ip(n2.ns, '-6', 'route', 'del', 'fd00:100::/64', 'dev', 'eth0', 'proto', 'ra');
    await untilPairRoutes(tb, [n1, n2], (family) => (family === 6 ? throughTunnel(6) : direct()));
    expect(await published('node-2')).toBe(''); // published empty: routes directly on no subnet
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 60_000);
});
