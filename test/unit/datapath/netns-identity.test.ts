import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mayRemakePair } from '../../../pkg/agent/host-side-check.ts';
import { staleLeases } from '../../../pkg/agent/lease-gc.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import {
  leaseNetnsLive,
  namedByPid,
  netnsIdentityOf,
  netnsIdentityOfFd,
} from '../../../pkg/datapath/netns-identity.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';
import { NetnsNotFoundError } from '../../../pkg/netns/errors.ts';
import { processStartOf } from '../../../pkg/netns/port.ts';

/**
 * A pod's namespace path can come to name another namespace (cri-dockerd's /proc/PID/ns/net with its
 * PID reused, a reboot): the lease's netnsId says which one ADD used. Namespaces here are a table of
 * path -> namespace id, as openNetnsFd and namespaceId would see them.
 */
function port(
  table: Record<string, string>,
  bootId: string | null = 'boot-1',
  starts: Record<string, string> = {},
) {
  const open = new Map<number, string>();
  let next = 100;
  return {
    ...(bootId === null ? {} : { bootId }),
    processStart: (path: string): string | undefined =>
      starts[path] ?? (path.startsWith('/proc/') ? '5000' : undefined),
    openNetnsFd: (path: string): number => {
      const id = table[path];
      if (id === undefined) throw new NetnsNotFoundError(path, 'not a network namespace');
      open.set(next, id);
      return next++;
    },
    closeFd: (fd: number) => {
      open.delete(fd);
    },
    namespaceId: (fd: number): string => open.get(fd)!,
    isNetns: (path: string): boolean => table[path] !== undefined,
    open,
  };
}

const lease = (over: Partial<Lease> = {}): Lease => ({
  containerId: 'c1',
  ifname: 'eth0',
  addresses: [{ family: 4, address: '10.244.1.5', range: '10.244.1.0/24' }],
  createdAt: '2026-12-06T00:00:00Z',
  netns: '/proc/708/ns/net',
  podNamespace: 'default',
  podName: 'web',
  podUid: 'uid-web',
  ...over,
});

describe('netns identity', () => {
  it('is the boot and the nsfs dev:ino; none without a boot id or a namespace at the path', () => {
    const p = port({ '/proc/708/ns/net': '4:4026532001' });
    expect(netnsIdentityOf(p, '/proc/708/ns/net')).toBe('boot-1/4:4026532001/5000');
    expect(netnsIdentityOf(p, '/proc/709/ns/net')).toBeUndefined();
    expect(p.open.size).toBe(0); // every fd it opened is closed
    expect(netnsIdentityOfFd(port({}, null), 3, '/var/run/netns/x')).toBeUndefined();
    // A pinned path: the namespace alone; a PID whose start cannot be read: no identity.
    const pinned = port({ '/var/run/netns/cni-1': '4:4026532005' });
    expect(netnsIdentityOf(pinned, '/var/run/netns/cni-1')).toBe('boot-1/4:4026532005');
    const unreadable = port({ '/proc/708/ns/net': '4:4026532001' }, 'boot-1', { '/proc/708/ns/net': '' });
    unreadable.processStart = () => undefined;
    expect(netnsIdentityOf(unreadable, '/proc/708/ns/net')).toBeUndefined();
  });

  it('a lease is live while its path names the namespace ADD used; an older lease is taken at its path', () => {
    const p = port({ '/proc/708/ns/net': '4:4026532001' });
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532001/5000' }), p)).toBe(true);
    // The PID reused by another process: another namespace at the same path.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532077/5000' }), p)).toBe(false);
    // Recorded in an earlier boot: whatever the path names now is another namespace.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-0/4:4026532001/5000' }), p)).toBe(false);
    // The PID reused by a process of a later sandbox that got the old inode: its start tells them apart.
    const reused = port({ '/proc/708/ns/net': '4:4026532001' }, 'boot-1', { '/proc/708/ns/net': '9999' });
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532001/5000' }), reused)).toBe(false);
    expect(leaseNetnsLive(lease(), p)).toBe(true);
    expect(leaseNetnsLive(lease({ netns: '/proc/709/ns/net' }), p)).toBe(false);
    expect(leaseNetnsLive(lease({ netns: undefined }), p)).toBe(false);
    // No boot id to compare with: the path's word, as before.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-0/4:1' }), port({ '/proc/708/ns/net': '4:1' }, null))).toBe(
      true,
    );
  });

  it('a veth pair is made again only into the namespace ADD used; a PID path without a record, never', () => {
    const p = port({ '/proc/708/ns/net': '4:4026532001', '/var/run/netns/cni-1': '4:4026532005' });
    const live = (l: Lease) => leaseNetnsLive(l, p);
    expect(mayRemakePair(lease({ netnsId: 'boot-1/4:4026532001/5000' }), live)).toBe(true);
    expect(mayRemakePair(lease({ netnsId: 'boot-1/4:4026532077/5000' }), live)).toBe(false);
    expect(mayRemakePair(lease(), live)).toBe(false);
    expect(mayRemakePair(lease({ netns: '/var/run/netns/cni-1' }), live)).toBe(true);
    expect(mayRemakePair(lease({ netns: '/var/run/netns/cni-1' }), undefined)).toBe(false);
    expect(namedByPid('/proc/708/ns/net')).toBe(true);
    expect(namedByPid('/proc/self/ns/net')).toBe(false);
    expect(namedByPid('/var/run/netns/cni-1')).toBe(false);
  });

  it("the API's lease collector frees a running pod's earlier sandbox whose PID path names another namespace", () => {
    const p = port({ '/proc/708/ns/net': '4:4026532077' });
    const old = lease({ netnsId: 'boot-0/4:4026532001/5000' });
    const running = [{ namespace: 'default', name: 'web', uid: 'uid-web' }];
    const live = (l: Lease) => leaseNetnsLive(l, p);
    expect(staleLeases([old], running, live, new Set(), () => false)).toEqual([old]);
    // Before the identity, the path's word kept it for good.
    expect(
      staleLeases(
        [old],
        running,
        (l) => p.isNetns(l.netns!),
        new Set(),
        () => false,
      ),
    ).toEqual([]);
  });
});

