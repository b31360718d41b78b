import { afterEach, describe, expect, it } from 'vitest';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

/**
 * An IPv4-only node whose pod MTU is below 1280 (VXLAN over a 1280 underlay, a netconf `mtu: 1000`):
 * the kernel gives a link that small no IPv6 state at all (no net/ipv6/conf/<link>), so there is no
 * disable_ipv6 to write on the pod's host end, and nothing to turn off. Before, every such ADD failed
 * on that write (ENOENT). Real namespaces and a real IPAM directory.
 */
describe.skipIf(netnsSkipReason !== undefined)('ADD on an IPv4-only node with a pod MTU below 1280', () => {
  const pool = new NetnsPool();
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
    pool.cleanup();
  });

  it('sets the pod up at that MTU, its host end without IPv6', async () => {
    const host = pool.add('sm-host');
    const pod = pool.add('sm-pod');
    const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
    const att = await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1000 });
    expect(att.addresses.map((a) => a.address)).toEqual(['10.244.1.2']);
    const hostEnd = ipJson<{ mtu: number }[]>(host.name, 'link', 'show', hostVethName('c1', 'eth0'))[0]!;
    expect(hostEnd.mtu).toBe(1000);
    const inet6 = ipJson<{ addr_info: { family: string }[] }[]>(
      host.name,
      'addr',
      'show',
      'dev',
      hostVethName('c1', 'eth0'),
    )[0]!.addr_info.filter((a) => a.family === 'inet6');
    expect(inet6).toEqual([]);
  });
});
