import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { collectLeases, FRESH_LEASE_MS } from '../../../pkg/agent/lease-collector.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { attachmentKey, hostVethName } from '../../../pkg/datapath/names.ts';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createK8sClient, loadKubeConfig } from '../../../pkg/k8s/index.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { delNetns, ip, ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps, starvedOf } from './in-process-deps.ts';

/**
 * The API lease collector (collectLeases) against real namespaces, a real IPAM directory and the
 * test API server's pod list (which shows none of these pods: they "left" as far as it knows). It
 * must never release the lease of a pod that is running: one made shortly before the pods were
 * listed (the list comes from the API server's watch cache, which may lag a pod bound a moment ago),
 * nor one whose ADD ended while the links were listed (its veth made after the listing).
 */
describe.skipIf(netnsSkipReason !== undefined)('the API lease collector', () => {
  const pool = new NetnsPool();
  const cleanups: (() => void)[] = [];
  let server: TestApiServer | undefined;
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) c();
    pool.cleanup();
    await server?.close();
    server = undefined;
  });

  async function setUp() {
    const host = pool.add('lc-host');
    const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
    server = await startTestApiServer({ bookmarkIntervalMs: 0 });
    const kube = createK8sClient(loadKubeConfig({ kubeconfigPath: server.kubeconfigPath }));
    const log = createLogger({ level: 'silent', destination: new PassThrough() });
    return { host, deps, kube, log };
  }

  it('leaves a lease made less than a minute before the pods were listed; collects it after, once its pod is gone', async () => {
    const { host, deps, kube, log } = await setUp();
    const pod = pool.add('lc-pod');
    await addAttachment(deps, { containerId: 'c1', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    // The pod gone with its namespace (the pair goes with it), no DEL.
    ip(host.name, 'link', 'del', hostVethName('c1', 'eth0'));
    const base = { kube, nodeName: 'n1', datapath: deps, busy: new Set<string>(), log };
    expect(await collectLeases(base)).toBe(0);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeDefined();
    const later = Date.now() + FRESH_LEASE_MS + 1_000;
    expect(await collectLeases({ ...base, now: () => later })).toBe(1);
    expect(deps.ipam.get({ containerId: 'c1', ifname: 'eth0' })).toBeUndefined();
  });

  it('judges a lease made "in the future" (the clock stepped back since): not a fresh one forever', async () => {
    const { host, deps, kube, log } = await setUp();
    const pod = pool.add('lc-pod');
    await addAttachment(deps, { containerId: 'c3', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    ip(host.name, 'link', 'del', hostVethName('c3', 'eth0'));
    const stepped = Date.now() - 10 * 60_000;
    const base = { kube, nodeName: 'n1', datapath: deps, busy: new Set<string>(), log };
    expect(await collectLeases({ ...base, now: () => stepped })).toBe(1);
    expect(deps.ipam.get({ containerId: 'c3', ifname: 'eth0' })).toBeUndefined();
  });

  it("leaves a left pod's lease while the agent cannot open its namespace (out of descriptors), says why, and frees it once the namespace is gone", async () => {
    const { deps, kube } = await setUp();
    const lines = new PassThrough();
    const logged: string[] = [];
    lines.on('data', (d: Buffer) => logged.push(d.toString()));
    const log = createLogger({ level: 'warn', destination: lines });
    const pod = pool.add('lc-pod');
    await addAttachment(deps, { containerId: 'c4', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    // Another pod that left, its namespace (and with it its pair) gone: collected in the same pass.
    const other = pool.add('lc-pod');
    await addAttachment(deps, { containerId: 'c5', ifname: 'eth0', netns: other.path, mtu: 1500 });
    delNetns(other.name);
    // c4's namespace cannot be opened (EMFILE), the others can.
    const starved = starvedOf(deps, pod.path);
    const later = Date.now() + FRESH_LEASE_MS + 1_000;
    const base = { kube, nodeName: 'n1', busy: new Set<string>(), log, now: () => later };
    // The pod is not in the API's list (it left) while its namespace and veth are there: only the
    // namespace's verdict could free it, and there is none. The pass goes on with the others.
    expect(await collectLeases({ ...base, datapath: starved })).toBe(1);
    expect(deps.ipam.get({ containerId: 'c4', ifname: 'eth0' })).toBeDefined();
    expect(deps.ipam.get({ containerId: 'c5', ifname: 'eth0' })).toBeUndefined();
    const warned = logged
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; unjudged?: number; error?: string });
    expect(warned).toEqual([
      expect.objectContaining({
        msg: "IPAM garbage collection could not tell whether these leases' pod namespaces are there: kept unless their veth is gone; judged again next period",
        unjudged: 1,
        error: expect.stringMatching(/EMFILE/),
      }),
    ]);
    // The namespace gone for real (the pair with it): the next pass frees it.
    delNetns(pod.name);
    expect(await collectLeases({ ...base, datapath: deps })).toBe(1);
    expect(deps.ipam.get({ containerId: 'c4', ifname: 'eth0' })).toBeUndefined();
  });

  it('leaves a lease whose ADD was under way when the leases were read and ended while the links were listed', async () => {
    const { host, deps, kube, log } = await setUp();
    const pod = pool.add('lc-pod');
    await addAttachment(deps, { containerId: 'c2', ifname: 'eth0', netns: pod.path, mtu: 1500 });
    const key = attachmentKey({ containerId: 'c2', ifname: 'eth0' });
    const busy = new Set([key]);
    // The listing as it was before the ADD made its veth; the ADD ends before the judgement.
    const real = deps.host;
    const racing: NetlinkHandle = Object.assign(Object.create(real) as NetlinkHandle, {
      listLinks: async () => {
        const links = await real.listLinks();
        busy.delete(key);
        return links.filter((l) => l.name !== hostVethName('c2', 'eth0'));
      },
    });
    const later = Date.now() + FRESH_LEASE_MS + 1_000;
    const released = await collectLeases({
      kube,
      nodeName: 'n1',
      datapath: { ...deps, host: racing },
      busy,
      log,
      now: () => later,
    });
    expect(released).toBe(0);
    expect(deps.ipam.get({ containerId: 'c2', ifname: 'eth0' })).toBeDefined();
    expect(ipJson<{ ifname: string }[]>(host.name, 'link', 'show').map((l) => l.ifname)).toContain(
      hostVethName('c2', 'eth0'),
    );
  });
});
