import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_BINARY, builtSkipReason, REFERENCE_PLUGIN_DIR } from '../../support/cni-driver.ts';
import { ipJson, netnsSkipReason, nsExec } from '../../support/netns.ts';
import { containerId, NodeHarness } from '../datapath/harness.ts';

/**
 * `trellis-agent uninstall` never pulls the node from under a running agent: it takes the agent's
 * state-dir lock first, waiting for an agent that is shutting down (its pod deleted a moment before)
 * and giving up with exit 1 on one that keeps running. Real agent, real uninstall, in a test namespace;
 * it also deletes the accept rules the agent inserted into the host firewall's FORWARD chain.
 */
const skip = netnsSkipReason ?? builtSkipReason();

interface Run {
  code: number | null;
  lines: Record<string, unknown>[];
}

function uninstall(
  node: NodeHarness,
  waitSeconds: number,
  onLine?: (l: Record<string, unknown>) => void,
  wrap: string[] = [],
) {
  const dir = node.agent.dir;
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      node.host.name,
      ...wrap,
      AGENT_BINARY,
      'uninstall',
      '--state-dir',
      node.agent.stateDir,
      '--socket',
      node.agent.socket,
      '--cni-conf-dir',
      join(dir, 'net.d'),
      '--cni-bin-dir',
      join(dir, 'bin'),
      '--uninstall-wait-seconds',
      String(waitSeconds),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      lines.push(line);
      onLine?.(line);
    }
  });
  const run = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code, lines })));
  return Object.assign(run, { child });
}

