import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { containerId, NodeHarness } from '../datapath/harness.ts';

/**
 * One agent per network namespace, whatever its --state-dir: a second agent (another state
 * directory, or a node whose /var/lib/trellis was lost) would find the first one's pod veths without
 * leases, take them for half-done work and delete them. It stops at start instead, before it touches
 * anything. Real agents, real shim.
 */
const skip = netnsSkipReason ?? builtSkipReason();

const title =
  'a second agent in the same network namespace stops at start and leaves the first one’s pods alone';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let node: NodeHarness | undefined;
  let second: AgentProcess | undefined;
  afterEach(async () => {
    await second?.kill();
    if (second !== undefined) removeAgentDir(second.dir);
    second = undefined;
    await node?.stop();
    node = undefined;
  });

  it('another --state-dir: exit 1 naming the lock; the first agent’s pod keeps its veth and its DEL works', async () => {
    node = new NodeHarness();
    await node.start();
    const pod = node.podNs();
    const id = containerId();
    expect((await node.add(pod, id)).code).toBe(0);
    const before = node.hostVeths();
    expect(before).toHaveLength(1);

    second = startAgent({ ns: node.host.name, podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    const code = await second.exited();
    expect(code, second.stderr()).not.toBe(0);
    expect(code).not.toBeNull(); // it stopped by itself, not by a signal
    expect(second.logs.find((l) => l.msg === 'agent failed to start')).toMatchObject({
      msg: 'agent failed to start',
      error: expect.stringContaining('@trellis-agent (this network namespace) is locked by another process'),
    });
    expect(node.hostVeths()).toEqual(before);
    const del = await node.del(id, pod.path);
    expect(del.code, del.stdout).toBe(0);
  });
});

const squatTitle = 'the network namespace lock held by an unprivileged process (the name squatted)';
const squatSkip =
  skip ??
  (!existsSync('/usr/bin/python3') || !existsSync('/usr/bin/setpriv')
    ? 'needs /usr/bin/python3 and setpriv'
    : undefined);
describe.skipIf(squatSkip !== undefined)(
  squatSkip === undefined ? squatTitle : `${squatTitle} (skipped: ${squatSkip})`,
  () => {
    const pool = new NetnsPool();
    let squatter: ChildProcess | undefined;
    const agents: AgentProcess[] = [];
    afterEach(async () => {
      for (const a of agents.splice(0)) {
        await a.kill();
        removeAgentDir(a.dir);
      }
      squatter?.kill('SIGKILL');
      squatter = undefined;
      pool.cleanup();
    });

    it('the agent starts all the same, locking a file named by the namespace instead; a second agent is still refused', async () => {
      const ns = pool.add('squat');
      // uid 4242 binds @trellis-agent first, as any local process or hostNetwork pod could.
      squatter = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns.name,
          'setpriv',
          '--reuid=4242',
          '--regid=4242',
          '--clear-groups',
          '/usr/bin/python3',
          '-c',
          "import socket,sys,time\ns=socket.socket(socket.AF_UNIX);s.bind('\\0trellis-agent');print('bound',flush=True);time.sleep(120)",
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve, reject) => {
        squatter!.stdout!.once('data', () => resolve());
        squatter!.once('exit', (c) => reject(new Error(`the squatter exited (${c})`)));
      });
      const first = startAgent({ ns: ns.name, podCIDRs: ['10.244.1.0/24'] });
      agents.push(first);
      await first.ready();
      const socketDir = dirname(first.socket);
      expect(first.logs.find((l) => String(l.msg).startsWith('@trellis-agent is held by'))).toMatchObject({
        level: 'warn',
        msg: expect.stringMatching(
          new RegExp(
            `uid 4242, not a trellis agent: the lock file ${socketDir}/\\.netns-\\d+-\\d+\\.lock alone holds it$`,
          ),
        ),
      });
      /** Another agent (another --state-dir, the same socket directory): its start's failure line. */
      const refusedStart = async (socketName: string) => {
        const other = startAgent({
          ns: ns.name,
          podCIDRs: ['10.244.1.0/24'],
          extraArgs: ['--socket', join(socketDir, socketName)],
        });
        agents.push(other);
        const code = await other.exited();
        expect(code, other.stderr()).not.toBe(0);
        return other.logs.find((l) => l.msg === 'agent failed to start');
      };
      // The same socket directory (/run/trellis on a node): refused at start.
      expect(await refusedStart('second.sock')).toMatchObject({
        error: expect.stringContaining('is locked by another process'),
      });
      // The squatter gone, a later agent binds the name but finds the lock file the first one holds.
      squatter!.kill('SIGKILL');
      await new Promise((r) => squatter!.once('exit', r));
      expect(await refusedStart('third.sock')).toMatchObject({
        error: expect.stringMatching(/\.netns-\d+-\d+\.lock is locked by another process/),
      });
    });
  },
);
