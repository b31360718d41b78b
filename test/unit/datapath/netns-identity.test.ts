import { describe, expect, it } from 'vitest';
import { mayRemakePair } from '../../../pkg/agent/host-side-check.ts';
import { staleLeases } from '../../../pkg/agent/lease-gc.ts';
import {
  leaseNetnsLive,
  namedByPid,
  netnsIdentityOf,
  netnsIdentityOfFd,
} from '../../../pkg/datapath/netns-identity.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';

/**
 * A pod's namespace path can come to name another namespace (cri-dockerd's /proc/PID/ns/net with its
 * PID reused, a reboot): the lease's netnsId says which one ADD used. Namespaces here are a table of
 * path -> namespace id, as openNetnsFd and namespaceId would see them.
 */
function port(table: Record<string, string>, bootId: string | null = 'boot-1') {
  const open = new Map<number, string>();
  let next = 100;
  return {
    ...(bootId === null ? {} : { bootId }),
    openNetnsFd: (path: string): number => {
      const id = table[path];
      if (id === undefined) throw new Error(`${path}: not a network namespace`);
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
    expect(netnsIdentityOf(p, '/proc/708/ns/net')).toBe('boot-1/4:4026532001');
    expect(netnsIdentityOf(p, '/proc/709/ns/net')).toBeUndefined();
    expect(p.open.size).toBe(0); // every fd it opened is closed
    expect(netnsIdentityOfFd(port({}, null), 3)).toBeUndefined();
  });

  it('a lease is live while its path names the namespace ADD used; an older lease is taken at its path', () => {
    const p = port({ '/proc/708/ns/net': '4:4026532001' });
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532001' }), p)).toBe(true);
    // The PID reused by another process: another namespace at the same path.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-1/4:4026532077' }), p)).toBe(false);
    // Recorded in an earlier boot: whatever the path names now is another namespace.
    expect(leaseNetnsLive(lease({ netnsId: 'boot-0/4:4026532001' }), p)).toBe(false);
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
    expect(mayRemakePair(lease({ netnsId: 'boot-1/4:4026532001' }), live)).toBe(true);
    expect(mayRemakePair(lease({ netnsId: 'boot-1/4:4026532077' }), live)).toBe(false);
    expect(mayRemakePair(lease(), live)).toBe(false);
    expect(mayRemakePair(lease({ netns: '/var/run/netns/cni-1' }), live)).toBe(true);
    expect(mayRemakePair(lease({ netns: '/var/run/netns/cni-1' }), undefined)).toBe(false);
    expect(namedByPid('/proc/708/ns/net')).toBe(true);
    expect(namedByPid('/proc/self/ns/net')).toBe(false);
    expect(namedByPid('/var/run/netns/cni-1')).toBe(false);
  });

  it("the API's lease collector frees a running pod's earlier sandbox whose PID path names another namespace", () => {
    const p = port({ '/proc/708/ns/net': '4:4026532077' });
    const old = lease({ netnsId: 'boot-0/4:4026532001' });
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