const title = 'uninstall waits for a running agent to stop, and gives up on one that does not';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let node: NodeHarness | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it('an agent that keeps running: exit 1 after the wait, and the agent and its pods untouched', async () => {
    node = new NodeHarness();
    await node.start();
    const pod = node.podNs();
    const id = containerId();
    expect((await node.add(pod, id)).code).toBe(0);
    expect(node.hostVeths()).toHaveLength(1);

    const run = await uninstall(node, 1);
    expect(run.code).toBe(1);
    expect(run.lines.map((l) => l.msg)).toEqual([
      'a trellis agent is running on this node; waiting for it to stop',
      'a trellis agent is still running on this node; stop it (delete its DaemonSet) before uninstalling',
    ]);
    expect(run.lines[1]).toMatchObject({ lock: '@trellis-agent' });
    // Nothing was removed: the agent serves on.
    expect(node.hostVeths()).toHaveLength(1);
    expect(existsSync(node.agent.socket)).toBe(true);
    expect(existsSync(join(node.agent.stateDir, 'agent.lock'))).toBe(true);
    const del = await node.del(id, pod.path);
    expect(del.code, del.stdout).toBe(0);
  });

  it('as PID 1 of its container, a SIGTERM while it waits ends it at once, the agent untouched', async () => {
    node = new NodeHarness();
    await node.start();
    let waiting = false;
    // PID 1 of a PID namespace of its own, as in the uninstall DaemonSet's container, where the kernel
    // drops a signal PID 1 has no handler for: it waited out its whole --uninstall-wait-seconds.
    const run = uninstall(
      node,
      60,
      (l) => {
        if (typeof l.msg === 'string' && l.msg.includes('waiting for it to stop')) waiting = true;
      },
      ['unshare', '--pid', '--fork', '--kill-child', '--'],
    );
    for (let i = 0; i < 300 && !waiting; i++) await new Promise((r) => setTimeout(r, 50));
    expect(waiting).toBe(true);
    // The uninstall as its PID namespace sees it: unshare's child.
    const unsharePid = run.child.pid!;
    const pid1 = Number(readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim());
    expect(readFileSync(`/proc/${pid1}/cmdline`, 'utf8')).toContain('uninstall');
    const sent = Date.now();
    process.kill(pid1, 'SIGTERM');
    const done = await Promise.race([
      run,
      new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), 20_000)),
    ]);
    expect(done).not.toBe('still waiting');
    expect((done as Run).code).toBe(143);
    expect(Date.now() - sent).toBeLessThan(20_000);
    // Nothing was removed: the agent serves on.
    expect(existsSync(node.agent.socket)).toBe(true);
    expect(existsSync(join(node.agent.stateDir, 'agent.lock'))).toBe(true);
  });

  it('an agent that stops meanwhile: uninstall goes ahead once it is gone and removes everything', async () => {
    node = new NodeHarness();
    // Docker's FORWARD policy DROP: the agent accepts its pod CIDRs there, and uninstall takes that
    // back; IPv6's in legacy iptables (x_tables), which nft cannot list.
    const tools = ['iptables-nft', 'ip6tables-legacy'];
    await node.start([], (host) => {
      for (const tool of tools) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
    });
    const ours = () =>
      tools.flatMap((tool) =>
        nsExec(node!.host.name, tool, ['-S', 'FORWARD'])
          .split('\n')
          .filter((l) => l.includes('trellis')),
      );
    for (let i = 0; i < 100 && ours().length < 4; i++) await new Promise((r) => setTimeout(r, 50));
    expect(ours()).toHaveLength(4);
    const pod = node.podNs();
    expect((await node.add(pod, containerId())).code).toBe(0);
    const agent = node.agent;
    // Stopped only once uninstall says it waits: the lock, not luck, orders the two.
    const run = await uninstall(node, 30, (l) => {
      if (typeof l.msg === 'string' && l.msg.includes('waiting for it to stop')) void agent.stop();
    });
    expect(run.code, JSON.stringify(run.lines)).toBe(0);
    expect(run.lines.at(-1)).toMatchObject({
      msg: 'trellis uninstalled from this node',
      stateDir: true,
      forwardAccepts: 4,
    });
    expect(ours()).toEqual([]);
    for (const tool of tools)
      expect(nsExec(node.host.name, tool, ['-S', 'FORWARD'])).toContain('-P FORWARD DROP');
    expect(agent.child.exitCode ?? agent.child.signalCode).not.toBeNull();
    expect(ipJson<{ ifname: string }[]>(node.host.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
    expect(existsSync(node.agent.stateDir)).toBe(false);
    expect(existsSync(node.agent.socket)).toBe(false);
  });

  it("the chained portmap's hostPort rules for trellis's pods go, in iptables-nft and legacy, both families; another network's stay", async () => {
    node = new NodeHarness();
    await node.start();
    const host = node.host.name;
    const pod = node.podNs();
    // iptables and ip6tables as legacy, for the portmap runs that should write there.
    const legacyBin = mkdtempSync(join(tmpdir(), 'trl-legacy-bin-'));
    try {
      for (const t of ['iptables', 'ip6tables']) symlinkSync(`/usr/sbin/${t}-legacy`, join(legacyBin, t));
      /** portmap chained after the network's plugin, as the runtime runs it: rules for both families. */
      const portmap = (network: string, id: string, hostPort: number, legacy: boolean): void => {
        const conf = {
          cniVersion: '1.0.0',
          name: network,
          type: 'portmap',
          capabilities: { portMappings: true },
          snat: true,
          runtimeConfig: { portMappings: [{ hostPort, containerPort: 80, protocol: 'tcp' }] },
          prevResult: {
            cniVersion: '1.0.0',
            interfaces: [{ name: 'eth0', sandbox: pod.path }],
            ips: [
              { address: `10.244.1.${hostPort % 250}/32`, interface: 0 },
              { address: `fd00:10:244:1::${hostPort % 250}/128`, interface: 0 },
            ],
          },
        };
        const path = `${legacy ? `${legacyBin}:` : ''}${process.env.PATH}`;
        const r = spawnSync(
          'ip',
          ['netns', 'exec', host, 'env', `PATH=${path}`, 'CNI_COMMAND=ADD', `CNI_CONTAINERID=${id}`]
            .concat([`CNI_NETNS=${pod.path}`, 'CNI_IFNAME=eth0', `CNI_PATH=${REFERENCE_PLUGIN_DIR}`])
            .concat([join(REFERENCE_PLUGIN_DIR, 'portmap')]),
          { input: JSON.stringify(conf), encoding: 'utf8' },
        );
        expect(r.status, r.stdout + r.stderr).toBe(0);
      };
      portmap('trellis', 'c0ffee01', 8080, false);
      portmap('trellis', 'c0ffee02', 8081, true);
      portmap('kindnet', 'c0ffee03', 8082, false);
      const saves = [
        'iptables-nft-save',
        'ip6tables-nft-save',
        'iptables-legacy-save',
        'ip6tables-legacy-save',
      ];
      const nat = (tool: string) => nsExec(host, tool, ['-t', 'nat']);
      for (const tool of saves) expect(nat(tool), tool).toContain('dnat name: \\"trellis\\"');

      await node.agent.stop();
      const run = await uninstall(node, 1);
      expect(run.code, JSON.stringify(run.lines)).toBe(0);
      expect(run.lines.at(-1)).toMatchObject({ msg: 'trellis uninstalled from this node', portmapRules: 4 });
      for (const tool of saves) {
        const left = nat(tool);
        expect(left, tool).not.toContain('dnat name: \\"trellis\\"');
        // What is left of CNI-DN chains is the other network's pod's: one in each nft family.
        const chains = left.split('\n').filter((l) => l.startsWith(':CNI-DN-'));
        expect(chains, tool).toHaveLength(tool.includes('nft') ? 1 : 0);
        if (tool.includes('nft')) expect(left, tool).toContain('dnat name: \\"kindnet\\" id: \\"c0ffee03\\"');
      }
      // Again: nothing left of trellis's, nothing else touched.
      const again = await uninstall(node, 1);
      expect(again.lines.at(-1)).toMatchObject({ portmapRules: 0 });
    } finally {
      rmSync(legacyBin, { recursive: true, force: true });
    }
  });

  it('accepts iptables-nft wrote back (netfilter-persistent: save, then restore at boot) are found and removed', async () => {
    node = new NodeHarness();
    const tools = ['iptables-nft', 'ip6tables-nft'];
    await node.start([], (host) => {
      for (const tool of tools) nsExec(host, tool, ['-P', 'FORWARD', 'DROP']);
    });
    const host = node.host.name;
    const ours = () =>
      tools.flatMap((tool) =>
        nsExec(host, tool, ['-S', 'FORWARD'])
          .split('\n')
          .filter((l) => l.includes('trellis')),
      );
    for (let i = 0; i < 100 && ours().length < 4; i++) await new Promise((r) => setTimeout(r, 50));
    expect(ours()).toHaveLength(4);
    await node.agent.stop();
    for (const tool of tools) nsExec(host, 'sh', ['-c', `${tool}-save | ${tool}-restore`]);
    expect(ours()).toHaveLength(4);
    // nft now shows the comment as an xt match, without its text.
    const listed = JSON.parse(nsExec(host, 'nft', ['-j', 'list', 'chain', 'ip', 'filter', 'FORWARD'])) as {
      nftables: { rule?: { comment?: string; expr: { xt?: { name?: string } }[] } }[];
    };
    const rules = listed.nftables.flatMap((i) => (i.rule === undefined ? [] : [i.rule]));
    expect(rules.some((r) => r.comment === undefined && r.expr.some((e) => e.xt?.name === 'comment'))).toBe(
      true,
    );

    const run = await uninstall(node, 1);
    expect(run.code, JSON.stringify(run.lines)).toBe(0);
    expect(run.lines.at(-1)).toMatchObject({ msg: 'trellis uninstalled from this node', forwardAccepts: 4 });
    expect(ours()).toEqual([]);
    for (const tool of tools) expect(nsExec(host, tool, ['-S', 'FORWARD'])).toContain('-P FORWARD DROP');
  });
});
