import { readFileSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NETWORK_UP_REASON } from '../../../pkg/k8s/client.ts';
import { type Arm64Agent, arm64AgentSkipReason, stageArm64Agent } from '../../support/arm64-agent.ts';
import { nsExec } from '../../support/netns.ts';
import { QEMU_AARCH64 } from '../../support/qemu.ts';
import {
  Testbed,
  type TestbedNode,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';

/**
 * The arm64 agent in a cluster: node-1 runs the agent as the arm64 image holds it (its production
 * dependencies installed for arm64, an arm64 Node 24) under qemu-user, beside x64 agents on node-2
 * and node-3, all in Kubernetes mode against the test API server. What its arm64 native code did
 * (ffi-rs's libc bindings, the netlink addon's sockets) is read from the kernel and the API: the
 * config list, the Node's condition, its routes, and pods on the other nodes answering node-1.
 *
 * What qemu-user cannot carry (test/support/arm64-agent.ts): rtnetlink messages other than links,
 * addresses and routes, so no VXLAN (its neighbours and FDB entries): host-gw mode, one segment. Nexthop
 * objects are refused with EOPNOTSUPP, as a kernel before 5.3 refuses them, so node-1 also shows that
 * fallback: plain `via` routes. And no NS_GET_NSTYPE ioctl, so no pod on node-1 itself (the agent
 * refuses every pod namespace there); ADD's code is the same JavaScript on both CPUs.
 */
const skip = testbedSkipReason() ?? arm64AgentSkipReason();

type Route = { dst: string; gateway?: string; dev?: string; nhid?: number };

const title = 'cluster: an arm64 agent under qemu-user beside x64 agents (host-gw)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let arm: Arm64Agent | undefined;
  let tb: Testbed;
  let pods: TestbedPod[];

  beforeAll(async () => {
    arm = stageArm64Agent();
    tb = await Testbed.create({
      segments: [{ nodes: 3 }],
      mode: 'host-gw',
      agentOverrides: { 'node-1': { binary: arm.binary, env: arm.env } },
    });
    pods = [await tb.addPod('node-2'), await tb.addPod('node-3')];
  }, 240_000);

  afterAll(async () => {
    try {
      if (tb !== undefined) {
        await tb.teardown();
        expect(tb.leftovers()).toEqual([]);
      }
    } finally {
      arm?.cleanup();
    }
  }, 60_000);

  it("node-1's agent is the arm64 build: qemu-aarch64 running the arm64 Node", () => {
    const pid = tb.node('node-1').agent!.child.pid!;
    // `ip netns exec`, the launcher and the node wrapper each exec the next: one process.
    expect(readlinkSync(`/proc/${pid}/exe`)).toBe(QEMU_AARCH64);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain(arm!.node);
    expect(argv.some((a) => a.endsWith('/app/dist/cmd/agent/main.js'))).toBe(true);
  });

  it('it published its config list, applied its nftables table and told the API its network is up', async () => {
    expect(tb.conflist('node-1').plugins[0]).toMatchObject({ type: 'trellis', mtu: 1500 });
    // Through `nft` alone: qemu-user opens no nf_tables netlink socket for the agent.
    const table = nsExec(tb.node('node-1').ns, 'nft', ['-s', 'list', 'table', 'inet', 'trellis']);
    expect(table).toMatch(/masquerade/);
    expect(table).toMatch(/fib saddr \. iif oif missing counter drop/);
    const obj = (await tb.api.getNode('node-1')) as {
      status?: { conditions?: { type: string; status: string; reason?: string }[] };
    };
    expect(obj.status?.conditions?.find((c) => c.type === 'NetworkUnavailable')).toMatchObject({
      status: 'False',
      reason: NETWORK_UP_REASON,
    });
  });

  it('its routes to the other nodes: via their addresses on eth0, without nexthop objects where refused', () => {
    const routeTo = (from: string, n: TestbedNode, family: 4 | 6): Route | undefined =>
      tb.routes(from, family).find((r) => r.dst === n.plan.podCIDRs[family === 4 ? 0 : 1]) as
        | Route
        | undefined;
    const [n1, n2, n3] = [tb.node('node-1'), tb.node('node-2'), tb.node('node-3')];
    for (const family of [4, 6] as const) {
      for (const peer of [n2, n3]) {
        const route = routeTo('node-1', peer, family);
        expect(route).toMatchObject({ gateway: family === 4 ? peer.plan.v4 : peer.plan.v6, dev: 'eth0' });
        // qemu refused RTM_GETNEXTHOP as a kernel before 5.3 does: plain routes.
        expect(route?.nhid).toBeUndefined();
      }
      // The x64 agents on the same kernel name nexthop objects of their own.
      expect(routeTo('node-2', n1, family)?.nhid).toBeGreaterThan(0);
    }
  });

  it('pods on node-2 and node-3 answer node-1 through them, over IPv4 and IPv6', async () => {
    const n1 = tb.node('node-1');
    for (const pod of pods) {
      for (const address of [pod.v4, pod.v6]) {
        expect(
          (await tb.ping(n1.ns, address, 5)).rttMs,
          `node-1 -> ${pod.node} pod ${address}`,
        ).toBeDefined();
      }
    }
  });

  it('its log has no error line, warns only of the nf_tables socket qemu-user lacks, and names every component', () => {
    const n1 = tb.node('node-1');
    expect(n1.logs.filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
    const warned = n1.logs.filter((l) => l.level === 'warn').map((l) => String(l.msg));
    expect(warned.length).toBeGreaterThan(0);
    for (const msg of warned)
      expect(msg).toMatch(/^cannot (open an nf_tables netlink socket|watch nftables changes)/);
    expect(n1.unnamed).toEqual([]);
    expect(n1.agent!.stderr()).toBe('');
  });
});
