import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { ip, strictRpFilter } from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { direct, throughTunnel, untilPairRoutes } from './pod-paths.ts';

/**
 * Two nodes on one L2 whose InternalIP subnets have different prefix lengths, auto mode, real agents,
 * strict reverse-path filtering. node-1 keeps 10.100.0.11/24 (fd00:100::11/64), which holds node-2's
 * address; node-2 is re-addressed to 10.100.0.12/30 (fd00:100::12/127), which does not hold node-1's,
 * and reaches the rest of the segment through an on-link route. On its own view node-1 would route
 * node-2's pods directly while node-2 tunnels back, and node-2's kernel would drop node-1's pods'
 * packets (they arrive on eth0, their source routes via trellis.v4). Each agent publishes the subnets it
 * routes directly on, so node-1 sees that node-2 does not route to it directly and tunnels too. Then
 * node-2 gets its /24 and /64 back while both agents run: it republishes, and both go direct. Read from
 * the kernel and the API; the pods talk both ways throughout.
 */
const skip = testbedSkipReason();

const NARROW = { v4: '10.100.0.12/30', v6: 'fd00:100::12/127' };

const title = 'cluster: two nodes on one L2 with different subnet prefix lengths (auto mode, real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    const n2 = tb.node('node-2');
    expect(n2.plan.v4).toBe('10.100.0.12');
    // The agent starts again on the new addressing, as it would on a node configured so from boot.
    await tb.stopAgent('node-2');
    ip(n2.ns, 'addr', 'del', `${n2.plan.v4}/24`, 'dev', 'eth0');
    ip(n2.ns, 'addr', 'add', NARROW.v4, 'dev', 'eth0');
    ip(n2.ns, 'route', 'add', '10.100.0.0/24', 'dev', 'eth0');
    ip(n2.ns, 'route', 'replace', 'default', 'via', n2.plan.gateway4);
    ip(n2.ns, '-6', 'addr', 'del', `${n2.plan.v6}/64`, 'dev', 'eth0');
    ip(n2.ns, '-6', 'addr', 'add', NARROW.v6, 'dev', 'eth0', 'nodad');
    ip(n2.ns, '-6', 'route', 'add', 'fd00:100::/64', 'dev', 'eth0');
    ip(n2.ns, '-6', 'route', 'replace', 'default', 'via', n2.plan.gateway6);
    strictRpFilter(tb.node('node-1').ns, ['all', 'default', 'eth0', 'trellis.v4']);
    strictRpFilter(n2.ns, ['all', 'default', 'eth0', 'trellis.v4']);
    await tb.startAgent('node-2');
    await tb.addPod('node-1');
    await tb.addPod('node-2');
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('each node publishes the subnets it routes peers directly on', async () => {
    const published = async (node: string): Promise<Record<string, string>> => {
      const o = (await tb.api.call('GET', `/api/v1/nodes/${node}`)) as {
        metadata: { annotations?: Record<string, string> };
      };
      const a = o.metadata.annotations ?? {};
      return Object.fromEntries(
        Object.entries(a).filter(([k]) => k.startsWith('trellis.dev/direct-subnets')),
      );
    };
    const want = {
      'node-1': {
        'trellis.dev/direct-subnets-v4': '10.100.0.0/24',
        'trellis.dev/direct-subnets-v6': 'fd00:100::/64',
      },
      'node-2': {
        'trellis.dev/direct-subnets-v4': '10.100.0.12/30',
        'trellis.dev/direct-subnets-v6': 'fd00:100::12/127',
      },
    };
    const deadline = Date.now() + 10_000;
    for (const [node, wanted] of Object.entries(want)) {
      let seen = await published(node);
      while (JSON.stringify(seen) !== JSON.stringify(wanted) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        seen = await published(node);
      }
      expect(seen, node).toEqual(wanted);
    }
  });

  it("both nodes route each other's pods through VXLAN, and the pods talk both ways", async () => {
    await untilPairRoutes(tb, [tb.node('node-1'), tb.node('node-2')], throughTunnel);
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 60_000);

  it('`trellis-agent routes` on node-1 says why node-2, on its subnet, is tunnelled', () => {
    const n1 = tb.node('node-1');
    const r = spawnSync(
      'ip',
      ['netns', 'exec', n1.ns, AGENT_BINARY, 'routes', '--socket', n1.agent!.socket],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      "tunnelled: node-2 IPv4: the node routes directly only on 10.100.0.12/30 (its trellis.dev/direct-subnets-v4), which does not hold this node's InternalIP (it would route back through VXLAN)",
    );
    expect(r.stdout).toContain('tunnelled: node-2 IPv6: the node routes directly only on fd00:100::12/127');
  });

  it('node-2 widened back to /24 and /64 while running: it republishes, and both go direct', async () => {
    const n1 = tb.node('node-1');
    const n2 = tb.node('node-2');
    ip(n2.ns, 'addr', 'add', `${n2.plan.v4}/24`, 'dev', 'eth0');
    ip(n2.ns, 'addr', 'del', NARROW.v4, 'dev', 'eth0');
    // IPv6 holds one prefix per address: replaced, not added beside.
    ip(n2.ns, '-6', 'addr', 'del', NARROW.v6, 'dev', 'eth0');
    ip(n2.ns, '-6', 'addr', 'add', `${n2.plan.v6}/64`, 'dev', 'eth0', 'nodad');
    await untilPairRoutes(tb, [n1, n2], direct);
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 60_000);
});
