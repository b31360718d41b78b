import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason, nsPing } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

describe.skipIf(skip !== undefined)(`concurrency${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const node = new NodeHarness();
  beforeAll(() => node.start());
  afterAll(() => node.stop());

  it('50 simultaneous ADDs through the shim all succeed with distinct addresses, and 50 DELs clean up', async () => {
    const pods = Array.from({ length: 50 }, () => ({ ns: node.podNs(), id: containerId() }));
    const runs = await Promise.all(pods.map((p) => node.add(p.ns, p.id)));
    for (const r of runs) expect(r.code, r.stdout).toBe(0);
    const results = runs.map((r) => r.json as AddResult);
    const v4 = results.map((r) => podAddr(r, 4));
    const v6 = results.map((r) => podAddr(r, 6));
    expect(new Set(v4).size).toBe(50);
    expect(new Set(v6).size).toBe(50);
    expect(node.hostVeths()).toHaveLength(50);
    expect(node.hostRoutes(4)).toHaveLength(50);
    // Spot-check the kernel: first and last pod reach each other.
    expect(nsPing(pods[0]!.ns.name, v4[49]!)).toBe(true);
    expect(nsPing(pods[49]!.ns.name, v6[0]!)).toBe(true);

    const dels = await Promise.all(pods.map((p) => node.del(p.id, p.ns.path)));
    for (const d of dels) expect(d.code).toBe(0);
    expect(await node.waitForVeths(0, 10_000)).toHaveLength(0);
    expect(node.hostRoutes(4)).toHaveLength(0);
    expect(node.hostRoutes(6)).toHaveLength(0);
  });
});
