import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cidrContains, parseCidr, parseIp } from '../../../pkg/ip/index.ts';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import { VXLAN_OVERHEAD } from '../../../pkg/vxlan/constants.ts';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { ip, ipJson, nsExec } from '../../support/netns.ts';
import { tcpMss } from '../../support/tcp-mss.ts';
import {
  addrOf,
  type Family,
  INTERNET,
  podCIDROf,
  Testbed,
  testbedSkipReason,
} from '../../support/testbed/index.ts';
import { errorLines, probe, within } from '../faults/support.ts';

/**
 * Single-stack clusters, as kubeadm or kind build them with ipFamily ipv4 or ipv6: every node has an
 * address of one family only (on eth0, as its InternalIP) and one pod CIDR of that family; the agents
 * reach the API server over that family. Two nodes share an L2 segment and a third sits behind the
 * router, so `--mode auto` routes one peer directly and tunnels to the other. Everything is read from
 * the kernel (addresses, routes, links, nft) or the wire (pings, the source an echo server saw).
 */
const skip = testbedSkipReason();

interface Addr {
  ifname: string;
  mtu: number;
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

type KernelRoute = {
  dst: string;
  gateway?: string;
  dev?: string;
  type?: string;
  protocol?: string;
  metrics?: { mtu?: number }[];
};

const FORWARDING = { 4: 'net.ipv4.ip_forward', 6: 'net.ipv6.conf.all.forwarding' } as const;

describe.each([4, 6] as const)('single-stack IPv%i cluster (real agents, real shim)', (family: Family) => {
  const other: Family = family === 4 ? 6 : 4;
  const inet = family === 4 ? 'inet' : 'inet6';
  const title = `IPv${family}-only: two nodes on one L2, one behind the router`;
  describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
    let tb: Testbed;

    beforeAll(async () => {
      tb = await Testbed.create({ families: [family], segments: [{ nodes: 2 }, { nodes: 1 }] });
      await tb.addPod('node-1');
      await tb.addPod('node-1');
      await tb.addPod('node-2');
      await tb.addPod('node-3');
    }, 90_000);

    afterAll(async () => {
      if (tb === undefined) return;
      await tb.teardown();
      expect(tb.leftovers()).toEqual([]);
    });

    it(`the Node objects carry one IPv${family} InternalIP and pod CIDR; the agents talked to the API over IPv${family}`, async () => {
      const list = await tb.api.call<{
        items: { spec: { podCIDRs: string[] }; status: { addresses: { type: string; address: string }[] } }[];
      }>('GET', '/api/v1/nodes');
      expect(list.items).toHaveLength(3);
      for (const n of list.items) {
        expect(n.spec.podCIDRs).toHaveLength(1);
        expect(n.spec.podCIDRs[0]!.includes(':')).toBe(family === 6);
        const ips = n.status.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.address);
        expect(ips).toHaveLength(1);
        expect(ips[0]!.includes(':')).toBe(family === 6);
      }
      // The nodes have no address of the other family to talk from: the agents' requests came over ours.
      const nodeAddrs = tb.nodes().map((n) => addrOf(n.plan, family));
      const fromAgents = (await tb.faults.requests()).filter((r) =>
        nodeAddrs.includes(r.remoteAddress ?? ''),
      );
      expect(new Set(fromAgents.map((r) => r.remoteAddress))).toEqual(new Set(nodeAddrs));
      expect(tb.apiUrl).toContain(family === 6 ? '[fd00:100::2]' : '10.100.0.2');
    });

    it(`every agent is ready, answers /readyz on its node's IPv${family} address, and logged no error`, async () => {
      for (const n of tb.nodes()) {
        expect(n.logs.some((l) => l.msg === 'trellis agent ready')).toBe(true);
        expect(await probe(tb, n.name, '/readyz', family)).toBe(200);
        expect(await probe(tb, n.name, '/healthz', family)).toBe(200);
        expect(errorLines(n.logs)).toEqual([]);
      }
    });

    it(`each pod has exactly one global address, IPv${family}, from its node's pod CIDR, and no IPv${other} routes`, () => {
      const seen: string[] = [];
      for (const pod of tb.pods()) {
        const cidr = podCIDROf(tb.node(pod.node).plan, family);
        const [eth0] = ipJson<Addr[]>(pod.ns, 'addr', 'show', 'dev', 'eth0');
        const globals = (eth0?.addr_info ?? []).filter((a) => a.scope === 'global');
        expect(globals.map((a) => [a.family, a.local])).toEqual([[inet, addrOf(pod, family)]]);
        expect(cidrContains(parseCidr(cidr)!, parseIp(globals[0]!.local)!)).toBe(true);
        // The CNI result the runtime got lists that one address too.
        expect(pod.ips).toEqual([addrOf(pod, family)]);
        // Nothing of the other family but what the kernel adds itself (IPv6 link-local).
        const foreign = ipJson<KernelRoute[]>(pod.ns, `-${other}`, 'route', 'show').filter(
          (r) => r.protocol !== 'kernel',
        );
        expect(foreign).toEqual([]);
        seen.push(globals[0]!.local);
      }
      expect(new Set(seen).size).toBe(4);
    });

    it(`pods reach each other over IPv${family}, on one node, across the L2 and across the router`, async () => {
      const m = await tb.connectivityMatrix();
      expect(m.cells).toHaveLength(4 * 3);
      expect(m.cells.every((c) => c.family === family)).toBe(true);
      expect(m.failures).toEqual([]);
    });

    it(`each node has trellis routes and a VXLAN device of IPv${family} only`, () => {
      for (const node of tb.nodes()) {
        expect(tb.routes(node.name, other)).toEqual([]);
        const routes = tb.routes(node.name, family);
        expect(routes).toContainEqual(
          expect.objectContaining({ type: 'blackhole', dst: podCIDROf(node.plan, family) }),
        );
        for (const peer of tb.nodes()) {
          if (peer === node) continue;
          const dst = podCIDROf(peer.plan, family);
          const want =
            peer.plan.segment === node.plan.segment
              ? { dst, gateway: addrOf(peer.plan, family), dev: 'eth0' }
              : { dst, dev: `trellis.v${family}` };
          expect(routes).toContainEqual(expect.objectContaining(want));
        }
        const names = ipJson<{ ifname: string }[]>(node.ns, 'link', 'show').map((l) => l.ifname);
        expect(names).not.toContain(`trellis.v${other}`);
        expect(names).toContain(`trellis.v${family}`);
      }
    });

    it(`each node forwards IPv${family} only (IPv${other} forwarding stays off) and doctor finds nothing`, () => {
      for (const node of tb.nodes()) {
        const sysctl = (key: string): string => nsExec(node.ns, 'sysctl', ['-n', key]).trim();
        expect(sysctl(FORWARDING[family])).toBe('1');
        // The test bed starts nodes with forwarding off: the other family's is not the agent's business
        // (IPv6 forwarding on makes a host ignore router advertisements, so SLAAC would lapse).
        expect(sysctl(FORWARDING[other])).toBe('0');
        const run = spawnSync(
          'ip',
          ['netns', 'exec', node.ns, AGENT_BINARY, 'doctor', '--socket', node.agent!.socket, '--json'],
          { encoding: 'utf8', timeout: 30_000 },
        );
        const report = JSON.parse(run.stdout) as DoctorReport;
        expect(report.checks.flatMap((c) => c.findings.map((f) => `${c.name}: ${f.problem}`))).toEqual([]);
        expect(run.status).toBe(0);
      }
    });

    it(`pods get the node's MTU on every route; the IPv${family} VXLAN device leaves room for its overhead`, () => {
      for (const pod of tb.pods()) {
        const [eth0] = ipJson<Addr[]>(pod.ns, 'link', 'show', 'dev', 'eth0');
        expect(eth0?.mtu).toBe(1500);
        const [dflt] = ipJson<KernelRoute[]>(pod.ns, `-${family}`, 'route', 'show', 'default');
        expect(dflt).toBeDefined();
        // auto mode: the node clamps TCP into the tunnel instead (cluster.test.ts).
        expect(dflt?.metrics?.[0]?.mtu).toBeUndefined();
      }
      for (const node of tb.nodes()) {
        const [dev] = ipJson<Addr[]>(node.ns, 'link', 'show', 'dev', `trellis.v${family}`);
        expect(dev?.mtu, node.name).toBe(1500 - VXLAN_OVERHEAD[family]);
      }
    });

    it(`TCP into the IPv${family} tunnel is clamped at both ends; to the direct peer it keeps the full MSS`, async () => {
      const from = tb.pods().find((p) => p.node === 'node-1')!;
      const tunnelled = tb.pods().find((p) => p.node === 'node-3')!;
      const direct = tb.pods().find((p) => p.node === 'node-2')!;
      // The device's MTU less the IP and TCP headers, less 12 bytes of timestamps in every segment.
      const clamped = 1500 - VXLAN_OVERHEAD[family] - (family === 4 ? 40 : 60) - 12;
      const full = 1500 - (family === 4 ? 40 : 60) - 12;
      expect(await tcpMss(from.ns, tunnelled.ns, addrOf(tunnelled, family))).toEqual({
        client: clamped,
        server: clamped,
        received: 1 << 20,
      });
      expect(await tcpMss(from.ns, direct.ns, addrOf(direct, family))).toEqual({
        client: full,
        server: full,
        received: 1 << 20,
      });
    });

    it(`pods leaving the cluster over IPv${family} are masqueraded to their node's address; pod to pod is not`, async () => {
      const echo = await tb.startEcho(tb.internetNs);
      try {
        for (const pod of tb.pods().filter((p) => p.node !== 'node-2')) {
          const node = tb.node(pod.node);
          const target = family === 4 ? INTERNET.v4 : INTERNET.v6;
          expect(await tb.askEcho(pod.ns, target)).toMatchObject({ from: addrOf(node.plan, family) });
        }
      } finally {
        await echo.stop();
      }
      const server = tb.pods().find((p) => p.node === 'node-1')!;
      const client = tb.pods().find((p) => p.node === 'node-3')!;
      const inPod = await tb.startEcho(server.ns);
      try {
        expect(await tb.askEcho(client.ns, addrOf(server, family))).toMatchObject({
          from: addrOf(client, family),
        });
      } finally {
        await inPod.stop();
      }
      for (const node of tb.nodes()) {
        const table = nsExec(node.ns, 'nft', ['list', 'table', 'inet', 'trellis']);
        expect(table).toContain(`pods_v${family}`);
        expect(table).not.toContain(`pods_v${other}`);
      }
    });

    it(`the uplink losing carrier: the direct IPv${family} route the kernel drops with it is back within about a second of the carrier`, async () => {
      const [a, b] = tb.nodes();
      const direct = { dst: podCIDROf(b!.plan, family), gateway: addrOf(b!.plan, family), dev: 'eth0' };
      const holds = () =>
        tb.routes(a!.name, family).some((r) => r.dst === direct.dst && r.gateway === direct.gateway);
      expect(holds()).toBe(true);
      // A cable pulled: node-1's eth0 is a veth whose other end is its port on the fabric's bridge. The
      // kernel deletes the nexthop objects on a device without carrier and the routes through them
      // (after linkwatch's delay), for IPv4 without a route or nexthop notification.
      const port = `n${a!.plan.index}`;
      ip(tb.fabricNs, 'link', 'set', port, 'down');
      try {
        await within(5000, `${a!.name}: route through eth0 dropped by the kernel`, () => !holds());
      } finally {
        ip(tb.fabricNs, 'link', 'set', port, 'up');
      }
      // Only the link's state says it must be put back (the resync is 60 s away).
      expect(await within(3000, `${a!.name}: route to ${b!.name} back with the carrier`, holds)).toBeLessThan(
        3000,
      );
      const from = tb.pods().find((p) => p.node === a!.name)!;
      const to = tb.pods().find((p) => p.node === b!.name)!;
      expect((await tb.ping(from.ns, to.ips[0]!)).rttMs).toBeDefined();
      const said = (msg: string) => a!.logs.filter((l) => l.msg === msg && l.link === 'eth0');
      expect(
        said('a link routes to peers leave by is down; its routes are put back when it is up again'),
      ).toHaveLength(1);
      expect(said('a link routes to peers leave by is up; reconciling now')).toHaveLength(1);
    });

    it('no agent logged an error while pods came and went', async () => {
      await tb.removePod(tb.pods().find((p) => p.node === 'node-3')!);
      const again = await tb.addPod('node-3');
      expect(again.ips).toHaveLength(1);
      for (const n of tb.nodes()) expect(errorLines(n.logs)).toEqual([]);
    });
  });
});
