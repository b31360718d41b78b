import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * A SIGTERM while the agent is still starting (its pod deleted a moment after it was created, a
 * rollout that moves on): the start runs to its end and the agent then stops as it always does,
 * exit 0, its socket gone, rather than being killed halfway by the signal's default action.
 */
const skip = netnsSkipReason ?? builtSkipReason();

const title = 'SIGTERM during start-up stops the agent the usual way';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.kill();
    if (agent !== undefined) removeAgentDir(agent.dir);
    pool.cleanup();
  });

  it('exit 0 after "trellis agent stopped", the CNI socket removed', async () => {
    const ns = pool.add('sigstart').name;
    let sent = false;
    agent = startAgent({
      ns,
      podCIDRs: ['10.244.1.0/24'],
      onLog: (l) => {
        // Inside Agent.start, before the first pass: the start is not over yet.
        if (l.msg === 'CNI socket listening' && !sent) {
          sent = true;
          agent!.child.kill('SIGTERM');
        }
      },
    });
    const code = await new Promise<number | null>((resolve) => {
      const c = agent!.child;
      if (c.exitCode !== null || c.signalCode !== null) resolve(c.exitCode);
      else c.once('exit', (exitCode) => resolve(exitCode));
    });
    expect(sent).toBe(true);
    expect([code, agent.child.signalCode]).toEqual([0, null]);
    expect(agent.logs.some((l) => l.msg === 'trellis agent stopped')).toBe(true);
    expect(existsSync(agent.socket)).toBe(false);
  });
});
