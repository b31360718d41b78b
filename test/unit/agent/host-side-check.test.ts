import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { HostSideCheck, stillLeased } from '../../../pkg/agent/host-side-check.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';

const lease: Lease = {
  containerId: 'aaa',
  ifname: 'eth0',
  addresses: [{ family: 4, address: '10.244.1.2', range: '10.244.1.0/24' }],
  createdAt: '2026-12-02T00:00:00.000Z',
};

describe('stillLeased', () => {
  it('is the same lease only with the same creation and addresses', () => {
    expect(stillLeased({ ...lease, podName: 'filled in later' }, lease)).toBe(true);
    expect(stillLeased(undefined, lease)).toBe(false);
    expect(stillLeased({ ...lease, createdAt: '2026-12-02T00:00:01.000Z' }, lease)).toBe(false);
    expect(
      stillLeased(
        { ...lease, addresses: [{ family: 4, address: '10.244.1.3', range: '10.244.1.0/24' }] },
        lease,
      ),
    ).toBe(false);
  });
});

describe("HostSideCheck: a running pod's veth pair deleted", () => {
  /** A host with no links at all: every lease's veth is gone. */
  const host = {
    listLinks: async () => [],
    listAddresses: async () => [],
    listRoutes: async () => [],
    setUp: async () => [],
    answersFor: () => [],
  };

  async function run(leases: Lease[]) {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'debug' }, { write: (t: string) => void lines.push(JSON.parse(t)) });
    const remade: string[] = [];
    const check = new HostSideCheck(host as never, log, {
      whileLeased: async (_l, put) => {
        await put();
        return true;
      },
      netnsLive: () => true,
      reattach: async (l) => void remade.push(l.containerId),
    });
    await check.run(() => leases, new Set());
    return { lines, remade };
  }

  it('a pair that could not be made again is tried again at the next check, and said once', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'debug' }, { write: (t: string) => void lines.push(JSON.parse(t)) });
    let tries = 0;
    const check = new HostSideCheck(host as never, log, {
      whileLeased: async (_l, put) => {
        await put();
        return true;
      },
      netnsLive: () => true,
      reattach: async () => {
        if (++tries <= 2) throw new Error('RTM_NEWLINK: ENOMEM');
      },
    });
    const pinned = [{ ...lease, containerId: 'pinned', netns: '/var/run/netns/cni-1' }];
    for (let i = 0; i < 3; i++) await check.run(() => pinned, new Set());
    expect(tries).toBe(3);
    const said = lines.filter((l) => String(l.msg).startsWith("a running pod's veth pair was deleted"));
    expect(said.map((l) => [l.msg, l.error])).toEqual([
      [
        "a running pod's veth pair was deleted by someone else: the pod has no network; recreate it (kubectl delete pod)",
        'RTM_NEWLINK: ENOMEM',
      ],
      ["a running pod's veth pair was deleted by someone else; made again from its lease", undefined],
    ]);
  });

  it('is made again from a lease that records its namespace, or whose path is pinned; not into a /proc/PID path on an older lease, which is said', async () => {
    const { lines, remade } = await run([
      { ...lease, containerId: 'pinned', netns: '/var/run/netns/cni-1' },
      { ...lease, containerId: 'recorded', netns: '/proc/708/ns/net', netnsId: 'boot/4:4026532001/5000' },
      { ...lease, containerId: 'older', netns: '/proc/709/ns/net' },
    ]);
    expect(remade).toEqual(['pinned', 'recorded']);
    const said = lines.filter((l) => String(l.msg).startsWith("a running pod's veth pair was deleted"));
    expect(said.map((l) => [l.containerId, l.msg, l.notRemade])).toEqual([
      [
        'pinned',
        "a running pod's veth pair was deleted by someone else; made again from its lease",
        undefined,
      ],
      [
        'recorded',
        "a running pod's veth pair was deleted by someone else; made again from its lease",
        undefined,
      ],
      [
        'older',
        "a running pod's veth pair was deleted by someone else: the pod has no network; recreate it (kubectl delete pod)",
        "/proc/709/ns/net names a process, which may not be the pod's any more, and the lease (from before trellis recorded which namespace ADD used) cannot tell",
      ],
    ]);
  });
});
