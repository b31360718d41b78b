import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { checkAttachment, expectedFromResult } from '../../../pkg/datapath/check.ts';
import { delAttachment } from '../../../pkg/datapath/del.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { attachmentResult } from '../../../pkg/datapath/result.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import {
  builtSkipReason,
  REFERENCE_PLUGIN_DIR,
  referencePluginsSkipReason,
  runPlugin,
} from '../../support/cni-driver.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, nsPing, type TestNetns } from '../../support/netns.ts';
import { leaseAddresses } from '../reliability/support.ts';
import { type AddResult, containerId, NodeHarness, podAddr, V4_CIDR, V6_CIDR } from './harness.ts';
import { inProcessDeps } from './in-process-deps.ts';

/**
 * A pod with two interfaces in one namespace, as Multus makes them: eth0 and net1, same container ID.
 * The first interface keeps the pod's shared routes (the link route to 169.254.1.1, the default
 * routes, the node's pod CIDRs); a second trellis interface must neither take them over nor, when it
 * is deleted, take them away.
 */

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  metrics?: unknown;
}

/** The pod's main-table routes of both families (kernel view), lo's own left out. */
function podRoutes(ns: string): IpRoute[] {
  return [
    ...ipJson<IpRoute[]>(ns, '-4', 'route', 'show'),
    ...ipJson<IpRoute[]>(ns, '-6', 'route', 'show'),
  ].filter((r) => r.dev !== 'lo');
}

function routesOn(ns: string, dev: string): IpRoute[] {
  return podRoutes(ns).filter((r) => r.dev === dev);
}

function defaultRoutes(ns: string, family: 4 | 6): IpRoute[] {
  return ipJson<IpRoute[]>(ns, `-${family}`, 'route', 'show', 'default');
}

const skip = netnsSkipReason ?? builtSkipReason();

