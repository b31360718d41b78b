import { afterEach, describe, expect, it } from 'vitest';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

/**
 * A repeated ADD whose attachment's lease is released while it looks at what is there (a pod CIDR
 * change: the controller releases the leases outside the new ranges) allocates a new lease; if the ADD
 * then fails, that new lease is its own to release, as on a first ADD. Real namespaces, a real IPAM
 * directory; the release comes through the host handle at that point, the failure from the kernel.
 */
describe.skipIf(netnsSkipReason !== undefined)('ADD over a lease released under it', () => {
  const pool = new NetnsPool();
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
    pool.cleanup();
  });

  it('a failed ADD releases the lease it made in place of the released one', async () => {
    const host = pool.add('au-host');
    const pod = pool.add('au-pod');
    const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
    const key = { containerId: 'c1', ifname: 'eth0' };
    await addAttachment(deps, { ...key, netns: pod.path, mtu: 1500 });
    // The pair deleted by someone: the repeated ADD finds the attachment not in place, and sets it up;
    // an eth0 of someone else's in the pod makes the kernel refuse the new pair (EEXIST).
    ip(host.name, 'link', 'del', hostVethName('c1', 'eth0'));
    ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0');
    let released = false;
    let leasedAtCreate: string[] | undefined;
    const real = deps.host;
    const racing = new Proxy(real, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          // The first look at the host: the range change releases the lease meanwhile.
          if (!released) {
            released = true;
            deps.ipam.release(key);
          }
          // The ADD made a lease of its own before it made the pair.
          if (prop === 'createVeth') leasedAtCreate = deps.ipam.get(key)?.addresses.map((a) => a.address);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    }) as NetlinkHandle;
    const failed = await addAttachment(
      { ...deps, host: racing },
      { ...key, netns: pod.path, mtu: 1500 },
    ).catch((e: unknown) => e);
    expect(released).toBe(true);
    expect(leasedAtCreate).toHaveLength(1);
    expect(String(failed)).toContain('interface eth0 already exists');
    // Nothing left: neither the released lease nor the one the failed ADD made.
    expect(deps.ipam.get(key)).toBeUndefined();
    expect(deps.ipam.list()).toEqual([]);
  });

  it('a creation that fails after the kernel made the pair (its reply lost) leaves no veth behind', async () => {
    const host = pool.add('au-host');
    const pod = pool.add('au-pod');
    const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
    const key = { containerId: 'c2', ifname: 'eth0' };
    const real = deps.host;
    // The pair is made; the answer is lost on the way (ENOBUFS on recv, a reply that does not parse).
    const lossy = new Proxy(real, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== 'function') return value;
        if (prop !== 'createVeth') return value.bind(target);
        return async (...args: unknown[]) => {
          await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          throw Object.assign(new Error('RTM_NEWLINK: recv: ENOBUFS'), { errno: 'ENOBUFS' });
        };
      },
    }) as NetlinkHandle;
    const failed = await addAttachment(
      { ...deps, host: lossy },
      { ...key, netns: pod.path, mtu: 1500 },
    ).catch((e: unknown) => e);
    expect(String(failed)).toContain('ENOBUFS');
    expect(deps.ipam.list()).toEqual([]);
    const links = JSON.parse(ip(host.name, '-j', 'link', 'show')) as { ifname: string }[];
    expect(links.map((l) => l.ifname)).not.toContain(hostVethName('c2', 'eth0'));
    const podLinks = JSON.parse(ip(pod.name, '-j', 'link', 'show')) as { ifname: string }[];
    expect(podLinks.map((l) => l.ifname)).toEqual(['lo']);
  });
});
