import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';
import { ip, netnsSkipReason, nsExec, nsPing, type TestNetns } from '../../support/netns.ts';
import { sleep } from '../../support/testbed/processes.ts';
import { type AddResult, containerId, NodeHarness, podAddr, V4_CIDR } from '../datapath/harness.ts';

/**
 * The host firewall drops what the node forwards (Docker's FORWARD policy DROP, set through
 * iptables-nft before the agent starts): the agent lets its pod CIDRs through at start (standalone, a
 * node alone: its pod network is its own pod CIDRs), and when a
 * firewall reload takes its accepts away (`iptables -F FORWARD`, as Docker re-creating its chains or
 * `ufw reload` do) it puts them back within seconds, not at the next periodic check a minute later.
 * On RHEL's stock rules (policy ACCEPT, a final REJECT) the accepts go right before the reject. Legacy
 * iptables (x_tables, invisible to nft) is read and written through iptables-legacy. Real
 * agent with its default interval, a pod, and a client beyond the node, in test namespaces.
 */
const skip = netnsSkipReason ?? builtSkipReason();

const TOOLS = ['iptables-nft', 'ip6tables-nft'];
const LEGACY = ['iptables-legacy', 'ip6tables-legacy'];

/** A client beyond the node (reaching the pod through the node's forward hook) and a pod. */
async function clientAndPod(node: NodeHarness): Promise<{ client: TestNetns; podV4: string }> {
  const host = node.host.name;
  const client = node.pool.add('fwc');
  ip(host, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', client.name);
  ip(host, 'addr', 'add', '192.0.2.1/24', 'dev', 'up0');
  ip(host, 'link', 'set', 'up0', 'up');
  ip(client.name, 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0');
  ip(client.name, 'link', 'set', 'eth0', 'up');
  ip(client.name, 'route', 'add', 'default', 'via', '192.0.2.1');
  const added = await node.add(node.podNs(), containerId());
  expect(added.code, added.stdout).toBe(0);
  return { client, podV4: podAddr(added.json as AddResult, 4) };
}

/** trellis's accept rules in FORWARD, as each tool (`iptables-nft`, `ip6tables-legacy`...) lists them. */
function acceptsIn(host: string, tools: readonly string[]): string[] {
  return tools.flatMap((tool) =>
    nsExec(host, tool, ['-S', 'FORWARD'])
      .split('\n')
      .filter((l) => l.includes('trellis: pod traffic')),
  );
}

async function until(what: string, ms: number, ok: () => boolean): Promise<number> {
  const start = Date.now();
  while (!ok()) {
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
  return Date.now() - start;
}

const title = 'the host firewall: accepts for the pod CIDRs, put back after a firewall reload';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let node: NodeHarness | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it('a flushed FORWARD chain gets its accepts back within seconds, and the pod is reachable again', async () => {
    node = new NodeHarness();
    await node.start([], (host) => {
      for (const tool of TOOLS) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
    });
    const host = node.host.name;
    const ours = () => acceptsIn(host, TOOLS);
    await until('the accepts at start', 5000, () => ours().length === 4);

    const { client, podV4 } = await clientAndPod(node);
    expect(nsPing(client.name, podV4)).toBe(true);

    const inserts = () =>
      node!.agent.logs.filter((l) => String(l.msg).startsWith('the host firewall dropped'));
    expect(inserts()).toHaveLength(1);
    for (const tool of TOOLS) nsExec(host, tool, ['-F', 'FORWARD']);
    expect(ours()).toEqual([]);
    expect(nsPing(client.name, podV4)).toBe(false);
    const tookMs = await until('the accepts back', 8000, () => ours().length === 4);
    expect(tookMs).toBeLessThan(8000);
    expect(nsPing(client.name, podV4)).toBe(true);
    // The line is written after the rules are in and read back.
    await until('the second insert logged', 5000, () => inserts().length === 2);
  });

  it('restarted with --no-accept-forward: the accepts an earlier run inserted stay, and are said to, with what they let through', async () => {
    node = new NodeHarness();
    await node.start([], (host) => {
      for (const tool of TOOLS) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
    });
    const host = node.host.name;
    const ours = () => acceptsIn(host, TOOLS);
    await until('the accepts at start', 5000, () => ours().length === 4);
    const before = ours();
    await node.agent.stop();
    await node.startAgain(['--no-accept-forward']);
    const said = () => node!.agent.logs.find((l) => String(l.msg).startsWith('accept rules an earlier run'));
    await until('the earlier accepts said', 5000, () => said() !== undefined);
    const line = said()!;
    expect(line.level).toBe('warn');
    expect(line.rules).toHaveLength(4);
    expect(line.remove).toHaveLength(4);
    expect(
      (line.remove as string[]).every(
        (c) => c.startsWith('nft delete rule ip') && c.includes('FORWARD handle'),
      ),
    ).toBe(true);
    expect(line.withoutThem).toEqual(expect.arrayContaining([expect.stringContaining('FORWARD')]));
    // Left alone: neither deleted nor added to.
    await sleep(300);
    expect(ours()).toEqual(before);
    // Said once, not at every check; status names them too.
    expect(
      node.agent.logs.filter((l) => String(l.msg).startsWith('accept rules an earlier run')),
    ).toHaveLength(1);
    const status = spawnSync(
      'ip',
      ['netns', 'exec', host, AGENT_BINARY, 'status', '--socket', node.agent.socket],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(status.stdout).toMatch(
      /^host firewall:\s+lets pod traffic through \(checked [^)]+\); part of it only through 4 accept rule\(s\) an earlier run inserted/m,
    );
    // doctor: the drop they hide, since a firewall reload takes them and this run does not put them back.
    const doctor = spawnSync(
      'ip',
      ['netns', 'exec', host, AGENT_BINARY, 'doctor', '--json', '--socket', node.agent.socket],
      { encoding: 'utf8', timeout: 30_000 },
    );
    const firewall = (JSON.parse(doctor.stdout) as DoctorReport).checks.find((c) => c.name === 'firewall')!;
    expect(firewall.findings).toHaveLength(4);
    expect(firewall.findings[0]!.problem).toMatch(
      /FORWARD.*, and only accept rules an earlier run of trellis inserted let IPv[46] pod traffic through/,
    );
    expect(firewall.findings[0]!.fix).toContain("then remove trellis's (as read at ");
    expect(firewall.findings[0]!.fix).toContain(
      `comment to confirm first): ${(line.remove as string[]).join('; ')}`,
    );
    // Each command it gives removes one of them.
    for (const cmd of line.remove as string[]) nsExec(host, 'sh', ['-c', cmd]);
    expect(ours()).toEqual([]);
  });

  it("RHEL's stock FORWARD (policy ACCEPT, then -j REJECT): the accepts go right before the reject", async () => {
    node = new NodeHarness();
    await node.start([], (host) => {
      nsExec(host, 'iptables-nft', [
        '-A',
        'FORWARD',
        '-j',
        'REJECT',
        '--reject-with',
        'icmp-host-prohibited',
      ]);
    });
    const host = node.host.name;
    const forward = () => nsExec(host, 'iptables-nft', ['-S', 'FORWARD']).trim().split('\n');
    await until('the accepts', 5000, () => forward().some((l) => l.includes('trellis')));
    const v4 = V4_CIDR;
    expect(forward()).toEqual([
      '-P FORWARD ACCEPT',
      `-A FORWARD -s ${v4} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      `-A FORWARD -d ${v4} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      '-A FORWARD -j REJECT --reject-with icmp-host-prohibited',
    ]);
    const { client, podV4 } = await clientAndPod(node);
    expect(nsPing(client.name, podV4)).toBe(true);
    // Anything else the node forwards is still rejected: nothing but the pods was let through.
    expect(nsPing(client.name, '192.0.2.77')).toBe(false);
  });

  it('a policy reached through a goto: no accept inserted (none would be both reached and after the rules), said once whatever the checks that follow', async () => {
    // Appended at the end it was never reached (a goto's chain falls through to the policy) and every
    // check the table's change set off appended two more, without end; before the goto it would come
    // ahead of the zone's own rules. The operator is told where to accept the pods instead.
    node = new NodeHarness();
    await node.start([], (host) => {
      nsExec(host, 'nft', ['-f', '-'], {
        input: `table inet fw {
  chain zones { iifname "eth9" accept; }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    goto zones
  }
}
`,
      });
    });
    const host = node.host.name;
    const agent = node.agent;
    const said = () =>
      agent.logs.filter((l) =>
        String(l.msg).startsWith(
          "the host firewall's policy drops pod traffic this node forwards after a goto",
        ),
      );
    await until('the report', 5000, () => said().length === 1);
    expect(said()[0]!.after).toEqual(
      expect.arrayContaining([expect.stringMatching(/^inet fw forward handle \d+$/)]),
    );
    // A change of the table runs a check within seconds: still nothing inserted, nothing said again.
    nsExec(host, 'nft', ['add', 'rule', 'inet', 'fw', 'zones', 'counter']);
    await sleep(3000);
    expect(nsExec(host, 'nft', ['list', 'table', 'inet', 'fw'])).not.toContain('trellis');
    expect(said()).toHaveLength(1);
    expect(agent.logs.some((l) => String(l.msg).startsWith('the host firewall dropped'))).toBe(false);
    // The operator's fix, where the goto leads: the pods get through.
    const { client, podV4 } = await clientAndPod(node);
    expect(nsPing(client.name, podV4)).toBe(false);
    nsExec(host, 'nft', ['add', 'rule', 'inet', 'fw', 'zones', 'ip', 'daddr', V4_CIDR, 'accept']);
    expect(nsPing(client.name, podV4)).toBe(true);
  });

  it('SIGTERM while an accept is being inserted: the agent exits only once the insert is done, never leaving it to run after', async () => {
    // Behind the xtables lock (kube-proxy holding it, `-w 5`) an insert can take seconds; an agent that
    // released its locks meanwhile let `uninstall` run and the insert land after it. Here the stand-in
    // nft takes 2 s for each rule it adds.
    const bin = mkdtempSync(join(tmpdir(), 'trl-slow-nft-'));
    const real = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
    const marks = join(bin, 'marks');
    writeFileSync(
      join(bin, 'nft'),
      `#!/bin/sh
case "$*" in
  *"insert rule"*|*"add rule"*) echo start >> ${marks}; sleep 2; ${real} "$@"; rc=$?; echo done >> ${marks}; exit $rc ;;
esac
exec ${real} "$@"
`,
      { mode: 0o755 },
    );
    try {
      node = new NodeHarness();
      await node.start(
        [],
        (host) => {
          for (const tool of TOOLS) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
        },
        { PATH: `${bin}:${process.env.PATH ?? ''}` },
      );
      await until('an insert under way', 10_000, () => existsSync(marks));
      const stopped = node.agent.stop();
      await stopped;
      // Exited: every insert it started had finished by then.
      const m = readFileSync(marks, 'utf8').trim().split('\n');
      expect(m.filter((l) => l === 'start').length).toBe(m.filter((l) => l === 'done').length);
      expect(node.agent.logs.some((l) => l.msg === 'trellis agent stopped')).toBe(true);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("an operator's own drop of the pod CIDR is left alone: reported, nothing inserted", async () => {
    node = new NodeHarness();
    await node.start([], (host) => {
      nsExec(host, 'iptables-nft', ['-A', 'FORWARD', '-d', V4_CIDR, '-j', 'DROP']);
    });
    const agent = node.agent;
    await until('the report', 5000, () =>
      agent.logs.some((l) =>
        String(l.msg).startsWith('the host firewall drops pod traffic this node forwards'),
      ),
    );
    const report = agent.logs.find((l) => String(l.msg).startsWith('the host firewall drops pod traffic'))!;
    expect(report.blocked).toEqual([
      `ip filter FORWARD drops IPv4 packets to pods (${V4_CIDR}): rule 2 in ip filter FORWARD: drop`,
    ]);
    expect(agent.logs.some((l) => String(l.msg).startsWith('the host firewall dropped'))).toBe(false);
    expect(nsExec(node.host.name, 'iptables-nft', ['-S', 'FORWARD'])).not.toContain('trellis');
    const { client, podV4 } = await clientAndPod(node);
    expect(nsPing(client.name, podV4)).toBe(false);
  });

  it("legacy iptables, which nft cannot list: Docker's policy DROP there gets its accepts, and a flush is answered at the next periodic check", async () => {
    node = new NodeHarness();
    await node.start(['--firewall-check-seconds', '1'], (host) => {
      for (const tool of LEGACY) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
    });
    const host = node.host.name;
    const ours = () => acceptsIn(host, LEGACY);
    await until('the accepts at start', 5000, () => ours().length === 4);
    // Only x_tables drops here: nft's view of the forward hook is empty.
    expect(nsExec(host, 'nft', ['list', 'ruleset'])).not.toContain('FORWARD');
    expect(ours()).toEqual([
      `-A FORWARD -s ${V4_CIDR} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      `-A FORWARD -d ${V4_CIDR} -m comment --comment "trellis: pod traffic" -j ACCEPT`,
      expect.stringMatching(/^-A FORWARD -s \S+\/64 -m comment/),
      expect.stringMatching(/^-A FORWARD -d \S+\/64 -m comment/),
    ]);
    const { client, podV4 } = await clientAndPod(node);
    expect(nsPing(client.name, podV4)).toBe(true);
    const first = node.agent.logs.find((l) => String(l.msg).startsWith('the host firewall dropped'));
    expect(first?.blocked).toContain(
      `iptables-legacy filter FORWARD drops IPv4 packets from pods (${V4_CIDR}): policy drop`,
    );
    expect(first?.inserted).toContain(
      `iptables-legacy -w 5 -A FORWARD -s ${V4_CIDR} -m comment --comment 'trellis: pod traffic' -j ACCEPT`,
    );

    // No nf_tables notification tells of x_tables changes: the periodic check (1 s here) puts them back.
    for (const tool of LEGACY) nsExec(host, tool, ['-F', 'FORWARD']);
    expect(ours()).toEqual([]);
    expect(nsPing(client.name, podV4)).toBe(false);
    await until('the accepts back', 5000, () => ours().length === 4);
    expect(nsPing(client.name, podV4)).toBe(true);
  });
});
