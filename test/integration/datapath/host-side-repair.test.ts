import { execFileSync } from 'node:child_process';
import { lstatSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, ipJson, netnsSkipReason, nsPing } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr, V4_CIDR } from './harness.ts';

/**
 * A running pod's host end loses what ADD gave it behind the agent's back: `ip route flush proto 126`
 * (an operator cleaning up after another network), a route deleted by hand, the veth set down and up
 * (which drops its IPv6 addresses, the pod's gateway among them). The agent's next full pass puts it
 * back and says so; the node reaches the pod again, both families.
 */
const skip = netnsSkipReason ?? builtSkipReason();

/** `ip netns`, mount and umount on the test's own namespaces' pins (the root namespace's view). */
function rootCmd(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: 'pipe' });
}

describe.skipIf(skip !== undefined)(`a pod's host end put back${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const node = new NodeHarness();
  beforeAll(() => node.start(['--resync-seconds', '1']));
  afterAll(() => node.stop());

  it('routes flushed, the veth down and up: all back within seconds, the warnings naming what was lost', async () => {
    const { pod, id, result, hostIf } = await node.addPod();
    const [v4, v6] = [podAddr(result, 4), podAddr(result, 6)];
    const reach = () => nsPing(node.host.name, v4) && nsPing(node.host.name, v6);
    expect(reach()).toBe(true);

    const mark = node.agent.logs.length;
    ip(node.host.name, 'route', 'del', `${v4}/32`, 'dev', hostIf);
    ip(node.host.name, '-6', 'route', 'del', `${v6}/128`, 'dev', hostIf);
    ip(node.host.name, 'link', 'set', hostIf, 'down');
    ip(node.host.name, 'link', 'set', hostIf, 'up');
    // The route deletions wake the check at once, so what was lost may be put back in one go or in
    // two (the routes first, then what the veth lost going down), or by a check that listed the
    // addresses before the veth went down and found the gateway gone when it put it back: the
    // warnings name all of it.
    const warned = (): string[] =>
      node.agent.logs
        .slice(mark)
        .filter((l) => l.msg === "a pod's host end had lost what ADD gave it; put back")
        .flatMap((l) => {
          expect(l).toMatchObject({ level: 'warn', hostIf, ifname: 'eth0' });
          return l.missing as string[];
        });
    await vi.waitFor(
      () =>
        expect(warned()).toEqual(
          expect.arrayContaining([`route ${v4}/32`, 'address fe80::1', `route ${v6}/128`]),
        ),
      { timeout: 10_000, interval: 100 },
    );
    await vi.waitFor(() => expect(reach()).toBe(true), { timeout: 5000, interval: 200 });
    const gateways = ipJson<{ addr_info: { local: string }[] }[]>(node.host.name, 'addr', 'show', hostIf);
    expect(gateways[0]?.addr_info.map((a) => a.local)).toEqual(
      expect.arrayContaining(['169.254.1.1', 'fe80::1']),
    );
    expect((await node.del(id, pod.path)).code).toBe(0);
  }, 30_000);

  it("a pod's path that names another namespace now gets no veth pair made again into it", async () => {
    // The pod's namespace goes (its pair with it) and its path names another one: what a cri-dockerd
    // node sees when /proc/PID/ns/net's PID is reused after a reboot or a lost DEL. The lease still
    // names the path; the pod's address and default route must not go into the newcomer.
    const { pod, id, result, hostIf } = await node.addPod();
    const lease = JSON.parse(
      readFileSync(join(node.agent.stateDir, 'ipam', 'leases', `${id}@eth0.json`), 'utf8'),
    ) as { netnsId?: string };
    expect(lease.netnsId).toMatch(/^[0-9a-f-]{36}\/\d+:\d+$/);
    // Another namespace comes to be named by the pod's path (made first, so it cannot be handed the
    // old one's inode number), and the pod's own namespace, unpinned, goes with its pair.
    const other = `${pod.name}-next`;
    rootCmd('ip', ['netns', 'add', other]);
    try {
      rootCmd('umount', [pod.path]);
      rootCmd('mount', ['--bind', `/run/netns/${other}`, pod.path]);
    } catch (err) {
      rootCmd('ip', ['netns', 'del', other]);
      throw err;
    }
    onTestFinished(() => rootCmd('ip', ['netns', 'del', other]));
    await vi.waitFor(() => expect(node.hostVeths()).not.toContain(hostIf), { timeout: 5_000, interval: 50 });
    const passes = () => node.agent.logs.filter((l) => l.msg === 'reconciled').length;
    const seen = passes();
    await vi.waitFor(() => expect(passes()).toBeGreaterThanOrEqual(seen + 2), {
      timeout: 10_000,
      interval: 100,
    });
    expect(ipJson<{ ifname: string }[]>(other, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
    expect(node.hostVeths()).not.toContain(hostIf);
    expect(
      node.agent.logs.some(
        (l) => typeof l.msg === 'string' && l.msg.startsWith("a running pod's veth pair was deleted"),
      ),
    ).toBe(false);
    // The runtime's DEL still frees the address (a reservation is a symlink to its owner's name, which
    // existsSync would follow: lstat sees the link itself).
    const reservation = join(node.agent.stateDir, 'ipam', 'addrs', podAddr(result, 4));
    const reserved = (): boolean => lstatSync(reservation, { throwIfNoEntry: false }) !== undefined;
    expect(reserved()).toBe(true);
    expect((await node.del(id, pod.path)).code).toBe(0);
    expect(reserved()).toBe(false);
  }, 30_000);

  it('a running pod whose lease record is gone at a restart keeps its network: the lease is rebuilt from its veth', async () => {
    // A network config's own MTU, which the rebuilt lease must keep as the lost one did.
    const { pod, id, result, hostIf } = await node.addPod(node.conf({ mtu: 1300 }));
    const [v4, v6] = [podAddr(result, 4), podAddr(result, 6)];
    const mtus = () => [
      ipJson<{ mtu: number }[]>(node.host.name, 'link', 'show', hostIf)[0]?.mtu,
      ipJson<{ mtu: number }[]>(pod.name, 'link', 'show', 'eth0')[0]?.mtu,
    ];
    expect(mtus()).toEqual([1300, 1300]);
    // The alias says whose the veth is, for an operator's `ip link` and for the rebuild.
    const shown = ipJson<{ ifalias?: string }[]>(node.host.name, 'link', 'show', hostIf)[0];
    expect(shown?.ifalias).toBe(`trellis id=${id} if=eth0 net=trellis pod=default/${id}`);

    await node.agent.stop();
    // The state directory lost while the agent was down (its only pod's lease with it).
    rmSync(join(node.agent.stateDir, 'ipam'), { recursive: true });
    await node.startAgain(['--resync-seconds', '1']);
    const held = await node.logLine((l) =>
      String(l.msg).startsWith('lease record missing for a running pod'),
    );
    expect(held).toMatchObject({ level: 'warn', hostIf, pod: `default/${id}`, addresses: [v4, v6] });
    const rebuilt = await node.logLine(
      (l) => l.msg === 'lease record missing; rebuilt from the kernel',
      10_000,
    );
    expect(rebuilt).toMatchObject({
      addresses: [v4, v6],
      netns: pod.path,
      pod: `default/${id}`,
      podFrom: "the veth's alias",
    });
    expect(
      node.agent.logs.some((l) => String(l.msg).startsWith('start-up sweep removed routed pod veths')),
    ).toBe(false);

    // Still reachable, and its addresses are not handed out again.
    expect(nsPing(node.host.name, v4) && nsPing(node.host.name, v6)).toBe(true);
    // The pair made again from the rebuilt lease (deleted by hand here) has the MTU ADD gave it, not
    // the node's for new pods.
    ip(node.host.name, 'link', 'del', hostIf);
    await node.logLine(
      (l) => l.msg === "a running pod's veth pair was deleted by someone else; made again from its lease",
      5_000,
    );
    await vi.waitFor(() => expect(nsPing(node.host.name, v4) && nsPing(node.host.name, v6)).toBe(true), {
      timeout: 5_000,
      interval: 100,
    });
    expect(mtus()).toEqual([1300, 1300]);
    const { pod: other, id: otherId, result: next } = await node.addPod();
    expect([podAddr(next, 4), podAddr(next, 6)]).not.toContain(v4);
    // A normal lease again: CHECK passes, DEL takes the veth and frees the addresses.
    const check = await node.check(id, pod, result);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect((await node.del(id, pod.path)).code).toBe(0);
    expect((await node.del(otherId, other.path)).code).toBe(0);
    expect(await node.waitForVeths(0)).toEqual([]);
  }, 40_000);

  it('a veth without its alias (made by an earlier release) and without a lease goes at a restart, named at warn', async () => {
    const { id, result, hostIf } = await node.addPod();
    ip(node.host.name, 'link', 'set', 'dev', hostIf, 'alias', '');
    await node.agent.stop();
    rmSync(join(node.agent.stateDir, 'ipam', 'leases', `${id}@eth0.json`));
    await node.startAgain(['--resync-seconds', '1']);
    const line = await node.logLine((l) =>
      String(l.msg).startsWith('start-up sweep removed routed pod veths'),
    );
    expect(line).toMatchObject({
      level: 'warn',
      veths: [
        {
          name: hostIf,
          addresses: expect.arrayContaining([podAddr(result, 4), podAddr(result, 6)]),
        },
      ],
    });
    await node.waitForVeths(0);
  }, 30_000);
});

describe.skipIf(skip !== undefined)(
  `a pod's host route deleted by hand${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start()); // the default resync: 60 s
    afterAll(() => node.stop());

    it('is put back within seconds, not at the next resync (60 s), and only that pod is named', async () => {
      const pods = [node.podNs(), node.podNs()];
      const ids = pods.map(() => containerId());
      const results: AddResult[] = [];
      for (const [i, pod] of pods.entries()) {
        const add = await node.add(pod, ids[i]!);
        expect(add.code, add.stdout).toBe(0);
        results.push(add.json as AddResult);
      }
      const v4 = podAddr(results[0]!, 4);
      const v6 = podAddr(results[1]!, 6);
      const mark = node.agent.logs.length;
      ip(node.host.name, 'route', 'del', `${v4}/32`, 'dev', hostVethName(ids[0]!, 'eth0'));
      ip(node.host.name, '-6', 'route', 'del', `${v6}/128`, 'dev', hostVethName(ids[1]!, 'eth0'));
      await vi.waitFor(
        () => {
          expect(nsPing(node.host.name, v4)).toBe(true);
          expect(nsPing(node.host.name, v6)).toBe(true);
        },
        { timeout: 3000, interval: 100 },
      );
      // The lines follow the repairs (and cross a pipe): waited for, not read as the pings succeed.
      const named = () =>
        node.agent.logs
          .slice(mark)
          .filter((l) => l.msg === "a pod's host end had lost what ADD gave it; put back")
          .map((l) => [l.hostIf, l.missing])
          .sort();
      await vi.waitFor(
        () =>
          expect(named()).toEqual(
            [
              [hostVethName(ids[0]!, 'eth0'), [`route ${v4}/32`]],
              [hostVethName(ids[1]!, 'eth0'), [`route ${v6}/128`]],
            ].sort(),
          ),
        { timeout: 3000, interval: 50 },
      );
      // No full pass was needed for it: the deletion woke the host-end check alone.
      const passes = node.agent.logs.slice(mark).filter((l) => l.msg === 'reconciled');
      expect(passes.filter((l) => JSON.stringify(l.why ?? '').includes('deleted'))).toEqual([]);
      for (const [i, pod] of pods.entries()) expect((await node.del(ids[i]!, pod.path)).code).toBe(0);
    }, 30_000);

    it("a running pod's veth pair deleted by hand is made again from its lease, said at warn", async () => {
      // A network config's own MTU, which the node's MTU for new pods must not replace.
      const { pod, id, result, hostIf } = await node.addPod(node.conf({ mtu: 1300 }));
      const [v4, v6] = [podAddr(result, 4), podAddr(result, 6)];
      const mtus = () => [
        ipJson<{ mtu: number }[]>(node.host.name, 'link', 'show', hostIf)[0]?.mtu,
        ipJson<{ mtu: number }[]>(pod.name, 'link', 'show', 'eth0')[0]?.mtu,
      ];
      expect(mtus()).toEqual([1300, 1300]);
      ip(node.host.name, 'link', 'del', hostIf); // takes the pod's eth0 with it
      const line = await node.logLine(
        (l) => l.msg === "a running pod's veth pair was deleted by someone else; made again from its lease",
        5_000,
      );
      expect(line).toMatchObject({
        level: 'warn',
        hostIf,
        netns: pod.path,
        containerId: id.slice(0, 12),
        addresses: [v4, v6],
      });
      await vi.waitFor(() => expect(nsPing(node.host.name, v4) && nsPing(node.host.name, v6)).toBe(true), {
        timeout: 5_000,
        interval: 100,
      });
      const shown = ipJson<{ ifalias?: string }[]>(node.host.name, 'link', 'show', hostIf)[0];
      expect(shown?.ifalias).toBe(`trellis id=${id} if=eth0 net=trellis pod=default/${id}`);
      expect(mtus()).toEqual([1300, 1300]);
      // A lease like any other again: CHECK passes, DEL takes it all.
      const check = await node.check(id, pod, result);
      expect(check.code, check.stdout + check.stderr).toBe(0);
      expect((await node.del(id, pod.path)).code).toBe(0);
      expect(await node.waitForVeths(0)).toEqual([]);
    }, 30_000);
  },
);

