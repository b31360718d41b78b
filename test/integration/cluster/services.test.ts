import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubeProxyRuleset, type ServiceRule } from '../../support/kube-proxy.ts';
import { ipJson, nsExec } from '../../support/netns.ts';
import {
  ECHO_PORT,
  type EchoServer,
  type Family,
  INTERNET,
  Testbed,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';

/**
 * Services as kube-proxy (nftables mode) makes them, on top of trellis: its NAT tables loaded into
 * every node's namespace beside trellis's own (masquerade, source check), one UDP echo pod on node-1
 * behind a ClusterIP and two NodePorts. node-1 and node-2 share a segment (direct routes), node-3 is
 * behind the router (VXLAN). Each case checks both what the endpoint saw (the client's source, or the
 * address kube-proxy masqueraded it to) and where the answer came from: the ClusterIP or NodePort the
 * client asked, which only conntrack's un-NAT on the client's node produces.
 */
const skip = testbedSkipReason();

const FAMILIES = [4, 6] as const;
const CLUSTER_CIDR = { 4: '10.244.0.0/16', 6: 'fd00:10:244::/48' } as const;
const SERVICE_PORT = 53;
/** externalTrafficPolicy Cluster: any node forwards, masquerading the client. */
const NODE_PORT = 30053;
/** externalTrafficPolicy Local: the node with the endpoint keeps the client's source. */
const NODE_PORT_LOCAL = 30054;
const CLUSTER_IP = { 4: '10.96.0.20', 6: 'fd00:10:96::20' } as const;
const CLUSTER_IP_LOCAL = { 4: '10.96.0.21', 6: 'fd00:10:96::21' } as const;

interface AddrInfo {
  addr_info: { local: string }[];
}

/** Every address a namespace holds (any interface, any scope). */
function addressesOf(ns: string): string[] {
  return ipJson<AddrInfo[]>(ns, 'addr', 'show').flatMap((l) => l.addr_info.map((a) => a.local));
}

function addr(x: { v4?: string; v6?: string }, family: Family): string {
  const a = family === 4 ? x.v4 : x.v6;
  if (a === undefined) throw new Error(`no IPv${family} address`);
  return a;
}

const title = 'cluster: Services through kube-proxy-style NAT beside trellis (real agents, real shim)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let server: TestbedPod;
  let sameNode: TestbedPod;
  let direct: TestbedPod;
  let overlay: TestbedPod;
  let echo: EchoServer | undefined;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }, { nodes: 1 }] });
    server = await tb.addPod('node-1');
    sameNode = await tb.addPod('node-1');
    direct = await tb.addPod('node-2');
    overlay = await tb.addPod('node-3');
    echo = await tb.startEcho(server.ns);
    for (const family of FAMILIES) {
      const endpoint = { address: addr(server, family), port: ECHO_PORT };
      const services: ServiceRule[] = [
        {
          name: 'echo',
          protocol: 'udp',
          clusterIP: CLUSTER_IP[family],
          port: SERVICE_PORT,
          nodePort: NODE_PORT,
          endpoint,
        },
        {
          name: 'echo-local',
          protocol: 'udp',
          clusterIP: CLUSTER_IP_LOCAL[family],
          port: SERVICE_PORT,
          nodePort: NODE_PORT_LOCAL,
          externalLocal: true,
          endpoint,
        },
      ];
      const ruleset = kubeProxyRuleset(family, CLUSTER_CIDR[family], services);
      for (const node of tb.nodes()) nsExec(node.ns, 'nft', ['-f', '-'], { input: ruleset });
    }
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await echo?.stop();
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  for (const family of FAMILIES) {
    it(`IPv${family}: pods on the endpoint's node, across a direct route and across VXLAN reach the ClusterIP with their own source`, async () => {
      for (const client of [sameNode, direct, overlay]) {
        const answer = await tb.askEcho(client.ns, CLUSTER_IP[family], SERVICE_PORT);
        expect({ client: client.node, ...answer }).toMatchObject({
          client: client.node,
          from: addr(client, family),
          replyFrom: CLUSTER_IP[family],
          replyPort: SERVICE_PORT,
        });
      }
    });

    it(`IPv${family}: a pod reaching itself through its Service (hairpin) is answered from the ClusterIP`, async () => {
      const answer = await tb.askEcho(server.ns, CLUSTER_IP[family], SERVICE_PORT);
      expect(answer).toMatchObject({ replyFrom: CLUSTER_IP[family], replyPort: SERVICE_PORT });
      // kube-proxy masqueraded it to one of node-1's own addresses: not the pod's.
      expect(answer.from).not.toBe(addr(server, family));
      expect(addressesOf(tb.node('node-1').ns)).toContain(answer.from);
    });

    it(`IPv${family}: host-network clients on every node reach the ClusterIP, answered from it`, async () => {
      for (const node of tb.nodes()) {
        const answer = await tb.askEcho(node.ns, CLUSTER_IP[family], SERVICE_PORT);
        expect({ node: node.name, ...answer }).toMatchObject({
          node: node.name,
          replyFrom: CLUSTER_IP[family],
          replyPort: SERVICE_PORT,
        });
        expect(addressesOf(node.ns)).toContain(answer.from);
      }
    });

    it(`IPv${family}: a NodePort (externalTrafficPolicy Cluster) on every node, from outside the cluster`, async () => {
      for (const node of tb.nodes()) {
        const answer = await tb.askEcho(tb.internetNs, addr(node.plan, family), NODE_PORT);
        expect({ node: node.name, ...answer }).toMatchObject({
          node: node.name,
          replyFrom: addr(node.plan, family),
          replyPort: NODE_PORT,
        });
        // Masqueraded by the node the client asked, which forwarded it to node-1.
        expect(addressesOf(node.ns)).toContain(answer.from);
      }
    });

    it(`IPv${family}: a NodePort (externalTrafficPolicy Local) keeps the client's source, and trellis's masquerade leaves the answer alone`, async () => {
      const node1 = tb.node('node-1');
      const answer = await tb.askEcho(tb.internetNs, addr(node1.plan, family), NODE_PORT_LOCAL);
      expect(answer).toMatchObject({
        from: addr(INTERNET, family),
        replyFrom: addr(node1.plan, family),
        replyPort: NODE_PORT_LOCAL,
      });
    });
  }

  it("kube-proxy's tables leave trellis's own table in place on every node", () => {
    for (const node of tb.nodes()) {
      const tables = nsExec(node.ns, 'nft', ['list', 'tables']);
      expect(tables).toContain('table inet trellis');
      expect(tables).toContain('table ip kube-proxy');
      expect(tables).toContain('table ip6 kube-proxy');
    }
  });
});
