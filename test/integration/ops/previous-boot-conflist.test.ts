import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason, fakeCniBinDir } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

const skip = netnsSkipReason ?? builtSkipReason();
const WAIT = { timeout: 15_000, interval: 20 };
const WITHDRAWN = 'CNI config list of a previous boot withdrawn';

/**
 * The config list outlives a reboot (/etc/cni/net.d is on disk) while the ready marker does not (/run):
 * a runtime loading the old list would send the node's new pods to an agent not ready yet. The agent
 * withdraws it at start when no marker vouches for this boot, and publishes it again once ready; a
 * restart within the boot (the marker there) keeps it. The real agent, its real files.
 */
describe.skipIf(skip !== undefined)(
  `the config list of a previous boot${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const pool = new NetnsPool();
    const dir = mkdtempSync(join(tmpdir(), 'trl-boot-'));
    const agentDir = join(dir, 'agent');
    const confDir = join(dir, 'net.d');
    const binDir = join(dir, 'bin');
    const list = join(confDir, '10-trellis.conflist');
    let agent: AgentProcess | undefined;

    afterAll(async () => {
      try {
        await agent?.stop();
      } finally {
        pool.cleanup();
        removeAgentDir(agentDir);
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('is withdrawn at start without a ready marker and published again once ready; kept across a restart', async () => {
      mkdirSync(confDir, { recursive: true });
      mkdirSync(agentDir, { recursive: true });
      fakeCniBinDir(binDir);
      const host = pool.add('boot-host');
      const start = (): AgentProcess =>
        startAgent({
          ns: host.name,
          dir: agentDir,
          podCIDRs: ['10.244.1.0/24'],
          publish: { confDir, binDir },
        });
      const messages = (a: AgentProcess): string[] => a.logs.map((l) => String(l.msg));

      agent = start();
      await agent.ready();
      await vi.waitFor(() => expect(existsSync(list), 'the list published').toBe(true), WAIT);
      const marker = `${agent.socket}.ready`;
      await vi.waitFor(() => expect(existsSync(marker), 'the ready marker').toBe(true), WAIT);
      expect(messages(agent).some((m) => m.startsWith(WITHDRAWN))).toBe(false); // there was none
      await agent.stop();

      // A restart within the boot: the marker vouches, the list stays.
      expect(existsSync(list)).toBe(true);
      agent = start();
      await agent.ready();
      expect(messages(agent).some((m) => m.startsWith(WITHDRAWN))).toBe(false);
      expect(existsSync(list)).toBe(true);
      await agent.stop();

      // A reboot: /run emptied (the marker gone), the list still on disk.
      rmSync(marker);
      agent = start();
      await agent.ready();
      await vi.waitFor(() => expect(existsSync(list), 'the list published again').toBe(true), WAIT);
      const msgs = messages(agent);
      const withdrawn = msgs.findIndex((m) => m.startsWith(WITHDRAWN));
      const published = msgs.lastIndexOf('CNI config published');
      expect(withdrawn).toBeGreaterThanOrEqual(0);
      expect(published).toBeGreaterThan(withdrawn);
    });

    it("leaves another agent's list alone: one naming another socket, or with --no-cni-config", async () => {
      await agent?.stop();
      agent = undefined;
      const host = pool.add('boot-other');
      // The node's own agent's list (its socket elsewhere), and an agent of ours without a marker.
      const nodes = JSON.stringify({
        cniVersion: '1.0.0',
        name: 'trellis',
        plugins: [{ type: 'trellis', socket: '/run/trellis/cni.sock' }, { type: 'portmap' }],
      });
      writeFileSync(list, nodes);
      const other = startAgent({
        ns: host.name,
        podCIDRs: ['10.244.2.0/24'],
        extraArgs: ['--cni-conf-dir', confDir], // with --no-cni-config (no publish)
      });
      try {
        await other.ready();
        expect(other.logs.some((l) => String(l.msg).startsWith(WITHDRAWN))).toBe(false);
        expect(readFileSync(list, 'utf8')).toBe(nodes);
      } finally {
        await other.stop();
        removeAgentDir(other.dir);
      }
      // A publishing agent with another socket: not its list to withdraw (it writes its own once ready).
      const publishing = startAgent({
        ns: host.name,
        podCIDRs: ['10.244.2.0/24'],
        publish: { confDir, binDir },
      });
      try {
        await publishing.ready();
        expect(publishing.logs.some((l) => String(l.msg).startsWith(WITHDRAWN))).toBe(false);
      } finally {
        await publishing.stop();
        removeAgentDir(publishing.dir);
      }
    });
  },
);
