import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason, type TestNetns } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

/**
 * The pods' host-end check against a full pool under churn: each DEL frees the one address the next
 * ADD is given, within milliseconds, while passes (every second here) check the host ends. A check
 * that listed before such a DEL once "put back" the dead pod's route through its dying veth,
 * replacing the new pod's, which was then cut off until the next pass, and warned about pods that
 * were gone. The repair now runs under the attachment's lock, and only for a lease still held.
 */
const skip = netnsSkipReason ?? builtSkipReason();
/** DEL+ADD cycles over four workers (a few seconds here). */
const CHURN_CYCLES = 300;

describe.skipIf(skip !== undefined)(`host-end check under churn${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const node = new NodeHarness(['10.99.0.0/28']); // 13 pod addresses
  beforeAll(() => node.start(['--resync-seconds', '1']));
  afterAll(() => node.stop());

  it("never moves a live pod's route to another pod's veth, nor warns about pods already deleted", async () => {
    const live = new Map<string, { pod: TestNetns; address: string }>();
    const deleted = new Set<string>();
    const addOne = async (): Promise<void> => {
      const pod = node.podNs();
      const id = containerId();
      // Overlapping a DEL, the ADD may come before the address is free: a runtime retries.
      let add = await node.add(pod, id);
      for (let i = 0; i < 100 && (add.json as { code?: number }).code === 101; i++) {
        await new Promise((r) => setTimeout(r, 5));
        add = await node.add(pod, id);
      }
      expect(add.code, add.stdout).toBe(0);
      live.set(id, { pod, address: podAddr(add.json as AddResult, 4) });
    };
    for (let i = 0; i < 13; i++) await addOne();
    const wrong: string[] = [];
    const checkRoutes = (): void => {
      const via = new Map(node.hostRoutes(4).map((r) => [r.dst, r.dev]));
      for (const [id, p] of live) {
        const dev = via.get(p.address);
        if (dev !== undefined && dev !== hostVethName(id, 'eth0'))
          wrong.push(`${p.address} via ${dev}, not ${id}'s`);
      }
    };
    // A fixed amount of churn, not a time box (which would measure the machine's speed).
    let cycles = 0;
    const worker = async (): Promise<void> => {
      while (cycles < CHURN_CYCLES) {
        cycles++;
        const [id, p] = [...live][Math.floor(Math.random() * live.size)]!;
        live.delete(id);
        deleted.add(id);
        // The DEL and the next ADD overlap, as a busy runtime's do.
        const [del] = await Promise.all([node.del(id, p.pod.path), addOne()]);
        expect(del.code, del.stdout).toBe(0);
        checkRoutes();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    // Every live pod's route is through its own veth once the dust settles (a pass at most later).
    await vi.waitFor(
      () => {
        const via = new Map(node.hostRoutes(4).map((r) => [r.dst, r.dev]));
        for (const [id, p] of live) expect(via.get(p.address), id).toBe(hostVethName(id, 'eth0'));
      },
      { timeout: 5000, interval: 100 },
    );
    expect(wrong).toEqual([]);
    const aboutTheDead = node.agent.logs.filter(
      (l) =>
        (String(l.msg).startsWith("a pod's host end") ||
          String(l.msg).startsWith("a running pod's veth pair")) &&
        [...deleted].some((d) => d.startsWith(String(l.containerId))),
    );
    expect(aboutTheDead).toEqual([]);
  }, 60_000);
});