describe.skipIf(skip !== undefined)(
  `a pod with two interfaces (Multus)${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    const check = (pod: TestNetns, id: string, ifname: string, prevResult: unknown) =>
      node.call({ command: 'CHECK', containerId: id, netns: pod.path, ifname }, node.conf({ prevResult }));
    const del = (pod: TestNetns, id: string, ifname: string) =>
      node.call({ command: 'DEL', containerId: id, netns: pod.path, ifname });

    it('trellis on eth0 then net1: eth0 keeps its routes, through CHECK and DEL of net1', async () => {
      const pod = node.podNs();
      const id = containerId();
      const eth0 = await node.add(pod, id);
      expect(eth0.code, eth0.stdout).toBe(0);
      const eth0Routes = routesOn(pod.name, 'eth0');
      expect(eth0Routes).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '169.254.1.1' }));
      expect(eth0Routes).toContainEqual(expect.objectContaining({ dst: 'default', gateway: 'fe80::1' }));

      const net1 = await node.add(pod, id, undefined, 'net1');
      expect(net1.code, net1.stdout).toBe(0);
      // eth0's routes, the default routes among them, are neither moved nor replaced.
      expect(routesOn(pod.name, 'eth0')).toEqual(eth0Routes);
      expect(defaultRoutes(pod.name, 4)).toMatchObject([{ gateway: '169.254.1.1', dev: 'eth0' }]);
      expect(defaultRoutes(pod.name, 6)).toMatchObject([{ gateway: 'fe80::1', dev: 'eth0' }]);
      // net1's result reports only what net1 holds: no route (the field left out), the default
      // routes being eth0's.
      expect((net1.json as AddResult).routes).toBeUndefined();
      expect((eth0.json as AddResult).routes.map((r) => r.dst)).toEqual(['0.0.0.0/0', '::/0']);

      for (const [ifname, run] of [
        ['eth0', eth0],
        ['net1', net1],
      ] as const) {
        const checked = await check(pod, id, ifname, run.json);
        expect(checked.code, `CHECK ${ifname}: ${checked.stdout}`).toBe(0);
      }
      // A repeated ADD of net1 finds it in place and answers the same.
      const again = await node.add(pod, id, undefined, 'net1');
      expect(again.code, again.stdout).toBe(0);
      expect((again.json as AddResult).routes).toBeUndefined();
      expect((again.json as AddResult).ips).toEqual((net1.json as AddResult).ips);

      const delNet1 = await del(pod, id, 'net1');
      expect(delNet1.code, delNet1.stdout).toBe(0);
      await node.waitForVeths(1);
      expect(node.hostVeths()).toEqual([hostVethName(id, 'eth0')]);
      expect(routesOn(pod.name, 'eth0')).toEqual(eth0Routes);
      const checked = await check(pod, id, 'eth0', eth0.json);
      expect(checked.code, `CHECK eth0 after DEL net1: ${checked.stdout}`).toBe(0);

      // Another pod of the node is reached through eth0's default routes.
      const other = node.podNs();
      const otherId = containerId();
      const otherRun = await node.add(other, otherId);
      expect(otherRun.code, otherRun.stdout).toBe(0);
      for (const family of [4, 6] as const) {
        expect(nsPing(pod.name, podAddr(otherRun.json as AddResult, family)), `IPv${family}`).toBe(true);
      }

      for (const [p, i] of [
        [pod, id],
        [other, otherId],
      ] as const) {
        const d = await node.del(i, p.path);
        expect(d.code, d.stdout).toBe(0);
      }
      await node.waitForVeths(0);
      expect(node.hostVeths()).toEqual([]);
      expect([...leaseAddresses(node).keys()].filter((k) => k.startsWith(id))).toEqual([]);
      expect([...node.hostRoutes(4), ...node.hostRoutes(6)]).toEqual([]);
      expect(podRoutes(pod.name)).toEqual([]);
    });

    const ptpSkip = referencePluginsSkipReason('ptp', 'host-local');
    it.skipIf(ptpSkip !== undefined)(
      `ptp on eth0, trellis on net1: ptp's default route stays, through DEL of net1${ptpSkip ? ` (skipped: ${ptpSkip})` : ''}`,
      async () => {
        const dataDir = mkdtempSync(join(tmpdir(), 'trl-host-local-'));
        try {
          const pod = node.podNs();
          const id = containerId();
          const ptpConf = JSON.stringify({
            cniVersion: '1.0.0',
            name: 'primary',
            type: 'ptp',
            ipMasq: false,
            ipam: { type: 'host-local', subnet: '10.99.1.0/24', routes: [{ dst: '0.0.0.0/0' }], dataDir },
          });
          const ptp = (command: 'ADD' | 'DEL') =>
            runPlugin(
              join(REFERENCE_PLUGIN_DIR, 'ptp'),
              { command, containerId: id, netns: pod.path, ifname: 'eth0', hostNetns: node.host.name },
              ptpConf,
            );
          const primary = await ptp('ADD');
          expect(primary.code, primary.stdout + primary.stderr).toBe(0);
          const ptpDefault = defaultRoutes(pod.name, 4);
          expect(ptpDefault).toMatchObject([{ gateway: '10.99.1.1', dev: 'eth0' }]);

          const net1 = await node.add(pod, id, undefined, 'net1');
          expect(net1.code, net1.stdout).toBe(0);
          expect(defaultRoutes(pod.name, 4)).toEqual(ptpDefault);
          // ptp gave the pod no IPv6 default route: net1 is the first to, and reports it.
          expect(defaultRoutes(pod.name, 6)).toMatchObject([{ gateway: 'fe80::1', dev: 'net1' }]);
          expect((net1.json as AddResult).routes).toEqual([{ dst: '::/0', gw: 'fe80::1' }]);
          const checked = await check(pod, id, 'net1', net1.json);
          expect(checked.code, `CHECK net1: ${checked.stdout}`).toBe(0);

          const delNet1 = await del(pod, id, 'net1');
          expect(delNet1.code, delNet1.stdout).toBe(0);
          expect(defaultRoutes(pod.name, 4)).toEqual(ptpDefault);
          expect(nsPing(pod.name, '10.99.1.1')).toBe(true);
          const delPrimary = await ptp('DEL');
          expect(delPrimary.code, delPrimary.stdout + delPrimary.stderr).toBe(0);
        } finally {
          rmSync(dataDir, { recursive: true, force: true });
        }
      },
    );
  },
);

/**
 * The same in-process with the route MTU split (pod-routes.ts): the routes to the node's own pod CIDRs
 * are the first interface's too.
 */