describe.skipIf(skip !== undefined)(
  `an IPv4-only pod's veth pair deleted by hand${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness([V4_CIDR]);
    beforeAll(() => node.start()); // the default resync: 60 s
    afterAll(() => node.stop());

    it('is made again within seconds: the link deletion wakes the check (an IPv4 route goes silently)', async () => {
      const { pod, id, result, hostIf } = await node.addPod();
      const v4 = podAddr(result, 4);
      ip(node.host.name, 'link', 'del', hostIf);
      const made = "a running pod's veth pair was deleted by someone else; made again from its lease";
      expect(await node.logLine((l) => l.msg === made, 5_000)).toMatchObject({ addresses: [v4] });
      await vi.waitFor(() => expect(nsPing(node.host.name, v4)).toBe(true), {
        timeout: 5_000,
        interval: 100,
      });
      expect(node.agent.logs.filter((l) => l.msg === made)).toHaveLength(1);
      // A DEL's own veth deletion (its lease released first) is not taken for one.
      expect((await node.del(id, pod.path)).code).toBe(0);
      expect(await node.waitForVeths(0)).toEqual([]);
      await new Promise((r) => setTimeout(r, 500));
      expect(node.hostVeths()).toEqual([]);
    }, 30_000);

    it('set down by hand, is set up again within seconds, its route back (the kernel drops an IPv4 route silently)', async () => {
      const { pod, id, result, hostIf } = await node.addPod();
      const v4 = podAddr(result, 4);
      const mark = node.agent.logs.length;
      ip(node.host.name, 'link', 'set', hostIf, 'down');
      const line = await vi.waitFor(
        () => {
          const put = "a pod's host end had lost what ADD gave it; put back";
          const found = node.agent.logs.slice(mark).find((l) => l.msg === put);
          expect(found).toBeDefined();
          return found;
        },
        { timeout: 5_000, interval: 50 },
      );
      expect(line).toMatchObject({ level: 'warn', hostIf, missing: ['up', `route ${v4}/32`] });
      await vi.waitFor(() => expect(nsPing(node.host.name, v4)).toBe(true), {
        timeout: 5_000,
        interval: 100,
      });
      // Woken by the link's notification, not by a pass (the resync is a minute away).
      expect(node.agent.logs.slice(mark).filter((l) => l.msg === 'reconciled')).toEqual([]);
      expect((await node.del(id, pod.path)).code).toBe(0);
      expect(await node.waitForVeths(0)).toEqual([]);
    }, 30_000);
  },
);
