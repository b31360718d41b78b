import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inOwnMounts } from '../../support/own-mounts.ts';

const skip =
  netnsSkipReason ??
  builtSkipReason() ??
  (spawnSync('unshare', ['--version']).status === 0 ? undefined : 'unshare (util-linux) is missing');

/**
 * The DaemonSet mounts /run/trellis and /var/lib/trellis from the host. `rm -rf /run/trellis` on the
 * node deletes the directory the container's mount is rooted at: nothing can be created in it again
 * (the socket, the lease records), and the host's new directory is one the container never sees. The
 * agent's repairs cannot work there; it stops and exits 1, for the kubelet to restart the container
 * with the host's directory mounted afresh, rather than stay up and healthy, unreachable, for good.
 * Here the agent runs in a mount namespace of its own, its directory a bind mount of another.
 */
describe.skipIf(skip !== undefined)(
  `a host directory deleted under the agent's mount${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const pool = new NetnsPool();
    const hostDir = mkdtempSync(join(tmpdir(), 'trl-agent-host-'));
    const dir = mkdtempSync(join(tmpdir(), 'trl-agent-'));
    let agent: AgentProcess | undefined;

    afterAll(async () => {
      try {
        await agent?.kill();
      } finally {
        pool.cleanup();
        removeAgentDir(dir);
        rmSync(hostDir, { recursive: true, force: true });
      }
    });

    it('stops the agent with exit code 1 and says which directory, instead of repairing in vain', async () => {
      agent = startAgent({
        ns: pool.add('host').name,
        podCIDRs: ['10.244.1.0/24'],
        dir,
        mountedFrom: hostDir,
        wrap: inOwnMounts('mount --bind "$0" "$1"', [hostDir, dir]),
      });
      await agent.ready();
      expect(existsSync(join(hostDir, 'cni.sock'))).toBe(true); // the host's view of the socket
      expect(existsSync(agent.socket)).toBe(false); // the mount is the agent's alone

      rmSync(hostDir, { recursive: true, force: true }); // a cleanup on the node
      const a = agent;
      const code = await Promise.race([
        a.exited(),
        new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 25_000).unref()),
      ]);
      expect(code, a.stderr()).toBe(1);
      expect(
        a.logs.find((l) => String(l.msg).startsWith('a directory the agent keeps its files in')),
      ).toMatchObject({ level: 'error', directory: dir });
      expect(a.logs.find((l) => String(l.msg).startsWith('stopping:'))).toMatchObject({
        restart: `${dir} was deleted under the agent's mount`,
      });
      expect(a.logs.filter((l) => l.msg === 'listening again failed')).toEqual([]);
    }, 40_000);
  },
);