describe.skipIf(netnsSkipReason !== undefined)(
  'a pod with two interfaces, route MTU split (in-process)',
  () => {
    const pool = new NetnsPool();
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0)) c();
      pool.cleanup();
    });

    const deps = (host: TestNetns): DatapathDeps =>
      inProcessDeps(host, [V4_CIDR, V6_CIDR], cleanups, { echo: true });

    /** eth0 then net1 in one pod, with the route MTU split. */
    async function twoInterfaces() {
      const d = deps(pool.add('host'));
      const pod = pool.add('pod', { loUp: false });
      const req = (ifname: string) => ({
        containerId: 'c1',
        ifname,
        netns: pod.path,
        mtu: 1500,
        routeMtu: 1450,
        nodeCidrs: [V4_CIDR, V6_CIDR],
      });
      const eth0 = await addAttachment(d, req('eth0'));
      const eth0Routes = routesOn(pod.name, 'eth0');
      const net1 = await addAttachment(d, req('net1'));
      // As a runtime does: each interface's own ADD result is its CHECK's prevResult.
      const results = new Map([
        ['eth0', attachmentResult(eth0)],
        ['net1', attachmentResult(net1)],
      ]);
      const check = (ifname: string) =>
        checkAttachment(
          d,
          { containerId: 'c1', ifname, netns: pod.path },
          expectedFromResult(results.get(ifname)!, ifname),
        );
      return { d, pod, eth0, eth0Routes, net1, check };
    }

    it('net1 keeps none of the split routes; DEL of net1 leaves eth0 all of them', async () => {
      const { d, pod, eth0, eth0Routes, net1, check } = await twoInterfaces();
      expect(eth0.routes.map((r) => r.dst)).toEqual(['0.0.0.0/0', V4_CIDR, '::/0', V6_CIDR]);
      expect(eth0Routes.map((r) => r.dst)).toEqual(expect.arrayContaining(['default', V4_CIDR, V6_CIDR]));
      expect(net1.routes).toEqual([]);
      expect(routesOn(pod.name, 'eth0')).toEqual(eth0Routes);
      await check('eth0');
      await check('net1');

      await delAttachment(d, { containerId: 'c1', ifname: 'net1' });
      await d.deleter.drain();
      expect(routesOn(pod.name, 'eth0')).toEqual(eth0Routes);
      await check('eth0');
      await delAttachment(d, { containerId: 'c1', ifname: 'eth0' });
      await d.deleter.drain();
      expect(podRoutes(pod.name)).toEqual([]);
    });

    it("CHECK finds a default route gone from the whole pod where the interface's result lists it", async () => {
      const { pod, check } = await twoInterfaces();
      ip(pod.name, '-4', 'route', 'del', 'default');
      await expect(check('eth0')).rejects.toThrow('default route 0.0.0.0/0 via 169.254.1.1 is missing');
      // net1's ADD neither set nor reported a default route: not net1's to miss.
      await check('net1');
      // A default route of net1's in a table of its own (as sbr or a VRF makes for its sources) is
      // not the pod's default: eth0's is still missing.
      ip(
        pod.name,
        '-4',
        'route',
        'add',
        'default',
        'via',
        '169.254.1.1',
        'dev',
        'net1',
        'onlink',
        'table',
        '200',
      );
      await expect(check('eth0')).rejects.toThrow('default route 0.0.0.0/0 via 169.254.1.1 is missing');
    });
  },
);

/**
 * Another plugin's eth0 whose default routes carry a metric (Multus: the cluster network is not
 * trellis), then trellis as net1. The kernel's EEXIST covers only a route of the same destination and
 * metric, so a metric-0 IPv4 (and metric-1024 IPv6) default of net1's would go in beside eth0's and win.
 */
