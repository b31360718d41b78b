import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCniService } from '../../../pkg/agent/cni-service.ts';
import { removeAttachments } from '../../../pkg/agent/lease-collector.ts';
import { drainSpool, spooledDelsIn } from '../../../pkg/agent/spool-drain.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { delAttachment } from '../../../pkg/datapath/del.ts';
import { gcAttachments } from '../../../pkg/datapath/gc.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { type NetlinkHandle, TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { spoolFileName } from '../../../pkg/shim/spool.ts';
import { writeSpooledDel } from '../../../pkg/shim/spool-fs.ts';
import { capturedLog } from '../../support/captured-log.ts';
import {
  ip,
  ipJson,
  NetnsPool,
  netnsSkipReason,
  nsExec,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';
import { type InProcessDeps, inProcessDeps } from './in-process-deps.ts';

/**
 * addAttachment in-process against real namespaces, on both of its paths: the agent's host handle
 * (the kernel echoes the new pair, the pod end's MAC is chosen by ADD, nothing is looked up) and a
 * plain handle whose createVeth echoes nothing (both ends are looked up). Each must leave the same
 * complete pod network; a failed ADD must leave nothing of its own behind.
 */

interface IpLink {
  ifname: string;
  ifindex: number;
  address: string;
  mtu: number;
  flags: string[];
}
interface IpAddr {
  ifname: string;
  addr_info: { local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  protocol?: string;
}

/** Trellis's host routes (its route protocol, 126) through `hostIf`, both families: their destinations. */
function trellisRoutesVia(host: TestNetns, hostIf: string): string[] {
  return [4, 6].flatMap((family) =>
    ipJson<IpRoute[]>(
      host.name,
      `-${family}`,
      'route',
      'show',
      'dev',
      hostIf,
      'proto',
      String(TRELLIS_ROUTE_PROTOCOL),
    ).map((r) => (r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`)),
  );
}

/**
 * `deps` with the veth deletions DEL schedules held back: what DEL itself left before it answered
 * can be looked at, and the held work run afterwards.
 */
function holdDeleter(deps: DatapathDeps): {
  deps: DatapathDeps;
  scheduled: () => string[];
  run: () => Promise<void>;
} {
  const work: { name: string; fn: () => Promise<void> }[] = [];
  const deleter = {
    wait: async () => {},
    schedule: (name: string, fn: () => Promise<void>) => void work.push({ name, fn }),
  };
  return {
    deps: { ...deps, deleter: deleter as unknown as DatapathDeps['deleter'] },
    scheduled: () => work.map((w) => w.name),
    run: async () => {
      for (const w of work.splice(0)) await w.fn();
    },
  };
}

/** Why an immutable file (chattr +i, which makes unlink fail) cannot be had under tmpdir(), if so. */
const immutableSkip = ((): string | undefined => {
  const probe = mkdtempSync(join(tmpdir(), 'trl-chattr-'));
  try {
    const set = spawnSync('chattr', ['+i', probe], { encoding: 'utf8' });
    if (set.status !== 0)
      return `chattr +i does not work under ${tmpdir()}: ${set.error?.message ?? set.stderr.trim()}`;
    spawnSync('chattr', ['-i', probe]);
    return undefined;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
})();

/** /sys/class/net/IF/addr_assign_type in a namespace (`ip netns exec` mounts that namespace's sysfs). */
function addrAssignType(ns: string, ifname: string): string {
  return nsExec(ns, 'cat', [`/sys/class/net/${ifname}/addr_assign_type`]).trim();
}

/** A request as the shim sends it, for eth0 of `containerId` in `netns`; `config` beside cniVersion 1.0.0. */
function cniRequest(command: string, netns: string, containerId: string, config: Record<string, unknown>) {
  return {
    v: 1 as const,
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: netns,
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
    },
    stdin: JSON.stringify({ cniVersion: '1.0.0', type: 'trellis', ...config }),
  };
}

/** The agent's CNI service over `deps` (its spool in `spoolDir`), with its log lines collected. */
function cniService(deps: DatapathDeps, spoolDir?: string) {
  const { log, lines } = capturedLog();
  const { handle } = createCniService({
    datapath: deps,
    mutex: new KeyedMutex(),
    log,
    readiness: { notReadyReason: () => undefined },
    defaultMtu: () => 1500,
    ...(spoolDir === undefined ? {} : { spooledDels: spooledDelsIn(spoolDir) }),
  });
  return { handle, lines, log };
}

describe.skipIf(netnsSkipReason !== undefined)('addAttachment (root, real namespaces)', () => {
  const pool = new NetnsPool();
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const c of closers.splice(0)) c();
    pool.cleanup();
  });

  function setUp(echo: boolean, ranges: string[]): { host: TestNetns; deps: InProcessDeps } {
    const host = pool.add('host');
    return { host, deps: inProcessDeps(host, ranges, closers, { echo }) };
  }

  for (const echo of [true, false]) {
    it(`wires a complete dual-stack pod network (${echo ? 'echoed pair' : 'looked-up pair'})`, async () => {
      const { host, deps } = setUp(echo, ['10.244.1.0/24', 'fd00:10:244:1::/64']);
      const pod = pool.add('pod', { loUp: false });
      const att = await addAttachment(deps, {
        containerId: 'c1',
        ifname: 'eth0',
        netns: pod.path,
        mtu: 1400,
      });

      const eth0 = ipJson<IpLink[]>(pod.name, 'link', 'show', 'eth0')[0]!;
      expect(att.pod).toEqual({ name: 'eth0', index: eth0.ifindex, mac: eth0.address, mtu: 1400 });
      expect(eth0.mtu).toBe(1400);
      expect(eth0.flags).toContain('UP');
      expect(ipJson<IpLink[]>(pod.name, 'link', 'show', 'lo')[0]!.flags).toContain('UP');
      const hostEnd = ipJson<IpLink[]>(host.name, 'link', 'show', hostVethName('c1', 'eth0'))[0]!;
      expect(att.host).toEqual({ name: hostEnd.ifname, index: hostEnd.ifindex, mac: hostEnd.address });
      expect(hostEnd.flags).toContain('UP');
      // Both MACs set by the creating request (NET_ADDR_SET, 3), not random (1): systemd-udevd's
      // MACAddressPolicy=persistent leaves them alone, so they never change under the pod.
      expect(addrAssignType(host.name, hostEnd.ifname)).toBe('3');
      expect(addrAssignType(pod.name, 'eth0')).toBe('3');

      const [v4, v6] = att.addresses.map((a) => a.address);
      const podAddrs = ipJson<IpAddr[]>(pod.name, 'addr', 'show', 'dev', 'eth0')[0]!.addr_info;
      expect(podAddrs).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ local: v4, prefixlen: 32 }),
          expect.objectContaining({ local: v6, prefixlen: 128 }),
        ]),
      );
      const podRoutes4 = ipJson<IpRoute[]>(pod.name, 'route', 'show');
      expect(podRoutes4).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '169.254.1.1' }));
      const podRoutes6 = ipJson<IpRoute[]>(pod.name, '-6', 'route', 'show');
      expect(podRoutes6).toContainEqual(expect.objectContaining({ dst: 'default', gateway: 'fe80::1' }));
      const hostRoutes = [
        ...ipJson<IpRoute[]>(host.name, 'route', 'show'),
        ...ipJson<IpRoute[]>(host.name, '-6', 'route', 'show'),
      ];
      for (const a of [v4, v6]) {
        expect(hostRoutes).toContainEqual(expect.objectContaining({ dst: a, dev: hostEnd.ifname }));
      }
      // The lease is on disk with the addresses the pod holds.
      expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })?.addresses.map((a) => a.address)).toEqual([
        v4,
        v6,
      ]);
    });
  }

  it('a node with IPv6 off by default (default.disable_ipv6=1, a hardening) still gives pods of an IPv6 pod CIDR their address', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    nsSysctl(host.name, 'net.ipv6.conf.default.disable_ipv6', '1');
    const pod = pool.add('pod');
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    const v6 = att.addresses.find((a) => a.family === 6)!.address;
    const podAddrs = ipJson<IpAddr[]>(pod.name, 'addr', 'show', 'dev', 'eth0')[0]!.addr_info;
    expect(podAddrs).toContainEqual(expect.objectContaining({ local: v6, prefixlen: 128 }));
    const hostEnd = hostVethName('c1', 'eth0');
    expect(nsExec(host.name, 'sysctl', ['-n', `net.ipv6.conf.${hostEnd}.disable_ipv6`]).trim()).toBe('0');
    expect(ipJson<IpRoute[]>(host.name, '-6', 'route', 'show')).toContainEqual(
      expect.objectContaining({ dst: v6, dev: hostEnd }),
    );
  });

  it('leaves no veth, lease or reservation when the range is exhausted', async () => {
    // A /30 holds one usable address here: the second ADD finds the range exhausted.
    const { host, deps } = setUp(true, ['10.244.9.0/30']);
    const pods = [pool.add('p'), pool.add('p')];
    await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pods[0]!.path, mtu: 1500 });
    const err = await addAttachment(deps, {
      containerId: 'c2',
      ifname: 'eth0',
      netns: pods[1]!.path,
      mtu: 1500,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.IPAM_EXHAUSTED);
    await deps.deleter.drain();
    const hostLinks = ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname);
    expect(hostLinks).not.toContain(hostVethName('c2', 'eth0'));
    expect(hostLinks).toContain(hostVethName('c1', 'eth0'));
    expect(ipJson<IpLink[]>(pods[1]!.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
    expect(deps.ipam.get({ containerId: 'c2', ifname: 'eth0' })).toBeUndefined();
    expect(deps.ipam.list()).toHaveLength(1);
    expect(readdirSync(join(deps.leaseDir, 'leases'))).toEqual(['c1@eth0.json']);
    expect(readdirSync(join(deps.leaseDir, 'addrs'))).toHaveLength(1);
  });

  // GC (the runtime's) and the lease collector (pods gone from the API) list the host's links and
  // delete trellis veths. An ADD can lease an address and create its veth while that list is read;
  // the dump then holds the new veth or not, depending on when the kernel answered. Neither case may
  // cost the new pod its interface.
  for (const when of ['the dump includes it', 'the dump misses it'] as const) {
    for (const who of ['GC', 'lease collector'] as const) {
      it(`${who} keeps a veth an ADD made while the links were listed (${when})`, async () => {
        const { host, deps } = setUp(true, ['10.244.1.0/24']);
        const add = (containerId: string) =>
          addAttachment(deps, { containerId, ifname: 'eth0', netns: pool.add('p').path, mtu: 1500 });
        await add('stale');
        await add('keep');
        const stale = deps.ipam.get({ containerId: 'stale', ifname: 'eth0' })!;
        let added = false;
        const racing: DatapathDeps = {
          ...deps,
          host: Object.assign(Object.create(deps.host) as NetlinkHandle, {
            listLinks: async () => {
              if (added) return deps.host.listLinks();
              added = true;
              if (when === 'the dump includes it') {
                await add('new');
                return deps.host.listLinks();
              }
              const links = await deps.host.listLinks();
              await add('new');
              return links;
            },
          }),
        };

        if (who === 'GC') {
          const out = await gcAttachments(racing, [{ containerId: 'keep', ifname: 'eth0' }]);
          expect(out.releasedLeases.map((l) => l.containerId)).toEqual(['stale']);
        } else {
          deps.ipam.release(stale);
          await removeAttachments(racing, [stale]);
        }
        expect(added).toBe(true);
        await deps.deleter.drain();

        const links = ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname);
        expect(links).not.toContain(hostVethName('stale', 'eth0'));
        expect(links).toContain(hostVethName('keep', 'eth0'));
        expect(links).toContain(hostVethName('new', 'eth0'));
        expect(
          deps.ipam
            .list()
            .map((l) => l.containerId)
            .sort(),
        ).toEqual(['keep', 'new']);
      });
    }
  }

  it('the lease collector keeps the veth of the same container added again while the links were listed (a runtime reusing its ID)', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/24']);
    const add = () =>
      addAttachment(deps, { containerId: 'reused', ifname: 'eth0', netns: pool.add('p').path, mtu: 1500 });
    await add();
    const old = deps.ipam.get({ containerId: 'reused', ifname: 'eth0' })!;
    let added = false;
    const racing: DatapathDeps = {
      ...deps,
      host: Object.assign(Object.create(deps.host) as NetlinkHandle, {
        listLinks: async () => {
          if (!added) {
            added = true;
            // The old pair is still there (not ours to delete yet): the ADD replaces it, as a stale one.
            await add();
          }
          return deps.host.listLinks();
        },
      }),
    };
    deps.ipam.release(old);
    await removeAttachments(racing, [old]);
    expect(added).toBe(true);
    await deps.deleter.drain();
    const links = ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname);
    expect(links).toContain(hostVethName('reused', 'eth0'));
    expect(deps.ipam.get({ containerId: 'reused', ifname: 'eth0' })).toBeDefined();
  });

  it.skipIf(immutableSkip !== undefined)(
    `GC goes on past a lease the store cannot release, then reports it (CNI 1.1)${immutableSkip === undefined ? '' : ` (skipped: ${immutableSkip})`}`,
    async () => {
      const { host, deps } = setUp(true, ['10.244.1.0/24']);
      for (const id of ['stuck', 'gone']) {
        await addAttachment(deps, { containerId: id, ifname: 'eth0', netns: pool.add('p').path, mtu: 1500 });
      }
      // An immutable lease file: its unlink fails with EPERM, as on a disk gone bad.
      const stuck = join(deps.leaseDir, 'leases', 'stuck@eth0.json');
      const chattr = (flag: string) => spawnSync('chattr', [flag, stuck], { encoding: 'utf8' });
      const set = chattr('+i');
      expect(set.status, set.stderr).toBe(0);
      try {
        const err = await gcAttachments(deps, []).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CniError);
        expect((err as CniError).code).toBe(CniCode.IPAM_STORE_FAILED);
        expect((err as CniError).message).toContain('1 leases could not be released');
        expect((err as CniError).details).toContain('stuck/eth0');
      } finally {
        chattr('-i');
      }
      await deps.deleter.drain();
      // The other lease and its veth went; the stuck one keeps both (a lease without its veth would
      // be a pod cut off while its address stays taken).
      expect(deps.ipam.list().map((l) => l.containerId)).toEqual(['stuck']);
      const links = ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname);
      expect(links).toContain(hostVethName('stuck', 'eth0'));
      expect(links).not.toContain(hostVethName('gone', 'eth0'));
    },
  );

  it('GC of an attachment whose lease record was quarantined (its DEL missed) frees its held addresses with its veth', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29']);
    for (const id of ['torn', 'kept']) {
      await addAttachment(deps, { containerId: id, ifname: 'eth0', netns: pool.add('p').path, mtu: 1500 });
    }
    // The agent restarts over a torn lease file: the record is quarantined, its address stays held.
    const file = join(deps.leaseDir, 'leases', 'torn@eth0.json');
    writeFileSync(file, '{"containerId": "torn", "addr');
    const reopened: DatapathDeps = {
      ...deps,
      ipam: openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/29'] }),
    };
    expect(reopened.ipam.heldKeys()).toEqual([{ containerId: 'torn', ifname: 'eth0' }]);
    const out = await gcAttachments(reopened, [{ containerId: 'kept', ifname: 'eth0' }]);
    expect(out.releasedHeld).toEqual([{ containerId: 'torn', ifname: 'eth0' }]);
    expect(out.removedLinks).toEqual([hostVethName('torn', 'eth0')]);
    await deps.deleter.drain();
    expect(reopened.ipam.heldKeys()).toEqual([]);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(
      hostVethName('torn', 'eth0'),
    );
    // Its address is free again: the /29's five addresses can all be handed out.
    for (const id of ['n1', 'n2', 'n3', 'n4']) reopened.ipam.allocate({ containerId: id, ifname: 'eth0' });
    expect(reopened.ipam.list()).toHaveLength(5);
  });

  it('GC keeps a quarantined attachment whose ADD gave it back its lease while GC listed the links', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29']);
    const netns = pool.add('p').path;
    const key = { containerId: 'torn', ifname: 'eth0' };
    const first = await addAttachment(deps, { ...key, netns, mtu: 1500 });
    writeFileSync(join(deps.leaseDir, 'leases', 'torn@eth0.json'), '{"containerId": "torn", "addr');
    const reopened: DatapathDeps = {
      ...deps,
      ipam: openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/29'] }),
    };
    expect(reopened.ipam.heldKeys()).toEqual([key]);
    // A scoped GC reads the held veths' networks off a link dump; the ADD (the runtime retrying the
    // pod, its lock not GC's) restores the held lease and answers while that dump is read.
    let added = false;
    const racing: DatapathDeps = {
      ...reopened,
      host: Object.assign(Object.create(deps.host) as NetlinkHandle, {
        listLinks: async () => {
          if (!added) {
            added = true;
            await addAttachment(reopened, { ...key, netns, mtu: 1500 });
          }
          return deps.host.listLinks();
        },
      }),
    };
    const out = await gcAttachments(racing, [], new Set(), { network: 'trellis', unrecorded: 'trellis' });
    expect(added).toBe(true);
    await deps.deleter.drain();
    expect(out).toMatchObject({ releasedHeld: [], removedLinks: [] });
    expect(reopened.ipam.get(key)?.addresses).toEqual(first.addresses);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).toContain(
      hostVethName('torn', 'eth0'),
    );
  });

  it("GC of one network keeps another network's attachment whose lease record was quarantined (its veth names its network)", async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/24']);
    const pod = pool.add('pod', { loUp: false });
    const published = 'trellis';
    for (const [ifname, network] of [
      ['eth0', published],
      ['net1', 'other-net'],
    ] as const) {
      await addAttachment(deps, {
        containerId: 'c1',
        ifname,
        netns: pod.path,
        mtu: 1500,
        network,
        unrecordedNetwork: published,
      });
    }
    writeFileSync(join(deps.leaseDir, 'leases', 'c1@net1.json'), '{"containerId": "c1", "addr');
    const reopened: DatapathDeps = {
      ...deps,
      ipam: openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/24'] }),
    };
    expect(reopened.ipam.heldKeys()).toEqual([{ containerId: 'c1', ifname: 'net1' }]);
    // The runtime's GC of the published network: its one valid attachment is eth0.
    const out = await gcAttachments(reopened, [{ containerId: 'c1', ifname: 'eth0' }], new Set(), {
      network: published,
      unrecorded: published,
    });
    await deps.deleter.drain();
    expect(out).toMatchObject({ releasedHeld: [], removedLinks: [] });
    expect(reopened.ipam.heldKeys()).toEqual([{ containerId: 'c1', ifname: 'net1' }]);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).toContain(
      hostVethName('c1', 'net1'),
    );
    expect(ipJson<IpLink[]>(pod.name, 'link', 'show').map((l) => l.ifname)).toContain('net1');
    // GC of other-net, which no longer has it: it goes.
    const other = await gcAttachments(reopened, [], new Set(), {
      network: 'other-net',
      unrecorded: published,
    });
    expect(other.releasedHeld).toEqual([{ containerId: 'c1', ifname: 'net1' }]);
  });

  it('DEL of an attachment whose lease record was quarantined reports the held addresses it frees', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29', 'fd00:10:244:1::/125']);
    await addAttachment(deps, {
      containerId: 'torn',
      ifname: 'eth0',
      netns: pool.add('p').path,
      mtu: 1500,
    });
    const addresses = deps.ipam.get({ containerId: 'torn', ifname: 'eth0' })!.addresses;
    expect(addresses).toHaveLength(2);
    writeFileSync(join(deps.leaseDir, 'leases', 'torn@eth0.json'), '{"containerId": "torn", "addr');
    const reopened: DatapathDeps = {
      ...deps,
      ipam: openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/29', 'fd00:10:244:1::/125'] }),
    };
    const key = { containerId: 'torn', ifname: 'eth0' };
    expect(reopened.ipam.heldKeys()).toEqual([key]);
    const hostIf = hostVethName('torn', 'eth0');
    expect(trellisRoutesVia(host, hostIf)).toHaveLength(2);
    const held = holdDeleter(reopened);
    const out = await delAttachment(held.deps, key);
    // What the DEL's log line shows (addresses), and the routes it removed before answering.
    expect(out).toEqual({ released: addresses, vethScheduled: true });
    expect(held.scheduled()).toEqual([hostIf]);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).toContain(hostIf);
    expect(trellisRoutesVia(host, hostIf)).toEqual([]);
    expect(reopened.ipam.heldKeys()).toEqual([]);
    expect(reopened.ipam.heldAddresses(key)).toEqual([]);
    await held.run();
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(hostIf);
  });

  it('ADD of an attachment whose lease record was quarantined gives it back its held addresses, never new ones beside them', async () => {
    const ranges = ['10.244.1.0/29', 'fd00:10:244:1::/125'];
    const { host, deps } = setUp(true, ranges);
    const netns = pool.add('p').path;
    const key = { containerId: 'torn', ifname: 'eth0' };
    const first = await addAttachment(deps, { ...key, netns, mtu: 1500 });
    writeFileSync(join(deps.leaseDir, 'leases', 'torn@eth0.json'), '{"containerId": "torn", "addr');
    const reopened: DatapathDeps = { ...deps, ipam: openIpam({ dir: deps.leaseDir, ranges }) };
    expect(reopened.ipam.heldKeys()).toEqual([key]);
    // The runtime repeats the ADD (its answer was lost with the agent): the pod is answered with what it has.
    const again = await addAttachment(reopened, { ...key, netns, mtu: 1500 });
    expect(again.addresses).toEqual(first.addresses);
    expect(again.host.index).toBe(first.host.index); // the same pair: the pod kept its interface
    expect(reopened.ipam.heldKeys()).toEqual([]);
    expect(reopened.ipam.get(key)).toMatchObject({ netns, addresses: first.addresses });
    // In another namespace (a sandbox made again under the same id): a new pair, the same addresses.
    const moved = await addAttachment(reopened, { ...key, netns: pool.add('p2').path, mtu: 1500 });
    expect(moved.addresses).toEqual(first.addresses);
    expect(reopened.ipam.list()).toHaveLength(1);
    expect((await delAttachment(reopened, key)).released).toEqual(first.addresses);
    await deps.deleter.drain();
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(
      hostVethName('torn', 'eth0'),
    );
  });

  it('ADD of a quarantined attachment whose held address is outside the pod CIDRs now is refused, and changes nothing', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29']);
    const netns = pool.add('p').path;
    const key = { containerId: 'torn', ifname: 'eth0' };
    const first = await addAttachment(deps, { ...key, netns, mtu: 1500 });
    writeFileSync(join(deps.leaseDir, 'leases', 'torn@eth0.json'), '{"containerId": "torn", "addr');
    const ipam = openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/29'] });
    ipam.setRanges(['10.244.2.0/29']);
    const reopened: DatapathDeps = { ...deps, ipam };
    const err = await addAttachment(reopened, { ...key, netns, mtu: 1500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect(err).toMatchObject({
      code: CniCode.IPAM_STORE_FAILED,
      message: `IPAM holds ${first.addresses[0]!.address} for eth0 of container torn from a lease record it could not read, and cannot give them back to this ADD: DEL the attachment to free them`,
    });
    expect(reopened.ipam.heldKeys()).toEqual([key]);
    expect(reopened.ipam.list()).toEqual([]);
    const link = ipJson<IpLink[]>(host.name, 'link', 'show', 'dev', hostVethName('torn', 'eth0'))[0]!;
    expect(link.ifindex).toBe(first.host.index);
    // DEL frees it; the next ADD starts afresh in the new range.
    await delAttachment(reopened, key);
    await deps.deleter.drain();
    const fresh = await addAttachment(reopened, { ...key, netns: pool.add('p2').path, mtu: 1500 });
    expect(fresh.addresses[0]!.address).toMatch(/^10\.244\.2\./);
  });

  it('a DEL with a lease takes its host routes off before it answers, while the veth is still there', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29', 'fd00:10:244:1::/125']);
    const key = { containerId: 'leased', ifname: 'eth0' };
    const att = await addAttachment(deps, { ...key, netns: pool.add('p').path, mtu: 1500 });
    const hostIf = hostVethName('leased', 'eth0');
    const dsts = att.addresses.map((a) => `${a.address}/${a.family === 4 ? 32 : 128}`);
    expect(trellisRoutesVia(host, hostIf).sort()).toEqual([...dsts].sort());
    const held = holdDeleter(deps);
    const out = await delAttachment(held.deps, key);
    expect(out).toEqual({ released: att.addresses, vethScheduled: true });
    expect(held.scheduled()).toEqual([hostIf]);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).toContain(hostIf);
    expect(trellisRoutesVia(host, hostIf)).toEqual([]);
    await held.run();
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(hostIf);
  });

  it('a DEL again after one that released the lease and then failed still takes the host routes off before answering', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29', 'fd00:10:244:1::/125']);
    const key = { containerId: 'half', ifname: 'eth0' };
    await addAttachment(deps, { ...key, netns: pool.add('p').path, mtu: 1500 });
    const hostIf = hostVethName('half', 'eth0');
    const hostRoutes = () =>
      [
        ...ipJson<IpRoute[]>(host.name, '-4', 'route', 'show', 'dev', hostIf, 'proto', '126'),
        ...ipJson<IpRoute[]>(host.name, '-6', 'route', 'show', 'dev', hostIf, 'proto', '126'),
      ].map((r) => r.dst);
    expect(hostRoutes()).toHaveLength(2);
    // The first DEL released the lease, then failed (the runtime retries it).
    deps.ipam.release(key);
    // The veth's deletion is held back, to see what DEL itself left before it answered.
    const scheduled: string[] = [];
    const held = {
      ...deps,
      deleter: { wait: async () => {}, schedule: (name: string) => void scheduled.push(name) },
    };
    const out = await delAttachment(held as unknown as DatapathDeps, key);
    expect(out).toEqual({ released: [], vethScheduled: true });
    expect(scheduled).toEqual([hostIf]);
    expect(hostRoutes()).toEqual([]);
  });

  it('an ADD into a namespace whose old attachment GC (or the lease collector) just released waits for its veth to go', async () => {
    const { deps } = setUp(true, ['10.244.1.0/29']);
    for (const collect of ['gc', 'lease collector'] as const) {
      // A runtime reusing a namespace (cnitool, podman): the old container's DEL was missed, GC catches it.
      const netns = pool.add('reused').path;
      await addAttachment(deps, { containerId: 'old', ifname: 'eth0', netns, mtu: 1500 });
      if (collect === 'gc') {
        const out = await gcAttachments(deps, []);
        expect(out.removedLinks).toEqual([hostVethName('old', 'eth0')]);
      } else {
        const lease = deps.ipam.get({ containerId: 'old', ifname: 'eth0' })!;
        deps.ipam.release(lease);
        await removeAttachments(deps, [lease]);
      }
      // At once, while the old pair's deletion is pending: its pod end still holds eth0 there.
      const added = await addAttachment(deps, { containerId: 'new', ifname: 'eth0', netns, mtu: 1500 });
      expect(added.pod.name).toBe('eth0');
      await delAttachment(deps, { containerId: 'new', ifname: 'eth0' });
      await deps.deleter.drain();
    }
  });

  it("an ADD during which the node's pod CIDRs change (its lease released) is refused with 11 and leaves nothing behind", async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/29']);
    const ipam = openIpam({ dir: deps.leaseDir, ranges: ['10.244.1.0/29'] });
    // The range changes while ADD sets up the host end (the controller's pass, between two awaits).
    const handle = new Proxy(deps.host, {
      get(target, prop, receiver) {
        if (prop !== 'setUp') return Reflect.get(target, prop, receiver);
        return (...args: Parameters<NetlinkHandle['setUp']>) => {
          if (ipam.ranges()[0] === '10.244.1.0/29') ipam.setRanges(['10.244.2.0/29']);
          return target.setUp(...args);
        };
      },
    });
    const racing: DatapathDeps = { ...deps, host: handle, ipam };
    const netns = pool.add('p').path;
    const err = await addAttachment(racing, { containerId: 'c', ifname: 'eth0', netns, mtu: 1500 }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: CniCode.TRY_AGAIN_LATER,
      message:
        "the node's pod CIDRs changed during this ADD: 10.244.1.2 is outside [10.244.2.0/29] now; try again",
    });
    expect(ipam.list()).toEqual([]);
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(
      hostVethName('c', 'eth0'),
    );
    // The runtime asks again: an address of the new range.
    const again = await addAttachment(racing, { containerId: 'c', ifname: 'eth0', netns, mtu: 1500 });
    expect(again.addresses.map((a) => a.address)).toEqual(['10.244.2.2']);
  });

  it('a spooled DEL comes before a later ADD of the same attachment and is never replayed over it', async () => {
    // A runtime that reuses container IDs: DEL (spooled, the agent too slow to answer), then ADD of
    // the same container and ifname while the spool still holds that DEL.
    const { host, deps } = setUp(true, ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    const spoolDir = mkdtempSync(join(tmpdir(), 'trl-spool-'));
    closers.push(() => rmSync(spoolDir, { recursive: true, force: true }));
    const { handle, lines } = cniService(deps, spoolDir);
    const pod = pool.add('p');
    const request = (command: string) => cniRequest(command, pod.path, 'c1', { name: 'trellis' });
    const spoolFile = join(spoolDir, spoolFileName('c1', 'eth0'));
    const spoolDel = () => writeFileSync(spoolFile, JSON.stringify(request('DEL')), { mode: 0o600 });
    const hostIndex = () =>
      ipJson<IpLink[]>(host.name, 'link', 'show').find((l) => l.ifname === hostVethName('c1', 'eth0'))
        ?.ifindex;
    const settled = () => new Promise((r) => setImmediate(r));

    expect((await handle(request('ADD'))).ok).toBe(true);
    const first = hostIndex();
    expect(first).toBeDefined();

    // The spooled DEL runs first: the old pair goes, a new one is made, the spool entry is done.
    spoolDel();
    expect((await handle(request('ADD'))).ok).toBe(true);
    await settled();
    expect(lines.filter((l) => l.verb === 'ADD').at(-1)).toMatchObject({
      outcome: 'ok',
      spooledDelFirst: true,
    });
    expect(existsSync(spoolFile)).toBe(false);
    await deps.deleter.drain();
    const second = hostIndex();
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeDefined();

    // The drain listed that entry before the ADD ran it: its replay must not delete the new pair.
    expect((await handle(request('DEL'), { spooled: true })).ok).toBe(true);
    await settled();
    expect(lines.at(-1)).toMatchObject({
      verb: 'DEL',
      spooled: true,
      note: expect.stringContaining('already run'),
    });
    await deps.deleter.drain();
    expect(hostIndex()).toBe(second);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeDefined();

    // A spooled DEL nothing ran yet is replayed as usual.
    spoolDel();
    expect((await handle(request('DEL'), { spooled: true })).ok).toBe(true);
    await deps.deleter.drain();
    expect(hostIndex()).toBeUndefined();
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeUndefined();
  });

  it('a spooled DEL the agent refuses for good is set aside, not replayed for ever; the others complete', async () => {
    const { deps } = setUp(true, ['10.244.1.0/24']);
    const spoolDir = mkdtempSync(join(tmpdir(), 'trl-spool-'));
    closers.push(() => rmSync(spoolDir, { recursive: true, force: true }));
    const { handle, lines, log } = cniService(deps, spoolDir);
    const pod = pool.add('p');
    const request = (command: string, containerId: string, config: Record<string, unknown>) =>
      cniRequest(command, pod.path, containerId, config);
    expect((await handle(request('ADD', 'c1', { name: 'trellis' }))).ok).toBe(true);
    // Spooled by an older shim, or written by hand: no name, which every replay refuses (code 7).
    const refused = join(spoolDir, spoolFileName('c2', 'eth0'));
    writeFileSync(refused, JSON.stringify(request('DEL', 'c2', {})), { mode: 0o600 });
    const good = join(spoolDir, spoolFileName('c1', 'eth0'));
    writeFileSync(good, JSON.stringify(request('DEL', 'c1', { name: 'trellis' })), { mode: 0o600 });

    expect(await drainSpool(spoolDir, handle, log)).toEqual({ completed: 1, failed: 0, bad: 1 });
    await new Promise((r) => setImmediate(r));
    expect(readdirSync(spoolDir).sort()).toEqual([`${spoolFileName('c2', 'eth0')}.bad`]);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeUndefined();
    expect(lines.find((l) => l.msg === 'spooled DEL refused for good: set aside')).toMatchObject({
      level: 'warn',
      file: refused,
      movedTo: `${refused}.bad`,
      code: CniCode.INVALID_CONFIG,
      reason: expect.stringContaining('name is required'),
    });
    // The next drain has nothing left to replay.
    expect(await drainSpool(spoolDir, handle, log)).toEqual({ completed: 0, failed: 0, bad: 0 });
    await deps.deleter.drain();
  });

  it('a DEL spooled again under the same name while its replay ran (a reused container id) stays for the next drain', async () => {
    const { deps } = setUp(true, ['10.244.1.0/24']);
    const spoolDir = mkdtempSync(join(tmpdir(), 'trl-spool-'));
    closers.push(() => rmSync(spoolDir, { recursive: true, force: true }));
    const { handle, log } = cniService(deps, spoolDir);
    const pod = pool.add('p');
    const del = cniRequest('DEL', pod.path, 'c1', { name: 'trellis' });
    writeSpooledDel(spoolDir, 'c1', 'eth0', JSON.stringify(del));
    // While the replay runs, the shim spools a new DEL of the same attachment (a new file by rename).
    const racing: typeof handle = async (req, opts) => {
      const answer = await handle(req, opts);
      writeSpooledDel(spoolDir, 'c1', 'eth0', JSON.stringify(del));
      return answer;
    };
    expect(await drainSpool(spoolDir, racing, log)).toEqual({ completed: 1, failed: 0, bad: 0 });
    expect(readdirSync(spoolDir)).toEqual([spoolFileName('c1', 'eth0')]);
    expect(await drainSpool(spoolDir, handle, log)).toEqual({ completed: 1, failed: 0, bad: 0 });
    expect(readdirSync(spoolDir)).toEqual([]);
  });

  it('a second network on the same container id and ifname is refused, and its cleanup DEL leaves the first one’s attachment alone', async () => {
    // cnitool against two networks on one namespace, or a secondary network given the primary's ifname:
    // the runtime's DEL after the failed ADD must not take the pod's eth0 away.
    const { host, deps } = setUp(true, ['10.244.1.0/24']);
    const { handle, lines } = cniService(deps);
    const pod = pool.add('p');
    const request = (command: string, network: string) =>
      cniRequest(command, pod.path, 'c1', { name: network });
    const podAddresses = () =>
      ipJson<{ ifname: string; addr_info: { local: string }[] }[]>(
        pod.name,
        'addr',
        'show',
        'dev',
        'eth0',
      ).flatMap((l) => l.addr_info.map((a) => a.local));
    const hostIndex = () =>
      ipJson<IpLink[]>(host.name, 'link', 'show').find((l) => l.ifname === hostVethName('c1', 'eth0'))
        ?.ifindex;

    const first = await handle(request('ADD', 'trellis'));
    expect(first.ok).toBe(true);
    const lease = deps.ipam.get({ containerId: 'c1', ifname: 'eth0' });
    expect(lease?.network).toBe('trellis');
    const index = hostIndex();
    const addresses = podAddresses();
    expect(addresses).toContain(lease!.addresses[0]!.address);

    const second = await handle(request('ADD', 'netb'));
    expect(second.ok).toBe(false);
    expect(second.ok ? undefined : second.error.code).toBe(CniCode.INVALID_ENV);
    expect(second.ok ? '' : second.error.msg).toContain('attached to network "trellis" already');

    // CHECK is scoped the same way: netb cannot vouch for trellis's attachment, trellis can.
    const prevResult = first.ok ? first.result : undefined;
    const check = (network: string) =>
      handle(cniRequest('CHECK', pod.path, 'c1', { name: network, prevResult }));
    const foreignCheck = await check('netb');
    expect(foreignCheck.ok ? undefined : foreignCheck.error).toMatchObject({
      code: CniCode.CHECK_FAILED,
      msg: expect.stringContaining('the attachment is network "trellis"\'s, not "netb"\'s'),
    });
    expect((await check('trellis')).ok).toBe(true);

    expect((await handle(request('DEL', 'netb'))).ok).toBe(true);
    await deps.deleter.drain();
    await new Promise((r) => setImmediate(r));
    expect(lines.filter((l) => l.verb === 'DEL').at(-1)).toMatchObject({
      outcome: 'ok',
      note: expect.stringContaining('network "trellis"'),
    });
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toEqual(lease);
    expect(hostIndex()).toBe(index);
    expect(podAddresses()).toEqual(addresses);

    // The first network's own DEL still removes it.
    expect((await handle(request('DEL', 'trellis'))).ok).toBe(true);
    await deps.deleter.drain();
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeUndefined();
    expect(hostIndex()).toBeUndefined();
  });

  it('a lease that records no network is the published one’s; a spooled DEL of another network leaves it alone too', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/24']);
    const spoolDir = mkdtempSync(join(tmpdir(), 'trl-spool-'));
    closers.push(() => rmSync(spoolDir, { recursive: true, force: true }));
    const { handle } = cniService(deps, spoolDir);
    const pod = pool.add('p');
    const request = (command: string, network: string) =>
      cniRequest(command, pod.path, 'c1', { name: network });
    const hostIndex = () =>
      ipJson<IpLink[]>(host.name, 'link', 'show').find((l) => l.ifname === hostVethName('c1', 'eth0'))
        ?.ifindex;
    // As an older release or the lease rebuild leaves it: no network recorded.
    await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    const lease = deps.ipam.get({ containerId: 'c1', ifname: 'eth0' });
    expect(lease?.network).toBeUndefined();
    const index = hostIndex();

    const other = await handle(request('ADD', 'netb'));
    expect(other.ok ? undefined : other.error.msg).toContain('attached to network "trellis" already');
    expect((await handle(request('DEL', 'netb'))).ok).toBe(true);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toEqual(lease);

    // netb's DEL spooled while the agent was away, then the published network's ADD of the same pair.
    const spoolFile = join(spoolDir, spoolFileName('c1', 'eth0'));
    writeFileSync(spoolFile, JSON.stringify(request('DEL', 'netb')), { mode: 0o600 });
    expect((await handle(request('ADD', 'trellis'))).ok).toBe(true);
    expect(existsSync(spoolFile)).toBe(false);
    await deps.deleter.drain();
    expect(hostIndex()).toBe(index);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })?.addresses).toEqual(lease?.addresses);

    expect((await handle(request('DEL', 'trellis'))).ok).toBe(true);
    await deps.deleter.drain();
    expect(hostIndex()).toBeUndefined();
  });

  it('ADD over a stale host end that goes away on its own meanwhile (a DEL retrying its deletion) succeeds', async () => {
    for (const when of ['before the look', 'between the look and the delete'] as const) {
      const { host, deps } = setUp(false, ['10.244.1.0/24']);
      const name = hostVethName('c-stale', 'eth0');
      const staleNs = pool.add('s');
      // The stale pair of an earlier sandbox of the same attachment, its pod end in another namespace.
      ip(host.name, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', staleNs.name);
      let raced = false; // the first look at the name only: later ones see the new pair
      const racing: DatapathDeps = {
        ...deps,
        host: Object.assign(Object.create(deps.host) as NetlinkHandle, {
          getLink: async (n: string) => {
            const race = n === name && !raced;
            raced ||= race;
            if (race && when === 'before the look') ip(host.name, 'link', 'del', name);
            const link = await deps.host.getLink(n);
            if (race && when === 'between the look and the delete') ip(host.name, 'link', 'del', name);
            return link;
          },
        }),
      };
      const att = await addAttachment(racing, {
        containerId: 'c-stale',
        ifname: 'eth0',
        netns: pool.add('p').path,
        mtu: 1500,
      });
      expect(raced, when).toBe(true);
      expect(att.host.name, when).toBe(name);
      expect(ipJson<IpLink[]>(host.name, 'link', 'show', 'dev', name)[0]!.ifindex, when).toBe(att.host.index);
    }
  });

  it('leaves no lease, reservation or veth of its own when the pod already has the interface name', async () => {
    const { host, deps } = setUp(true, ['10.244.1.0/24']);
    const pod = pool.add('p');
    ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0');
    const err = await addAttachment(deps, {
      containerId: 'c1',
      ifname: 'eth0',
      netns: pod.path,
      mtu: 1500,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.INVALID_ENV);
    expect((err as CniError).message).toContain(`interface eth0 already exists in ${pod.path}`);
    expect((err as CniError).details).toContain('EEXIST');
    await deps.deleter.drain();
    expect(ipJson<IpLink[]>(host.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
    // The pod's own interfaces are untouched.
    expect(
      ipJson<IpLink[]>(pod.name, 'link', 'show')
        .map((l) => l.ifname)
        .sort(),
    ).toEqual(['eth0', 'lo', 'other0']);
    expect(deps.ipam.list()).toEqual([]);
    expect(readdirSync(join(deps.leaseDir, 'leases'))).toEqual([]);
    expect(readdirSync(join(deps.leaseDir, 'addrs'))).toEqual([]);
  });
});
