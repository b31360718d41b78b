import { afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason } from '../../support/netns.ts';
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
    const child = second.child;
    const code = await new Promise<number | null>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
      else child.once('exit', (c) => resolve(c));
    });
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
