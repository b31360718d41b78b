import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { sweepAtStart } from '../../../pkg/agent/start-up-state.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import type { Ipam } from '../../../pkg/ipam/index.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import { delNetns, ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps, starvedOf } from './in-process-deps.ts';

/**
 * The start-up sweep releases a lease whose veth AND namespace are gone. A namespace the agent cannot
 * judge (out of file descriptors: what openNetnsFd throws on a real EMFILE, see
 * test/integration/netns/host-netlink-open.test.ts) is no "gone": the lease is kept and said, and the
 * agent still starts (a sweep that threw took the agent down, in a crash loop while the node's fds
 * stayed short). Real namespaces, veths and IPAM directory; only the namespace port is starved.
 */
describe.skipIf(netnsSkipReason !== undefined)('the start-up sweep, namespaces it cannot judge', () => {
  const pool = new NetnsPool();
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
    pool.cleanup();
  });

  it('keeps a veth-less lease whose namespace it cannot open, says so, and releases it once the namespace is really gone', async () => {
    const host = pool.add('sw-host');
    const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
    const gone = pool.add('sw-pod');
    const running = pool.add('sw-pod');
    await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: gone.path, mtu: 1500 });
    await addAttachment(deps, { containerId: 'c2', ifname: 'eth0', netns: running.path, mtu: 1500 });
    ip(host.name, 'link', 'del', hostVethName('c1', 'eth0')); // c1's pair gone, its namespace still there
    const starved = starvedOf(deps);
    const lines: Record<string, unknown>[] = [];
    const out = new PassThrough();
    out.on('data', (d: Buffer) => {
      for (const l of d.toString('utf8').trim().split('\n')) lines.push(JSON.parse(l));
    });
    const log = createLogger({ level: 'info', destination: out });

    expect(await sweepAtStart(starved, deps.ipam as Ipam, deps.leaseDir, log)).toBe(0);
    await new Promise((r) => setImmediate(r)); // the logger's stream
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeDefined();
    expect(deps.ipam.get({ containerId: 'c2', ifname: 'eth0' })).toBeDefined();
    const said = lines.filter((l) => String(l.msg).startsWith('start-up sweep kept a lease'));
    // Only c1 was judged at all: a lease whose veth is there is kept without asking.
    expect(said).toEqual([
      expect.objectContaining({
        level: 'warn',
        containerId: 'c1',
        netns: gone.path,
        error: expect.stringMatching(/EMFILE/),
      }),
    ]);

    delNetns(gone.name);
    expect(await sweepAtStart(deps, deps.ipam as Ipam, deps.leaseDir, log)).toBe(1);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeUndefined();
    expect(deps.ipam.get({ containerId: 'c2', ifname: 'eth0' })).toBeDefined();
  });
});
