import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIN_GAP_MS } from '../../../pkg/agent/firewall-tables.ts';
import { kubeProxyRuleset } from '../../support/kube-proxy.ts';
import { nsExec } from '../../support/netns.ts';
import {
  ECHO_PORT,
  type EchoServer,
  nodeObject,
  planNode,
  Testbed,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';
import { sleep } from '../../support/testbed/processes.ts';

/**
 * A NodePort (externalTrafficPolicy Cluster) as kube-proxy's nftables mode makes it: a client beyond
 * the router asks node-2, which DNATs to a pod on node-1. node-2 forwards it as client -> node-1's
 * pod, and its answer as that pod -> client: neither is in node-2's own pod CIDR (10.244.2.0/24). With
 * Docker's FORWARD policy DROP on node-2 it is dropped until the accepts cover the cluster's pod network
 * (one prefix over every node's pod CIDRs, 10.244.0.0/22 here), as flannel's and Calico's do; the
 * accepts of node-2's own pod CIDR that earlier versions inserted do not let it through. Real agents
 * and shim, IPv4 only (the IPv6 path is the same code).
 */
const skip = testbedSkipReason();

const NODE_PORT = 30080;
const POD_NETWORK = '10.244.0.0/22';

const title = "the host firewall: a NodePort forwarded to another node's pod passes trellis's accepts";
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed<4>;
  let server: TestbedPod<4>;
  let echo: EchoServer | undefined;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }], families: [4] });
    server = await tb.addPod('node-1');
    echo = await tb.startEcho(server.ns);
    const ruleset = kubeProxyRuleset(4, '10.244.0.0/16', [
      {
        name: 'echo',
        protocol: 'udp',
        clusterIP: '10.96.0.30',
        port: 53,
        nodePort: NODE_PORT,
        endpoint: { address: server.v4, port: ECHO_PORT },
      },
    ]);
    nsExec(tb.node('node-2').ns, 'nft', ['-f', '-'], { input: ruleset });
  }, 60_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await echo?.stop();
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it("dropped by node-2's FORWARD policy DROP without the accepts, answered with them", async () => {
    const node2 = tb.node('node-2');
    const ask = () => tb.askEcho(tb.internetNs, node2.plan.v4, NODE_PORT);
    const ours = () =>
      nsExec(node2.ns, 'iptables-nft', ['-S', 'FORWARD'])
        .split('\n')
        .filter((l) => l.includes('trellis'));
    // The path works before any firewall: the NodePort's DNAT and the route to node-1's pod.
    expect(await ask()).toMatchObject({ replyFrom: node2.plan.v4, replyPort: NODE_PORT });

    await tb.stopAgent('node-2');
    nsExec(node2.ns, 'iptables-nft', ['-P', 'FORWARD', 'DROP']);
    // What earlier versions inserted: accepts of node-2's own pod CIDR, which do not help here.
    const own = node2.plan.podCIDRs[0];
    for (const flag of ['-s', '-d']) {
      nsExec(node2.ns, 'iptables-nft', [
        '-A',
        'FORWARD',
        flag,
        own,
        '-m',
        'comment',
        '--comment',
        'trellis: the pods of this node',
        '-j',
        'ACCEPT',
      ]);
    }
    await expect(ask()).rejects.toThrow(/no answer/);

    await tb.startAgent('node-2');
    // The pod network's accepts go in, then the earlier version's go.
    const replaced = [
      `-A FORWARD -s ${POD_NETWORK} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      `-A FORWARD -d ${POD_NETWORK} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
    ];
    for (let i = 0; i < 100 && ours().join('\n') !== replaced.join('\n'); i++) await sleep(100);
    // Both ways through node-2's forward hook: the answer comes back from the NodePort it asked
    // (with accepts of node-2's own pod CIDR only, there is none).
    const answer = await ask();
    expect(answer).toMatchObject({ replyFrom: node2.plan.v4, replyPort: NODE_PORT });
    // kube-proxy masqueraded it (externalTrafficPolicy Cluster): the pod saw node-2.
    expect(answer.from).toBe(node2.plan.v4);
    // The earlier version's accepts were replaced (an upgrade leaves none behind).
    expect(ours()).toEqual(replaced);
  });

  it('a node joining outside the pod network widens the accepts within seconds, not at the next periodic check', async () => {
    const node2 = tb.node('node-2');
    const ours = () =>
      nsExec(node2.ns, 'iptables-nft', ['-S', 'FORWARD'])
        .split('\n')
        .filter((l) => l.includes('trellis'));
    // A Node object alone (no namespace, no agent): 10.244.9.0/24 is outside 10.244.0.0/22. It
    // publishes its direct subnet as its agent would, so node-2 routes it directly: a first tunnelled
    // peer would run a check of its own (the VXLAN input check), and this one must come from the step.
    const far = planNode(9, 0, [4]);
    // The accepts of the test before changed node-2's table, which runs one more check (at most every
    // MIN_GAP_MS): past it, nothing but the step asks for one.
    await sleep(MIN_GAP_MS + 500);
    const obj = nodeObject(far) as { metadata: Record<string, unknown> };
    obj.metadata.annotations = { 'trellis.dev/direct-subnets-v4': '10.100.0.0/24' };
    await tb.api.createNode(obj);
    try {
      const wider = '10.244.0.0/20';
      // The wider accepts go in first, then the narrower ones go: one accept per direction.
      const want = [
        `-A FORWARD -s ${wider} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
        `-A FORWARD -d ${wider} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      ];
      for (let i = 0; i < 30 && ours().join('\n') !== want.join('\n'); i++) await sleep(100);
      expect(ours()).toEqual(want);
      expect(await tb.askEcho(tb.internetNs, node2.plan.v4, NODE_PORT)).toMatchObject({
        replyFrom: node2.plan.v4,
        replyPort: NODE_PORT,
      });
    } finally {
      await tb.api.deleteNode(far.name);
    }
  });
});
