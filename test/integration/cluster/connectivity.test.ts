import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipJson } from '../../support/netns.ts';
import { INTERNET, Testbed, testbedSkipReason } from '../../support/testbed/index.ts';

/**
 * Three nodes on one L2 segment, each running the real agent against the test API server, two pods
 * each wired by the real shim from the config list the agent published. Everything is asserted in
 * the kernel or on the wire: ping replies, `ip -j` dumps, the source address an echo server saw.
 */
const skip = testbedSkipReason();

interface Addr {
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

function inV4Cidr(addr: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const toInt = (a: string): number => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const mask = Number(len) === 0 ? 0 : 2 ** 32 - 2 ** (32 - Number(len));
  return (toInt(addr) & mask) >>> 0 === (toInt(net!) & mask) >>> 0;
}

const title = 'cluster: pods on three nodes (real agents, real shim)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 3 }] });
    for (const n of tb.nodes()) {
      await tb.addPod(n.name);
      await tb.addPod(n.name);
    }
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('every pod reaches every other pod, across nodes, over IPv4 and IPv6', async () => {
    const m = await tb.connectivityMatrix();
    expect(m.pods).toHaveLength(6);
    expect(m.cells).toHaveLength(6 * 5 * 2);
    expect(m.failures).toEqual([]);
    expect(m.ok).toBe(true);
  });

  it('each pod has eth0 with addresses from its own node pod CIDRs (kernel view)', () => {
    for (const pod of tb.pods()) {
      const node = tb.node(pod.node);
      const [eth0] = ipJson<Addr[]>(pod.ns, 'addr', 'show', 'dev', 'eth0');
      const globals = (eth0?.addr_info ?? []).filter((a) => a.scope === 'global').map((a) => a.local);
      expect(globals).toContain(pod.v4);
      expect(globals).toContain(pod.v6);
      expect(inV4Cidr(pod.v4, node.plan.podCIDRs[0])).toBe(true);
      expect(pod.v6.startsWith(node.plan.podCIDRs[1].replace('::/64', ':'))).toBe(true);
    }
    const all = tb.pods().flatMap((p) => [p.v4, p.v6]);
    expect(new Set(all).size).toBe(all.length);
  });

  it("each node routes every other node's pod CIDRs via its InternalIP and blackholes its own", () => {
    for (const node of tb.nodes()) {
      for (const family of [4, 6] as const) {
        const routes = tb.routes(node.name, family);
        const i = family === 4 ? 0 : 1;
        expect(routes).toContainEqual(
          expect.objectContaining({ type: 'blackhole', dst: node.plan.podCIDRs[i] }),
        );
        for (const peer of tb.nodes()) {
          if (peer === node) continue;
          expect(routes).toContainEqual(
            expect.objectContaining({
              dst: peer.plan.podCIDRs[i],
              gateway: family === 4 ? peer.plan.v4 : peer.plan.v6,
              dev: 'eth0',
            }),
          );
        }
        // Besides the per-pod routes to host veths: one blackhole + one route per peer, nothing else.
        const nodeRoutes = routes.filter((r) => r.type === 'blackhole' || r.gateway !== undefined);
        expect(nodeRoutes).toHaveLength(tb.nodes().length);
        const podRoutes = routes.filter((r) => r.type !== 'blackhole' && r.gateway === undefined);
        expect(podRoutes.map((r) => r.dev).every((d) => d?.startsWith('trl'))).toBe(true);
      }
    }
  });

  it('every pod exists in the API bound to its node with the addresses the shim returned', async () => {
    for (const pod of tb.pods()) {
      const o = (await tb.api.call('GET', `/api/v1/namespaces/default/pods/${pod.name}`)) as {
        metadata: { uid: string };
        spec: { nodeName: string };
        status: { podIPs: { ip: string }[] };
      };
      expect(o.metadata.uid).toBe(pod.uid);
      expect(o.spec.nodeName).toBe(pod.node);
      expect(o.status.podIPs).toEqual([{ ip: pod.v4 }, { ip: pod.v6 }]);
    }
  });

  it('the config list each agent published points the shim at that node’s own socket', () => {
    for (const node of tb.nodes()) {
      const list = tb.conflist(node.name);
      const plugin = list.plugins.find((p) => p.type === 'trellis');
      expect(plugin?.socket).toBe(node.agent?.socket);
      expect(plugin?.spoolDir).toBe(node.agent?.spoolDir);
    }
  });

  it('a pod reaching outside the cluster is seen there with its node address (masquerade)', async () => {
    const echo = await tb.startEcho(tb.internetNs);
    try {
      for (const pod of [tb.pods()[0]!, tb.pods()[3]!]) {
        const node = tb.node(pod.node);
        expect(await tb.askEcho(pod.ns, INTERNET.v4)).toMatchObject({ from: node.plan.v4 });
        expect(await tb.askEcho(pod.ns, INTERNET.v6)).toMatchObject({ from: node.plan.v6 });
      }
    } finally {
      await echo.stop();
    }
  });

  it('pod-to-pod traffic across nodes keeps the pod source address (no masquerade inside the cluster)', async () => {
    const server = tb.pods().find((p) => p.node === 'node-1')!;
    const client = tb.pods().find((p) => p.node === 'node-3')!;
    const echo = await tb.startEcho(server.ns);
    try {
      expect(await tb.askEcho(client.ns, server.v4)).toMatchObject({ from: client.v4 });
      expect(await tb.askEcho(client.ns, server.v6)).toMatchObject({ from: client.v6 });
    } finally {
      await echo.stop();
    }
  });

  it('a pod removed through CNI DEL is gone from its node and no longer answers', async () => {
    const victim = tb.pods().find((p) => p.node === 'node-2')!;
    const prober = tb.pods().find((p) => p.node === 'node-1')!;
    expect((await tb.ping(prober.ns, victim.v4)).rttMs).toBeDefined();
    const lease = join(
      tb.node('node-2').agent!.stateDir,
      'ipam',
      'leases',
      `${victim.containerId}@eth0.json`,
    );
    expect(existsSync(lease)).toBe(true);
    await tb.removePod(victim);
    // The agent released it (the namespace's removal would take the veth and its routes anyway).
    expect(existsSync(lease)).toBe(false);
    expect(tb.pods()).not.toContain(victim);
    await expect(tb.api.call('GET', `/api/v1/namespaces/default/pods/${victim.name}`)).rejects.toMatchObject({
      status: 404,
    });
    expect((await tb.ping(prober.ns, victim.v4, 1)).rttMs).toBeUndefined();
    expect((await tb.ping(prober.ns, victim.v6, 1)).rttMs).toBeUndefined();
  });
});
