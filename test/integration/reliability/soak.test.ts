/**
 * The short soak (bench/soak.ts runs the long one): 200 pod lifecycles at concurrency 16 through the
 * real shim and agent. No call may fail, no address may be handed out while another live pod holds
 * it, nothing may be left at the end, and sampled pods must answer a ping.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatReport, privateShimCopy, runSoak } from '../../../bench/soak.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason } from '../../support/netns.ts';
import { NodeHarness } from '../datapath/harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

describe.skipIf(skip !== undefined)(`soak, short${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const node = new NodeHarness();
  beforeAll(() => node.start());
  afterAll(() => node.stop());

  it('200 ADD/DEL cycles at concurrency 16: no failure, no duplicate address, no leak', async () => {
    const shim = privateShimCopy();
    const r = await runSoak(node, { cycles: 200, concurrency: 16, pingEvery: 20, shim: shim.path }).finally(
      () => shim.remove(),
    );
    console.log(formatReport(r));
    expect(r.failures, r.failureSamples.join('\n')).toBe(0);
    expect(r.delRetries).toBe(0);
    expect(r.duplicates, r.duplicateSamples.join('\n')).toBe(0);
    expect(r.maxLive).toBeGreaterThanOrEqual(8); // the duplicate check saw many live pods at once
    expect(r.pings).toBe(10);
    expect(r.pingFailures).toBe(0);
    expect(r.leftovers).toEqual({
      leases: [],
      reservations: [],
      quarantine: [],
      spool: [],
      veths: [],
      routes: [],
    });
    expect(r.addMs.p50).toBeGreaterThan(0);
  }, 120_000);
});
