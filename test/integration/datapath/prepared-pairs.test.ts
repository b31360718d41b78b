import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { podMac } from '../../../pkg/datapath/mac.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { isPreparedName, type PreparedOutcome, PreparedPairs } from '../../../pkg/datapath/prepared-pairs.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import {
  ip,
  ipJson,
  NetnsPool,
  netnsSkipReason,
  nsExec,
  nsPing,
  type TestNetns,
} from '../../support/netns.ts';
import { createPodPins } from '../../support/pod-pins.ts';
import { inProcessDeps } from './in-process-deps.ts';

/**
 * Veth pairs made when a pod's namespace appears, before its ADD (prepared-pairs.ts), in real
 * namespaces: what a pair is before ADD, what ADD makes of it, and that every way a pair can end
 * (taken, expired, its namespace gone, the agent stopping, an ADD that fails) leaves nothing behind.
 */

interface IpLink {
  ifname: string;
  ifindex: number;
  address: string;
  mtu: number;
  flags: string[];
}

const silent = createLogger({ level: 'silent', destination: new PassThrough() });

/** Pod netlink sockets opened through the port (the namespace path of each) and how many were closed. */
interface PodSockets {
  opened: string[];
  closed: number;
}

describe.skipIf(netnsSkipReason !== undefined)('prepared veth pairs (root, real namespaces)', () => {
  const pool = new NetnsPool();
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
    pool.cleanup();
  });

  function setUp(
    ranges: string[],
    opts: { ttlMs?: number; max?: number; mtu?: number } = {},
  ): {
    host: TestNetns;
    deps: DatapathDeps;
    pairs: PreparedPairs;
    outcomes: PreparedOutcome[];
    podSockets: PodSockets;
  } {
    const host = pool.add('host');
    const base = inProcessDeps(host, ranges, cleanups, { echo: true });
    const { host: handle, deleter } = base;
    // The pod sockets the real port opens, and how many were closed again (by whom: see PodSockets).
    const podSockets: PodSockets = { opened: [], closed: 0 };
    const netns = {
      ...base.netns,
      openPodNetlink: (fd: number, path: string) => {
        const sock = base.netns.openPodNetlink(fd, path);
        podSockets.opened.push(path);
        return {
          ...sock,
          close: () => {
            podSockets.closed++;
            sock.close();
          },
        };
      },
    };
    const outcomes: PreparedOutcome[] = [];
    const pairs = new PreparedPairs({
      host: handle,
      netns,
      deleter,
      settings: () => ({ mtu: opts.mtu ?? 1500, ipv6: ranges.some((r) => r.includes(':')) }),
      log: silent,
      ...(opts.ttlMs === undefined ? {} : { ttlMs: opts.ttlMs }),
      ...(opts.max === undefined ? {} : { max: opts.max }),
      onOutcome: (o) => outcomes.push(o),
    });
    cleanups.push(() => void pairs.stop());
    return {
      host,
      deps: { ...base, netns, prepared: pairs },
      pairs,
      outcomes,
      podSockets,
    };
  }

  const links = (ns: string): IpLink[] => ipJson<IpLink[]>(ns, 'link', 'show');
  const names = (ns: string): string[] => links(ns).map((l) => l.ifname);
  const sysctl = (ns: string, key: string): string => nsExec(ns, 'sysctl', ['-n', key]).trim();

  /** The pair made for `pod`, waited for (prepare only starts it). */
  async function prepared(pairs: PreparedPairs, host: TestNetns, pod: TestNetns): Promise<IpLink> {
    expect(pairs.prepare(pod.path)).toBe('started');
    await pairs.settled();
    const inPod = names(pod.name);
    const found = links(host.name).find((l) => isPreparedName(l.ifname) && inPod.includes(l.ifname));
    if (found === undefined) throw new Error(`no prepared pair for ${pod.name}`);
    return found;
  }

  it('makes the pair down under a temporary name, its sysctls set, and ADD renames and configures it', async () => {
    const { host, deps, pairs, outcomes } = setUp(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    const pod = pool.add('pod', { loUp: false });
    const made = await prepared(pairs, host, pod);
    const podEnd = links(pod.name).find((l) => l.ifname === made.ifname)!;
    expect(made.flags).not.toContain('UP');
    expect(podEnd.flags).not.toContain('UP');
    expect(sysctl(pod.name, `net.ipv6.conf.${made.ifname}.accept_dad`)).toBe('0');
    expect(sysctl(host.name, `net.ipv6.conf.${made.ifname}.accept_dad`)).toBe('0');
    expect(sysctl(host.name, `net.ipv6.conf.${made.ifname}.accept_ra`)).toBe('0');
    // Both MACs set when made (NET_ADDR_SET): systemd-udevd's MACAddressPolicy leaves them alone.
    for (const ns of [host.name, pod.name]) {
      expect(nsExec(ns, 'cat', [`/sys/class/net/${made.ifname}/addr_assign_type`]).trim()).toBe('3');
    }

    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBe(true);
    const name = hostVethName('c1', 'eth0');
    const hostEnd = links(host.name).find((l) => l.ifname === name)!;
    // The same links, renamed: nothing was created by ADD.
    expect(hostEnd.ifindex).toBe(made.ifindex);
    expect(att.host).toEqual({ name, index: made.ifindex, mac: made.address });
    const eth0 = links(pod.name).find((l) => l.ifname === 'eth0')!;
    expect(eth0.ifindex).toBe(podEnd.ifindex);
    // Given the attachment's own MAC in the rename (mac.ts podMac), as the kernel now shows it.
    expect(att.pod).toEqual({ name: 'eth0', index: podEnd.ifindex, mac: podMac('c1', 'eth0'), mtu: 1500 });
    expect(eth0.address).toBe(podMac('c1', 'eth0'));
    expect(names(pod.name).sort()).toEqual(['eth0', 'lo']);
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
    // The sysctls went along with the rename.
    expect(sysctl(pod.name, 'net.ipv6.conf.eth0.accept_dad')).toBe('0');
    expect(sysctl(host.name, `net.ipv6.conf.${name}.accept_ra`)).toBe('0');
    for (const a of att.addresses) expect(nsPing(host.name, a.address)).toBe(true);
    expect(outcomes).toEqual(['used']);
    expect(pairs.size).toBe(0);
  });

  it('ADD configures the pod end through the socket the pair opened when made; every other end closes it', async () => {
    const { host, deps, pairs, podSockets } = setUp(['10.244.1.0/24'], { ttlMs: 300 });
    const [pod, expiring, discarded] = [0, 1, 2].map(() => pool.add('pod', { loUp: false })) as [
      TestNetns,
      TestNetns,
      TestNetns,
    ];
    await prepared(pairs, host, pod);
    // Opened in the pod's namespace as the pair was made, and held for its ADD.
    expect(podSockets).toEqual({ opened: [pod.path], closed: 0 });
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBe(true);
    // ADD opened none of its own, configured the pod through that one (eth0 is up and addressed in
    // the pod's namespace, its routes there) and closed it.
    expect(podSockets).toEqual({ opened: [pod.path], closed: 1 });
    type IpAddr = { addr_info: { family: string; local: string }[]; flags: string[] };
    const eth0 = ipJson<IpAddr[]>(pod.name, 'addr', 'show', 'eth0')[0]!;
    expect(eth0.flags).toContain('UP');
    expect(eth0.addr_info.filter((a) => a.family === 'inet').map((a) => a.local)).toEqual(
      att.addresses.map((a) => a.address),
    );
    expect(ipJson<{ dst: string }[]>(pod.name, 'route', 'show').map((r) => r.dst)).toContain('default');
    expect(nsPing(host.name, att.addresses[0]!.address)).toBe(true);

    // A pair that expires and one whose namespace file goes close theirs too.
    await prepared(pairs, host, expiring);
    await prepared(pairs, host, discarded);
    expect(podSockets.opened).toEqual([pod.path, expiring.path, discarded.path]);
    pairs.discard(discarded.path);
    await new Promise((r) => setTimeout(r, 400));
    await deps.deleter.drain();
    expect(podSockets.closed).toBe(3);
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
  });

  it('an IPv4-only pod: IPv6 off on the host end before ADD', async () => {
    const { host, deps, pairs } = setUp(['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    const made = await prepared(pairs, host, pod);
    expect(sysctl(host.name, `net.ipv6.conf.${made.ifname}.disable_ipv6`)).toBe('1');
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBe(true);
    expect(sysctl(host.name, `net.ipv6.conf.${hostVethName('c1', 'eth0')}.disable_ipv6`)).toBe('1');
    expect(nsPing(host.name, att.addresses[0]!.address)).toBe(true);
  });

  it("ADD gives both ends the config's MTU when it differs from the one the pair was made with", async () => {
    const { host, deps, pairs } = setUp(['10.244.1.0/24'], { mtu: 1500 });
    const pod = pool.add('pod', { loUp: false });
    await prepared(pairs, host, pod);
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1400 });
    expect(att.prepared).toBe(true);
    expect(att.pod.mtu).toBe(1400);
    expect(links(pod.name).find((l) => l.ifname === 'eth0')!.mtu).toBe(1400);
    expect(links(host.name).find((l) => l.ifname === hostVethName('c1', 'eth0'))!.mtu).toBe(1400);
  });

  it('a host end left by a crashed ADD of the same attachment is replaced by the prepared one', async () => {
    const { host, deps, pairs } = setUp(['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    const name = hostVethName('c1', 'eth0');
    ip(host.name, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'trl-orphan');
    const made = await prepared(pairs, host, pod);
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBe(true);
    expect(att.host.index).toBe(made.ifindex);
    expect(names(host.name)).not.toContain('trl-orphan');
    expect(nsPing(host.name, att.addresses[0]!.address)).toBe(true);
  });

  it('a pod ifname already taken: code 4, and the pair, lease and routes are gone', async () => {
    const { host, deps, pairs } = setUp(['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0');
    await prepared(pairs, host, pod);
    const err = await addAttachment(deps, {
      containerId: 'c1',
      ifname: 'eth0',
      netns: pod.path,
      mtu: 1500,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.INVALID_ENV);
    expect((err as CniError).message).toContain(`interface eth0 already exists in ${pod.path}`);
    await deps.deleter.drain();
    expect(names(host.name)).toEqual(['lo']);
    expect(names(pod.name).sort()).toEqual(['eth0', 'lo', 'other0']);
    expect(ipJson<unknown[]>(pod.name, 'route', 'show')).toEqual([]);
    expect(ipJson<unknown[]>(host.name, 'route', 'show')).toEqual([]);
    expect(deps.ipam.list()).toEqual([]);
  });

  it('a pair made for IPv4 alone is not used for a dual-stack lease: ADD makes its own, the pair goes', async () => {
    const { host, deps, outcomes, podSockets } = setUp(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    // As if the node's ranges gained IPv6 between the namespace's appearance and its ADD.
    const ipv4Only = new PreparedPairs({
      host: deps.host,
      netns: deps.netns,
      deleter: deps.deleter,
      settings: () => ({ mtu: 1500, ipv6: false }),
      log: silent,
      onOutcome: (o) => outcomes.push(o),
    });
    cleanups.push(() => void ipv4Only.stop());
    const pod = pool.add('pod', { loUp: false });
    const made = await prepared(ipv4Only, host, pod);
    const att = await addAttachment(
      { ...deps, prepared: ipv4Only },
      {
        containerId: 'c1',
        ifname: 'eth0',
        netns: pod.path,
        mtu: 1500,
      },
    );
    expect(att.prepared).toBeUndefined();
    expect(att.host.index).not.toBe(made.ifindex);
    await deps.deleter.drain();
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
    expect(names(pod.name).sort()).toEqual(['eth0', 'lo']);
    for (const a of att.addresses) expect(nsPing(host.name, a.address)).toBe(true);
    expect(outcomes).toEqual(['unsuitable']);
    // The unsuitable pair's socket was closed when it was turned down; ADD opened and closed its own.
    expect(podSockets).toEqual({ opened: [pod.path, pod.path], closed: 2 });
  });

  it('a pair made below 1280 without IPv6 is not raised for a larger ADD (the kernel would give it IPv6 with the defaults): ADD makes its own', async () => {
    const { host, deps, outcomes } = setUp(['10.244.1.0/24']);
    // As if the MTU rose (a netconf mtu, --mtu changed) between the namespace's appearance and its ADD.
    const small = new PreparedPairs({
      host: deps.host,
      netns: deps.netns,
      deleter: deps.deleter,
      settings: () => ({ mtu: 1200, ipv6: false }),
      log: silent,
      onOutcome: (o) => outcomes.push(o),
    });
    cleanups.push(() => void small.stop());
    const pod = pool.add('pod', { loUp: false });
    const made = await prepared(small, host, pod);
    const att = await addAttachment(
      { ...deps, prepared: small },
      { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 },
    );
    expect(att.prepared).toBeUndefined();
    expect(att.host.index).not.toBe(made.ifindex);
    expect(outcomes).toEqual(['unsuitable']);
    // ADD's own pair, IPv6 off on its host end as for every IPv4-only pod.
    expect(nsExec(host.name, 'cat', [`/proc/sys/net/ipv6/conf/${att.host.name}/disable_ipv6`]).trim()).toBe(
      '1',
    );
  });

  it('ADD into another namespace does not take it; an unused pair expires and is deleted', async () => {
    const { host, deps, pairs, outcomes } = setUp(['10.244.1.0/24'], { ttlMs: 300 });
    const [waiting, other] = [pool.add('pod', { loUp: false }), pool.add('pod', { loUp: false })];
    const made = await prepared(pairs, host, waiting);
    const att = await addAttachment(deps, {
      containerId: 'c1',
      ifname: 'eth0',
      netns: other.path,
      mtu: 1500,
    });
    expect(att.prepared).toBeUndefined();
    expect(names(host.name)).toContain(made.ifname);
    await new Promise((r) => setTimeout(r, 400));
    await deps.deleter.drain();
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
    expect(names(waiting.name)).toEqual(['lo']);
    expect(outcomes).toEqual(['expired']);
  });

  it('discard (the namespace file went) and stop delete the waiting pairs', async () => {
    const { host, deps, pairs, outcomes, podSockets } = setUp(['10.244.1.0/24']);
    const pods = [pool.add('pod', { loUp: false }), pool.add('pod', { loUp: false })];
    await prepared(pairs, host, pods[0]!);
    await prepared(pairs, host, pods[1]!);
    expect(names(host.name).filter(isPreparedName)).toHaveLength(2);
    pairs.discard(pods[0]!.path);
    await new Promise((r) => setTimeout(r, 20));
    await deps.deleter.drain();
    expect(names(pods[0]!.name)).toEqual(['lo']);
    expect(names(host.name).filter(isPreparedName)).toHaveLength(1);
    await pairs.stop();
    await deps.deleter.drain();
    expect(names(host.name)).toEqual(['lo']);
    expect(names(pods[1]!.name)).toEqual(['lo']);
    expect(outcomes).toEqual(['gone', 'gone']);
    expect(podSockets).toEqual({ opened: [pods[0]!.path, pods[1]!.path], closed: 2 });
    // Stopped: nothing more is prepared, and ADD makes its own pair.
    const pod = pool.add('pod', { loUp: false });
    expect(pairs.prepare(pod.path)).toBe('ignored');
    expect(
      (await addAttachment(deps, { containerId: 'c', ifname: 'eth0', netns: pod.path, mtu: 1500 })).prepared,
    ).toBeUndefined();
  });

  it('prepares nothing for a file that is no namespace, the own namespace, twice, or beyond the limit', async () => {
    const { host, pairs, outcomes } = setUp(['10.244.1.0/24'], { max: 1 });
    const dir = mkdtempSync(join(tmpdir(), 'trl-prep-file-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'plain'), '');
    expect(pairs.prepare(join(dir, 'plain'))).toBe('not-a-netns');
    expect(pairs.prepare(join(dir, 'missing'))).toBe('not-a-netns');
    expect(pairs.prepare('/proc/self/ns/net')).toBe('ignored');
    const pod = pool.add('pod', { loUp: false });
    await prepared(pairs, host, pod);
    expect(pairs.prepare(pod.path)).toBe('ignored');
    expect(pairs.prepare(pool.add('pod', { loUp: false }).path)).toBe('ignored');
    expect(outcomes).toEqual(['skipped']);
    expect(names(host.name).filter(isPreparedName)).toHaveLength(1);
    expect(readdirSync(dir)).toEqual(['plain']);
  });

  it('makes none while the agent is busy: a CNI call in progress, or another pair being made', async () => {
    let calls = 0;
    const { host, deps, outcomes } = setUp(['10.244.1.0/24']);
    const pairs = new PreparedPairs({
      host: deps.host,
      netns: deps.netns,
      deleter: deps.deleter,
      settings: () => ({ mtu: 1500, ipv6: false }),
      busy: () => calls > 0,
      log: silent,
      onOutcome: (o) => outcomes.push(o),
    });
    cleanups.push(() => void pairs.stop());
    const pods = [0, 1, 2, 3].map(() => pool.add('pod', { loUp: false }));
    calls = 1;
    expect(pairs.prepare(pods[0]!.path)).toBe('ignored');
    calls = 0;
    expect(pairs.prepare(pods[1]!.path)).toBe('started');
    // The first is being made (the kernel's work is under way on another thread).
    expect(pairs.prepare(pods[2]!.path)).toBe('ignored');
    await pairs.settled();
    expect(pairs.prepare(pods[3]!.path)).toBe('started');
    await pairs.settled();
    expect(outcomes).toEqual(['skipped', 'skipped']);
    expect(names(host.name).filter(isPreparedName)).toHaveLength(2);
    expect(names(pods[0]!.name)).toEqual(['lo']);
    expect(names(pods[2]!.name)).toEqual(['lo']);
  });

  it('a namespace whose ADD came before its watch event gets no pair', async () => {
    const { host, deps, pairs, outcomes } = setUp(['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBeUndefined();
    expect(pairs.prepare(pod.path)).toBe('ignored');
    await pairs.settled();
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
    expect(names(pod.name).sort()).toEqual(['eth0', 'lo']);
    expect(outcomes).toEqual([]);
  });

  // The kernel gives a freed namespace's inode number to the next namespace made: a namespace an ADD
  // went into is remembered with its path, so a later pod, pinned at a path of its own, is not taken
  // for it. Here one namespace at two paths stands for the reused number.
  it('a namespace ADD went into is remembered by path and id: at another path it gets a pair', async () => {
    const { host, deps, pairs } = setUp(['10.244.1.0/24']);
    const pins = createPodPins(['pods']);
    cleanups.push(() => pins.teardown());
    const pod = pool.add('pod', { loUp: false });
    await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(pairs.prepare(pod.path)).toBe('ignored'); // its late watch event
    const elsewhere = pins.pin(`${pins.dir('pods')}/again`, pod.path);
    expect(pairs.prepare(elsewhere)).toBe('started');
    await pairs.settled();
    expect(names(host.name).filter(isPreparedName)).toHaveLength(1);
    await pairs.stop();
    await deps.deleter.drain();
    expect(names(host.name).filter(isPreparedName)).toEqual([]);
  });

  it('a path pinned again before its removal was seen: the old pair goes at once', async () => {
    const { host, deps, pairs, outcomes } = setUp(['10.244.1.0/24']);
    const pins = createPodPins(['pods']);
    cleanups.push(() => pins.teardown());
    const [first, second] = [pool.add('pod', { loUp: false }), pool.add('pod', { loUp: false })];
    const path = pins.pin(`${pins.dir('pods')}/cni-1`, first.path);
    expect(pairs.prepare(path)).toBe('started');
    await pairs.settled();
    pins.unpin(path);
    pins.pin(path, second.path);
    expect(pairs.prepare(path)).toBe('started');
    await pairs.settled();
    await new Promise((r) => setImmediate(r));
    await deps.deleter.drain();
    expect(names(first.name)).toEqual(['lo']);
    expect(names(second.name).filter(isPreparedName)).toHaveLength(1);
    expect(names(host.name).filter(isPreparedName)).toHaveLength(1);
    expect(outcomes).toEqual(['gone']);
  });

  it('take waits for a pair still being made', async () => {
    const { deps, pairs } = setUp(['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    expect(pairs.prepare(pod.path)).toBe('started');
    // At once: the kernel has not made the pair yet; ADD takes it all the same.
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    expect(att.prepared).toBe(true);
    expect(pairs.size).toBe(0);
  });
});
