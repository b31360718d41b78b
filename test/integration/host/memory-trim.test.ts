import { afterEach, describe, expect, it, vi } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason } from '../../support/netns.ts';
import { containerId, NodeHarness } from '../datapath/harness.ts';

/**
 * The agent hands memory back after a burst of work (pkg/agent/idle-trim.ts): 2 s after its last CNI
 * call it calls malloc_trim (glibc, through ffi-rs), unmaps the clean file pages after the first burst,
 * and logs it. Its start unmaps the file pages it mapped before the first pass. Real agent, real shim.
 */
const skip = netnsSkipReason ?? builtSkipReason();
const TRIMMED = 'memory handed back after a burst of work';

const title = 'the agent hands memory back once a burst of CNI calls is over';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let node: NodeHarness | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it('2 s after the last of a run of ADDs, with resident memory before and after', async () => {
    node = new NodeHarness();
    await node.start();
    const agent = node.agent;
    // Six ADDs 0.5 s apart (2.5 s in all, 1.5 s to spare against the 2 s idle wait on a slow machine):
    // each one starts the idle wait over, so the start-up pass's trim (2 s after ready) must not come
    // until 2 s after the last of them.
    for (let i = 0; i < 6; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 500));
      const r = await node.add(node.podNs(), containerId());
      expect(r.code, r.stdout).toBe(0);
    }
    // A call's line is written after its answer: the sixth is awaited, not read at once.
    const adds = () => agent.logs.filter((l) => l.msg === 'CNI ADD ok');
    await vi.waitFor(() => expect(adds()).toHaveLength(6), { timeout: 5000, interval: 20 });
    const lastAdd = adds()[5];
    expect(lastAdd).toBeDefined();
    const lastAddAt = Date.parse(String(lastAdd!.time));
    const deadline = Date.now() + 15_000;
    let trimmed: Record<string, unknown> | undefined;
    while (trimmed === undefined && Date.now() < deadline) {
      trimmed = agent.logs.find((l) => l.msg === TRIMMED && Date.parse(String(l.time)) > lastAddAt);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(trimmed, JSON.stringify(agent.logs.slice(-5))).toMatchObject({
      component: 'memory',
      durationMs: expect.any(Number),
      rssMbBefore: expect.any(Number),
      rssMbAfter: expect.any(Number),
    });
    // Not while work was going on: the idle wait is counted from the last call.
    expect(Date.parse(String(trimmed!.time)) - lastAddAt).toBeGreaterThanOrEqual(1900);
    expect(agent.logs.filter((l) => l.msg === TRIMMED && Date.parse(String(l.time)) <= lastAddAt)).toEqual(
      [],
    );
    expect(agent.logs.find((l) => String(l.msg).startsWith('could not'))).toBeUndefined();
    // The start unmapped the file pages it had mapped before the first pass (pkg/netns/file-pages.ts):
    // an idle Node 24 alone maps ~40 MB of its binary, most of them touched only while it starts.
    const startUnmap = agent.logs.find((l) => l.msg === 'file pages unmapped');
    expect(startUnmap).toMatchObject({ component: 'memory', refused: 0 });
    expect(startUnmap!.fileMbUnmapped).toBeGreaterThan(10);
    const firstAdd = agent.logs.findIndex((l) => l.msg === 'CNI ADD ok');
    expect(agent.logs.indexOf(startUnmap!)).toBeLessThan(firstAdd);
    // The first trim after the start also unmaps what the start's burst mapped.
    expect(trimmed!.fileMbUnmapped).toBeGreaterThan(0);
  });
});
