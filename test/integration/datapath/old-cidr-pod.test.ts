import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { rebuildHeldLeases } from '../../../pkg/agent/lease-rebuild.ts';
import { sweepAtStart } from '../../../pkg/agent/start-up-state.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { attachmentKey, hostVethName } from '../../../pkg/datapath/names.ts';
import { type NetlinkHandle, TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import { type Ipam, openIpam } from '../../../pkg/ipam/index.ts';
import { capturedLog } from '../../support/captured-log.ts';
import { ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

const OLD = '10.244.1.0/24';
const NEW = '10.244.9.0/24';
const INVALIDATED =
  'leases outside the new pod CIDRs released and their veths removed; those pods need to be recreated';

/**
 * A pod of the old pod CIDR must not outlive a CIDR change with its veth and /32 host route because
 * its lease became a hold the rebuild can never restore (the address is outside the new ranges): once
 * the old CIDR is another node's, this node's traffic to that address would still reach the stale pod.
 * Two ways there, both over real namespaces, the agent's start-up as it runs it (IPAM opened with no
 * ranges, the start-up sweep, then the new ranges and the rebuild onRangesSet runs):
 * - `crash`: the agent released the lease for the new CIDR (durable) and was killed before the
 *   background deleter removed the veth; the sweep finds the routed veth and holds its address.
 * - `quarantined`: the lease record was torn on disk while the CIDR changed; load holds its address.
 */
describe.skipIf(netnsSkipReason !== undefined)('a pod of an old pod CIDR left held (real namespaces)', () => {
  const pool = new NetnsPool();
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const c of closers.splice(0)) c();
    pool.cleanup();
  });

  /** A pod of OLD and the restarted agent up to the rebuild: its address held, its veth routing it. */
  async function leftHeld(how: 'crash' | 'quarantined') {
    const host = pool.add('host');
    const deps = inProcessDeps(host, [OLD], closers, { echo: false });
    const pod = pool.add('pod', { loUp: false });
    const key = { containerId: 'c-old-cidr', ifname: 'eth0' };
    const att = await addAttachment(deps, {
      ...key,
      netns: pod.path,
      mtu: 1500,
      pod: { namespace: 'shop', name: 'web-1', uid: 'u-1' },
    });
    const address = att.addresses[0]!.address;
    const veth = hostVethName(key.containerId, key.ifname);
    const routes = (): string[] =>
      ipJson<{ dst: string }[]>(host.name, 'route', 'show', 'proto', String(TRELLIS_ROUTE_PROTOCOL)).map(
        (r) => r.dst,
      );
    const links = (): string[] =>
      ipJson<{ ifname: string }[]>(host.name, 'link', 'show').map((l) => l.ifname);
    expect(routes()).toContain(address);

    if (how === 'crash') {
      // What the controller does first for the new CIDR; the veth deletions it then schedules never run.
      expect((deps.ipam as Ipam).setRanges([NEW]).map((l) => l.containerId)).toEqual([key.containerId]);
    } else {
      const dir = join(deps.leaseDir, 'leases');
      for (const f of readdirSync(dir)) writeFileSync(join(dir, f), '{"containerId": "c-old');
    }

    // The restarted agent.
    const { log, lines } = capturedLog();
    const ipam = openIpam({ dir: deps.leaseDir, ranges: [] });
    await sweepAtStart({ ...deps, ipam }, ipam, deps.leaseDir, log);
    expect(ipam.heldKeys()).toEqual([key]); // the pod is there as far as anyone can tell
    expect(ipam.setRanges([NEW])).toEqual([]);
    const rebuild = async (host: NetlinkHandle = deps.host, busy: ReadonlySet<string> = new Set()) => {
      const outcome = await rebuildHeldLeases({
        ipam,
        host,
        netns: deps.netns,
        busy,
        listDir: () => [],
        log,
      });
      await new Promise((r) => setImmediate(r)); // the logger's stream
      return outcome;
    };
    return { deps, ipam, key, address, veth, routes, links, lines, rebuild };
  }

  for (const how of ['crash', 'quarantined'] as const) {
    it(`is removed with its host route and its hold, and named to recreate (${how})`, async () => {
      const { deps, ipam, key, address, veth, routes, links, lines, rebuild } = await leftHeld(how);
      const outcome = await rebuild();

      expect(links()).not.toContain(veth);
      expect(routes()).not.toContain(address);
      expect(ipam.heldKeys()).toEqual([]);
      expect(ipam.list()).toEqual([]);
      const warning = lines.find((l) => l.msg === INVALIDATED);
      expect(warning, JSON.stringify(lines)).toMatchObject({
        level: 'warn',
        leases: [{ pod: 'shop/web-1', containerId: key.containerId, ifname: 'eth0', addresses: [address] }],
      });
      // Not the rebuild's "held until DEL": nothing of the pod is left for a DEL that may never come.
      expect(lines.filter((l) => String(l.msg).includes('until DEL'))).toEqual([]);
      expect(outcome).toMatchObject({ invalidated: 1, unremoved: 0, rebuilt: 0 });
      // The address is free again in IPAM (a reload finds no reservation), as for a released lease.
      expect(openIpam({ dir: deps.leaseDir, ranges: [OLD] }).heldKeys()).toEqual([]);
    });
  }

  it('keeps the hold when the veth cannot be deleted, and the next try removes it', async () => {
    const { deps, ipam, key, address, veth, routes, links, lines, rebuild } = await leftHeld('crash');
    const failing = Object.create(deps.host) as NetlinkHandle;
    failing.deleteLink = () => Promise.reject(Object.assign(new Error('EBUSY'), { errno: 'EBUSY' }));
    expect(await rebuild(failing)).toMatchObject({ invalidated: 0, unremoved: 1 });
    // Released without its veth, the stale pod would be nobody's to remove: it stays held for the retry.
    expect(ipam.heldKeys()).toEqual([key]);
    expect(links()).toContain(veth);
    expect(lines.find((l) => l.msg === INVALIDATED)).toBeUndefined();

    expect(await rebuild()).toMatchObject({ invalidated: 1, unremoved: 0 });
    expect(links()).not.toContain(veth);
    expect(routes()).not.toContain(address);
    expect(ipam.heldKeys()).toEqual([]);
  });

  it('keeps a lease an ADD of the same attachment made while the old veth was being deleted', async () => {
    const { deps, ipam, key, veth, links, rebuild } = await leftHeld('crash');
    // While the deletion is in the kernel, the runtime's DEL releases the hold and an ADD of the same
    // container id (a runtime that reuses it) leases an address of the new CIDR for a running pod.
    const racing = Object.create(deps.host) as NetlinkHandle;
    let fresh: string | undefined;
    racing.deleteLink = async (index) => {
      await deps.host.deleteLink(index);
      ipam.release(key);
      fresh = ipam.allocate(key, {}).addresses[0]?.address;
    };
    // Nothing left to retry or to call failed: the old veth is gone and the calls decided the key.
    expect(await rebuild(racing)).toMatchObject({ invalidated: 0, unremoved: 0, failed: 0 });
    expect(links()).not.toContain(veth);
    expect(fresh).toMatch(/^10\.244\.9\./);
    expect(ipam.get(key)?.addresses.map((a) => a.address)).toEqual([fresh]);
  });

  it('one busy with a CNI call is left for the retry (unremoved), and the retry removes it', async () => {
    const { ipam, key, address, veth, routes, links, rebuild } = await leftHeld('crash');
    const busy = new Set([attachmentKey(key)]);
    expect(await rebuild(undefined, busy)).toMatchObject({ invalidated: 0, unremoved: 1 });
    expect(ipam.heldKeys()).toEqual([key]);
    expect(links()).toContain(veth);

    expect(await rebuild()).toMatchObject({ invalidated: 1, unremoved: 0 });
    expect(links()).not.toContain(veth);
    expect(routes()).not.toContain(address);
    expect(ipam.heldKeys()).toEqual([]);
  });
});