describe('a namespace the agent cannot open (its own trouble: out of file descriptors)', () => {
  const emfile = () => {
    throw new CniError(CniCode.IO_FAILURE, 'cannot open network namespace /proc/708/ns/net: EMFILE');
  };

  it('is no verdict: the identity and the liveness throw, where a missing one is undefined and false', () => {
    const p = { ...port({}), openNetnsFd: emfile, isNetns: emfile };
    expect(() => netnsIdentityOf(p, '/proc/708/ns/net')).toThrow(/EMFILE/);
    expect(() => leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532001/5000' }), p)).toThrow(/EMFILE/);
    expect(() => leaseNetnsLive(lease(), p)).toThrow(/EMFILE/);
    // The same lease judged with the namespace really missing: gone.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532001/5000' }), port({}))).toBe(false);
  });

  it("a left pod's lease: no verdict is not 'gone' (false would free it); taken for there, its veth alone decides", () => {
    const left = lease({ netnsId: 'boot-1/4:4026532001/5000' });
    const p = { ...port({}), openNetnsFd: emfile, isNetns: emfile };
    expect(() => leaseNetnsLive(left, p)).toThrow(/EMFILE/);
    // What "gone" would do while its veth is there: free it.
    expect(
      staleLeases(
        [left],
        [],
        () => false,
        new Set(),
        () => true,
      ),
    ).toEqual([left]);
    // What the collector does with no verdict (lease-collector.ts: taken for there): kept while its veth
    // is there, freed once the veth is gone (the pair dies with the namespace).
    expect(
      staleLeases(
        [left],
        [],
        () => true,
        new Set(),
        () => true,
      ),
    ).toEqual([]);
    expect(
      staleLeases(
        [left],
        [],
        () => true,
        new Set(),
        () => false,
      ),
    ).toEqual([left]);
  });
});

describe('processStartOf', () => {
  it("reads field 22 of the process's stat, after a command that holds spaces and parentheses", () => {
    const dir = mkdtempSync(join(tmpdir(), 'trl-pstat-'));
    try {
      mkdirSync(join(dir, '708'));
      // A real stat line's shape (linux/fs/proc/array.c): pid (comm) state ppid ... starttime is the 22nd.
      const after = ['S', ...Array.from({ length: 18 }, (_, i) => String(i + 4)), '123456', '999'];
      writeFileSync(join(dir, '708', 'stat'), `708 (pause (x) y) ${after.join(' ')}\n`);
      expect(processStartOf(join(dir, '708', 'ns', 'net'))).toBe('123456');
      expect(processStartOf(join(dir, '709', 'ns', 'net'))).toBeUndefined();
      // This process, through the real /proc: the same as its own stat says.
      const own = readFileSync('/proc/self/stat', 'utf8');
      const start = own.slice(own.lastIndexOf(')') + 2).split(' ')[19];
      expect(processStartOf(`/proc/${process.pid}/ns/net`)).toBe(start);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
