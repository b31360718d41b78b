import { describe, expect, it } from 'vitest';
import { staleLeases } from '../../../pkg/agent/lease-gc.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';

const lease = (id: string, over: Partial<Lease> = {}): Lease => ({
  containerId: id,
  ifname: 'eth0',
  addresses: [{ family: 4, address: `10.244.1.${id.length}`, range: '10.244.1.0/24' }],
  createdAt: '2026-01-01T00:00:00Z',
  netns: `/var/run/netns/${id}`,
  podNamespace: 'default',
  podName: id,
  podUid: `uid-${id}`,
  ...over,
});

describe('staleLeases (IPAM GC against the API)', () => {
  const running = [{ namespace: 'default', name: 'alive', uid: 'uid-alive' }];
  const exists = (present: string[]) => (l: Lease) => present.includes(l.netns ?? '');

  it('releases only when the pod left this node AND its netns is gone', () => {
    const leases = [
      lease('alive'),
      lease('gone'),
      lease('leftButNetnsThere'),
      lease('alive', { containerId: 'old-sandbox', podUid: 'uid-previous', netns: '/var/run/netns/old' }),
    ];
    const netns = exists(['/var/run/netns/alive', '/var/run/netns/leftButNetnsThere']);
    const stale = staleLeases(leases, running, netns, new Set(), () => true);
    expect(stale.map((l) => l.containerId).sort()).toEqual(['gone', 'old-sandbox']);
  });

  it('a finished pod (Succeeded, Failed) still listed keeps no lease whose netns is gone; one still there stays', () => {
    const pods = [
      { namespace: 'default', name: 'job', uid: 'uid-job', phase: 'Succeeded' },
      { namespace: 'default', name: 'crashed', uid: 'uid-crashed', phase: 'Failed' },
      { namespace: 'default', name: 'done', uid: 'uid-done', phase: 'Succeeded' },
      { namespace: 'default', name: 'alive', uid: 'uid-alive', phase: 'Running' },
    ];
    const leases = [lease('job'), lease('crashed'), lease('done'), lease('alive')];
    const stale = staleLeases(
      leases,
      pods,
      exists(['/var/run/netns/done', '/var/run/netns/alive']),
      new Set(),
      () => true,
    );
    expect(stale.map((l) => l.containerId).sort()).toEqual(['crashed', 'job']);
  });

  it('a lease without a pod uid whose name runs again goes once its netns and its host veth are both gone', () => {
    // A StatefulSet's pod deleted and created under the same name, by a runtime that sends no K8S_POD_UID.
    const old = lease('alive', {
      containerId: 'old-sandbox',
      podUid: undefined,
      netns: '/var/run/netns/old',
    });
    const veth = (present: boolean) => () => present;
    expect(staleLeases([old], running, exists([]), new Set(), veth(false))).toEqual([old]);
    expect(staleLeases([old], running, exists([]), new Set(), veth(true))).toEqual([]);
    expect(staleLeases([old], running, exists([old.netns!]), new Set(), veth(false))).toEqual([]);
    // No namespace path to judge by: kept while a pod of that name runs.
    const pathless = { ...old, netns: undefined };
    expect(staleLeases([pathless], running, exists([]), new Set(), veth(false))).toEqual([]);
  });

  it("a running pod's earlier sandbox (same uid) goes once its netns and its host veth are both gone", () => {
    // The runtime recreated the pod's sandbox and never sent DEL for the old one.
    const old = lease('alive', { containerId: 'old-sandbox', netns: '/var/run/netns/old' });
    const current = lease('alive', { containerId: 'new-sandbox', netns: '/var/run/netns/new' });
    const veth = (present: string[]) => (l: Lease) => present.includes(l.containerId);
    const netns = exists([current.netns!]);
    expect(staleLeases([old, current], running, netns, new Set(), veth(['new-sandbox']))).toEqual([old]);
    // Its veth still there, or its namespace: it may be the running sandbox's. Kept.
    expect(staleLeases([old], running, netns, new Set(), veth(['old-sandbox']))).toEqual([]);
    expect(staleLeases([old], running, exists([old.netns!]), new Set(), veth([]))).toEqual([]);
    // The current sandbox's namespace not visible to the agent: its veth keeps it.
    expect(staleLeases([current], running, exists([]), new Set(), veth(['new-sandbox']))).toEqual([]);
  });

  it('a pod that left goes once its host veth is gone, even while its namespace path names a namespace', () => {
    // A /proc/PID/ns/net path whose PID now belongs to another process: the path alone looks alive.
    const left = lease('left', { netns: '/proc/4242/ns/net' });
    const netns = exists([left.netns!]);
    expect(staleLeases([left], running, netns, new Set(), () => false)).toEqual([left]);
    expect(staleLeases([left], running, netns, new Set(), () => true)).toEqual([]);
  });

  it("a static pod's lease (the kubelet's UID, not its mirror's) is a running pod's: a netns the agent cannot see alone never frees it", () => {
    const pods = [{ namespace: 'kube-system', name: 'etcd-n1', uid: 'mirror-uid', kubeletUid: 'c0ffee' }];
    const etcd = lease('etcd', { podNamespace: 'kube-system', podName: 'etcd-n1', podUid: 'c0ffee' });
    // Its namespace not seen, its veth there; then its veth gone, its namespace there: kept both times.
    expect(staleLeases([etcd], pods, exists([]), new Set(), () => true)).toEqual([]);
    expect(staleLeases([etcd], pods, exists([etcd.netns!]), new Set(), () => false)).toEqual([]);
    // Both gone: an earlier sandbox of it, freed.
    expect(staleLeases([etcd], pods, exists([]), new Set(), () => false)).toEqual([etcd]);
  });

  it('never touches an attachment with a CNI call in flight', () => {
    const stale = staleLeases([lease('gone')], [], exists([]), new Set(['gone\0eth0']), () => false);
    expect(stale).toEqual([]);
  });

  it('a lease without pod metadata is judged by its netns alone', () => {
    const bare = lease('bare', { podNamespace: undefined, podName: undefined, podUid: undefined });
    expect(staleLeases([bare], running, exists([bare.netns!]), new Set(), () => true)).toEqual([]);
    expect(staleLeases([bare], running, exists([]), new Set(), () => true)).toEqual([bare]);
  });

  it('a lease without a namespace path (rebuilt from the kernel) is gone only when its host veth is gone too', () => {
    const rebuilt = lease('rebuilt', {
      netns: undefined,
      podNamespace: undefined,
      podName: undefined,
      podUid: undefined,
    });
    const veth = (present: boolean) => (l: Lease) => present && l.containerId === 'rebuilt';
    expect(staleLeases([rebuilt], [], exists([]), new Set(), veth(true))).toEqual([]);
    expect(staleLeases([rebuilt], [], exists([]), new Set(), veth(false))).toEqual([rebuilt]);
    // With its pod's fields from the API, it stays while that pod runs, veth or not.
    const named = { ...rebuilt, podNamespace: 'default', podName: 'alive', podUid: 'uid-alive' };
    expect(staleLeases([named], running, exists([]), new Set(), veth(false))).toEqual([]);
  });
});