describe.skipIf(netnsSkipReason !== undefined)(
  "a pod whose eth0 is another plugin's, its default routes with a metric (in-process)",
  () => {
    const pool = new NetnsPool();
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0)) c();
      pool.cleanup();
    });

    /** Where the pod sends traffic to an address off every network it has. */
    const routeGet = (ns: string, to: string) => ipJson<IpRoute[]>(ns, 'route', 'get', to)[0];

    /** A pod and trellis's node, the pod's eth0 another plugin's: 192.168.5.2/24 and fd99:5::2/64, no routes of its own. */
    function podWithOtherEth0() {
      const d = inProcessDeps(pool.add('host'), [V4_CIDR, V6_CIDR], cleanups, { echo: true });
      const pod = pool.add('pod', { loUp: false });
      // The other plugin's side of eth0: a namespace of the test's, never the root one.
      const other = pool.add('other');
      ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0', 'netns', other.name);
      for (const [ns, dev, v4, v6] of [
        [pod.name, 'eth0', '192.168.5.2/24', 'fd99:5::2/64'],
        [other.name, 'peer0', '192.168.5.1/24', 'fd99:5::1/64'],
      ] as const) {
        ip(ns, 'link', 'set', dev, 'up');
        ip(ns, '-4', 'address', 'add', v4, 'dev', dev);
        ip(ns, '-6', 'address', 'add', v6, 'dev', dev, 'nodad');
      }
      return { d, pod };
    }

    it('net1 adds no default route beside eth0s, reports none, and its DEL leaves eth0s', async () => {
      const { d, pod } = podWithOtherEth0();
      ip(pod.name, '-4', 'route', 'add', 'default', 'via', '192.168.5.1', 'dev', 'eth0', 'metric', '100');
      ip(pod.name, '-6', 'route', 'add', 'default', 'via', 'fd99:5::1', 'dev', 'eth0', 'metric', '2048');
      const eth0Defaults = [defaultRoutes(pod.name, 4), defaultRoutes(pod.name, 6)];
      expect(eth0Defaults[0]).toMatchObject([{ gateway: '192.168.5.1', dev: 'eth0', metric: 100 }]);
      expect(eth0Defaults[1]).toMatchObject([{ gateway: 'fd99:5::1', dev: 'eth0', metric: 2048 }]);
      const eth0Routes = routesOn(pod.name, 'eth0');

      const req = { containerId: 'c1', ifname: 'net1', netns: pod.path, mtu: 1500 };
      const net1 = await addAttachment(d, req);
      // The pod's default routes are still eth0's, alone, and traffic leaves by eth0.
      expect([defaultRoutes(pod.name, 4), defaultRoutes(pod.name, 6)]).toEqual(eth0Defaults);
      expect(routeGet(pod.name, '8.8.8.8')).toMatchObject({ gateway: '192.168.5.1', dev: 'eth0' });
      expect(routeGet(pod.name, '2001:db8::1')).toMatchObject({ gateway: 'fd99:5::1', dev: 'eth0' });
      expect(routesOn(pod.name, 'net1').filter((r) => r.dst === 'default')).toEqual([]);
      // net1 is up with its addresses; only its own routes are reported: no default route.
      expect(net1.addresses.map((a) => a.family).sort()).toEqual([4, 6]);
      expect(net1.routes).toEqual([]);
      const result = attachmentResult(net1);
      expect(result.routes).toEqual([]);
      // CHECK follows the result: no default route of net1's is looked for.
      const key = { containerId: 'c1', ifname: 'net1', netns: pod.path };
      await checkAttachment(d, key, expectedFromResult(result, 'net1'));
      // A repeated ADD finds net1 in place and answers the same.
      const again = await addAttachment(d, req);
      expect(again.pod.index).toBe(net1.pod.index);
      expect(again.routes).toEqual([]);

      await delAttachment(d, { containerId: 'c1', ifname: 'net1' });
      await d.deleter.drain();
      expect(ipJson<{ ifname: string }[]>(pod.name, 'link', 'show').map((l) => l.ifname)).toEqual([
        'lo',
        'eth0',
      ]);
      expect([defaultRoutes(pod.name, 4), defaultRoutes(pod.name, 6)]).toEqual(eth0Defaults);
      expect(routesOn(pod.name, 'eth0')).toEqual(eth0Routes);
      expect(nsPing(pod.name, '192.168.5.1')).toBe(true);
    });

    it("a multipath default of eth0's holds IPv4's; net1 makes and reports the IPv6 default nobody holds", async () => {
      const { d, pod } = podWithOtherEth0();
      ip(
        pod.name,
        '-4',
        'route',
        'add',
        'default',
        'metric',
        '100',
        'nexthop',
        'via',
        '192.168.5.1',
        'dev',
        'eth0',
        'nexthop',
        'via',
        '192.168.5.3',
        'dev',
        'eth0',
      );
      const v4Defaults = defaultRoutes(pod.name, 4);
      expect(v4Defaults).toMatchObject([{ metric: 100, nexthops: [{ dev: 'eth0' }, { dev: 'eth0' }] }]);

      const req = { containerId: 'c1', ifname: 'net1', netns: pod.path, mtu: 1500 };
      const net1 = await addAttachment(d, req);
      expect(defaultRoutes(pod.name, 4)).toEqual(v4Defaults);
      expect(defaultRoutes(pod.name, 6)).toMatchObject([{ gateway: 'fe80::1', dev: 'net1' }]);
      expect(net1.routes).toEqual([{ family: 6, dst: '::/0', gateway: 'fe80::1' }]);
      const key = { containerId: 'c1', ifname: 'net1', netns: pod.path };
      await checkAttachment(d, key, expectedFromResult(attachmentResult(net1), 'net1'));
      // A repeated ADD finds net1 in place (the multipath default counts as the pod's) and answers the same.
      const again = await addAttachment(d, req);
      expect(again.pod.index).toBe(net1.pod.index);
      expect(again.routes).toEqual(net1.routes);

      await delAttachment(d, { containerId: 'c1', ifname: 'net1' });
      await d.deleter.drain();
      expect(defaultRoutes(pod.name, 4)).toEqual(v4Defaults);
      expect(defaultRoutes(pod.name, 6)).toEqual([]);
    });
  },
);
