import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { nsExec } from '../../support/netns.ts';
import {
  Testbed,
  type TestbedNode,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';
import { parseExposition } from '../../unit/observe/prom-text.ts';
import { within } from '../faults/support.ts';

/**
 * ufw's default `deny (incoming)` on a node that tunnels: node-1 and node-2 on two segments (auto mode:
 * VXLAN between them), node-1's INPUT set to policy DROP with ufw's usual openings (established
 * connections, lo, its not-local check, ssh), its VXLAN port not among them. The pods of the two nodes cannot reach each other
 * while every route and VXLAN entry is in place; node-1's agent says so (log line, status, doctor,
 * metric), with the command that opens the port, and does not open it itself. Pasting that command
 * brings the pods together, and the agent says the firewall lets the packets in.
 */
const skip = testbedSkipReason();

function cli(node: TestbedNode, ...args: string[]): { code: number; stdout: string } {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', node.ns, AGENT_BINARY, ...args, '--socket', node.agent!.socket],
    {
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  return { code: r.status ?? -1, stdout: r.stdout };
}

const title =
  "cluster: the host firewall's INPUT drops VXLAN from the tunnelled nodes (auto mode, real agents)";
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let pods: TestbedPod[];
  let n1: TestbedNode;

  beforeAll(async () => {
    tb = await Testbed.create({
      segments: [{ nodes: 1 }, { nodes: 1 }],
      agentArgs: ['--firewall-check-seconds', '1'],
    });
    n1 = tb.node('node-1');
    pods = [await tb.addPod('node-1'), await tb.addPod('node-2')];
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const logged = (msg: string) => n1.logs.filter((l) => String(l.msg).startsWith(msg));

  it('a DROP policy without the VXLAN port: the pods are cut off, and the agent says so, not opening it', async () => {
    // ufw's shape, through iptables-nft: extensions nft shows by name only (conntrack, addrtype),
    // which the agent reads back from iptables-nft-save.
    for (const tool of ['iptables-nft', 'ip6tables-nft']) {
      const rule = (...args: string[]) => nsExec(n1.ns, tool, args);
      rule('-N', 'ufw-not-local');
      rule('-A', 'ufw-not-local', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN');
      rule('-A', 'ufw-not-local', '-m', 'addrtype', '--dst-type', 'MULTICAST', '-j', 'RETURN');
      rule('-A', 'ufw-not-local', '-j', 'DROP');
      rule('-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
      rule('-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT');
      // ufw's before6.rules let neighbour discovery in (without it the nodes' IPv6 underlay stops
      // resolving once the entries age, whatever the VXLAN port).
      if (tool === 'ip6tables-nft') rule('-A', 'INPUT', '-p', 'ipv6-icmp', '-j', 'ACCEPT');
      rule('-A', 'INPUT', '-j', 'ufw-not-local');
      rule('-A', 'INPUT', '-p', 'tcp', '-m', 'tcp', '--dport', '22', '-j', 'ACCEPT');
      rule('-P', 'INPUT', 'DROP');
    }
    expect((await tb.ping(pods[1]!.ns, pods[0]!.v4)).rttMs).toBeUndefined();
    // The rules go in one family at a time while the agent checks every second: it may say IPv4 alone
    // first, and says it again once the IPv6 policy drops too (a line per change of what drops).
    const warnings = () => logged('the host firewall drops the VXLAN packets');
    await within(
      10_000,
      'the warning naming both families',
      () => (warnings().at(-1)?.blocked as unknown[] | undefined)?.length === 2,
    );
    const warning = warnings().at(-1);
    expect(warning).toMatchObject({
      level: 'warn',
      blocked: [
        'ip filter INPUT drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop',
        'ip6 filter INPUT drops IPv6 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop',
      ],
      fix: [
        'iptables -I INPUT -p udp --dport 8472 -j ACCEPT',
        'ip6tables -I INPUT -p udp --dport 8472 -j ACCEPT',
      ],
      peers: 1,
    });
    expect(nsExec(n1.ns, 'iptables-nft', ['-S', 'INPUT'])).not.toContain('8472');
    expect(cli(n1, 'status').stdout).toMatch(
      /^host firewall:\s+DROPS VXLAN \(UDP 8472\) from tunnelled nodes in ip filter INPUT, ip6 filter INPUT \(checked /m,
    );
    const d = cli(n1, 'doctor', '--json');
    expect(d.code).toBe(1);
    const report = JSON.parse(d.stdout) as DoctorReport;
    const firewall = report.checks.find((c) => c.name === 'firewall')!;
    expect(firewall.findings.map((f) => f.fix)).toEqual([
      expect.stringMatching(/^iptables -I INPUT -p udp --dport 8472 -j ACCEPT \(better, only from/),
      expect.stringMatching(/^ip6tables -I INPUT -p udp --dport 8472 -j ACCEPT/),
    ]);
    const metrics = nsExec(n1.ns, 'curl', ['-s', '-m', '5', `http://${n1.plan.v4}:9743/metrics`]);
    expect(
      parseExposition(metrics).get('trellis_host_firewall_drops', {
        family: '4',
        direction: 'vxlan-in',
        chain: 'ip filter INPUT',
      }),
    ).toBe(1);

    // The logged fix, pasted as an operator would (iptables-nft by name).
    for (const command of warning!.fix as string[]) {
      const [tool, ...args] = command.split(' ');
      nsExec(n1.ns, `${tool}-nft`, args);
    }
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
    await within(
      5000,
      'the all-clear',
      () => logged('the host firewall lets in the VXLAN packets').length > 0,
    );
    expect(cli(n1, 'status').stdout).toMatch(/^host firewall:\s+lets pod traffic through/m);
  }, 60_000);

  it('a peer that goes onto VXLAN through a per-node step (its VTEP MAC published late) is checked at once, not at the next full pass', async () => {
    // The port closed again, and node-2 as its agent leaves it before it publishes: no VTEP MAC.
    for (const [tool, command] of [
      ['iptables-nft', '-D'],
      ['ip6tables-nft', '-D'],
    ] as const) {
      nsExec(n1.ns, tool, [command, 'INPUT', '-p', 'udp', '--dport', '8472', '-j', 'ACCEPT']);
    }
    await tb.stopAgent('node-2');
    const node2 = (await tb.api.getNode('node-2')) as { metadata: { annotations?: Record<string, string> } };
    const macs = Object.fromEntries(
      Object.entries(node2.metadata.annotations ?? {}).filter(([k]) => k.startsWith('trellis.dev/vtep-mac-')),
    );
    expect(Object.keys(macs).sort()).toEqual(['trellis.dev/vtep-mac-v4', 'trellis.dev/vtep-mac-v6']);
    const patch = (annotations: Record<string, string | null>) =>
      tb.api.call(
        'PATCH',
        '/api/v1/nodes/node-2',
        { metadata: { annotations } },
        'application/merge-patch+json',
      );
    await patch(Object.fromEntries(Object.keys(macs).map((k) => [k, null])));
    // node-1's agent starts afresh: its full passes find nothing to tunnel to.
    await tb.restartAgent('node-1');
    const from = n1.logs.length;
    const warned = () =>
      n1.logs.slice(from).some((l) => String(l.msg).startsWith('the host firewall drops the VXLAN packets'));
    await new Promise((r) => setTimeout(r, 3000));
    expect(warned()).toBe(false);
    // Published now: a per-node step routes node-2 through VXLAN; the next full pass is a minute away.
    await patch(macs);
    await within(10_000, 'the warning after the step', warned);
    expect(
      n1.logs.slice(from).some((l) => l.msg === 'reconciled node' && l.peer === 'node-2'),
      'the route came from a per-node step',
    ).toBe(true);
    await tb.startAgent('node-2');
  }, 90_000);

  it("an operator's drop by set in iptables-nft's FORWARD is not taken for a drop of every pod packet: no accepts ahead of it", async () => {
    // node-2 tunnels to node-1, so its agent reads iptables-nft-save for its INPUT check. That save
    // prints `ip saddr @blocklist drop` as a bare `-j DROP`; taken into the FORWARD walk, it made the
    // agent put its accepts ahead of the operator's blocklist.
    const n2 = tb.node('node-2');
    const ours = (): string[] =>
      nsExec(n2.ns, 'nft', ['list', 'chain', 'ip', 'filter', 'FORWARD'])
        .split('\n')
        .filter((l) => l.includes('trellis'));
    nsExec(n2.ns, 'iptables-nft', [
      '-A',
      'FORWARD',
      '-m',
      'conntrack',
      '--ctstate',
      'RELATED,ESTABLISHED',
      '-j',
      'ACCEPT',
    ]);
    nsExec(n2.ns, 'nft', [
      'add',
      'set',
      'ip',
      'filter',
      'blocklist',
      '{ type ipv4_addr; elements = { 192.0.2.1 } }',
    ]);
    nsExec(n2.ns, 'nft', ['add', 'rule', 'ip', 'filter', 'FORWARD', 'ip', 'saddr', '@blocklist', 'drop']);
    // Checked every second (and on the change itself).
    await new Promise((r) => setTimeout(r, 4000));
    expect(ours()).toEqual([]);
    // The control: a drop the walk can judge gets the accepts, ahead of the blocklist too.
    nsExec(n2.ns, 'iptables-nft', ['-P', 'FORWARD', 'DROP']);
    await within(10_000, 'the accepts for a FORWARD policy DROP', () => ours().length === 2);
    nsExec(n2.ns, 'iptables-nft', ['-P', 'FORWARD', 'ACCEPT']);
  }, 60_000);
});
