import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterNode, ClusterView } from '../../../pkg/agent/cluster.ts';
import { computeRouteState } from '../../../pkg/agent/operator-view.ts';
import type { Family, NeighbourEntry, NetlinkHandle, RouteInfo } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { routesView } from '../../../pkg/ops/views.ts';
import { type ReconcileReport, RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode, RoutingMode } from '../../../pkg/routes/types.ts';
import {
  netlinkVxlanTool,
  VTEP_MAC_ANNOTATIONS,
  type VxlanLinkTool,
  VxlanOverlay,
  vtepMac,
} from '../../../pkg/vxlan/index.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';
import {
  ip,
  ipJson,
  NetnsPool,
  netnsSkipReason,
  nsExec,
  nsPing,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';
import { wireHandmadePod } from './hand-wired-pod.ts';

/**
 * Two "nodes" on DIFFERENT subnets joined by a router namespace, a pod behind each node (a namespace on a
 * veth, wired the way the datapath wires pods: host route `podIP dev vpod scope link proto 126`, the pod's
 * default route via the link-local gateway the host veth holds). Each node runs the real RouteReconciler
 * with the real VxlanOverlay over netlink. Dual-stack underlay: IPv4 pods tunnel over IPv4,
 * IPv6 pods over IPv6.
 *
 *   pod-a (10.244.1.5, fd00:244:1::5) -- node-a eth0 192.168.10.2 fd00:10::2 --+
 *                                                                             router (forwards, no pod routes)
 *   pod-b (10.244.2.5, fd00:244:2::5) -- node-b eth0 192.168.20.2 fd00:20::2 --+
 *
 * The router knows nothing about pod CIDRs, so a pod-to-pod ping succeeding proves the tunnel carried it.
 */

interface KernelRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  flags?: string[];
}
interface KernelNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}
interface KernelFdb {
  mac: string;
  dst?: string;
  ifname?: string;
}
interface KernelLink {
  ifindex: number;
  ifname: string;
  address: string;
  mtu: number;
  linkinfo?: {
    info_kind: string;
    info_data: { id: number; port: number; local?: string; local6?: string; learning: boolean };
  };
  stats64?: { tx: { packets: number }; rx: { packets: number } };
}

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

describe.skipIf(netnsSkipReason !== undefined)(
  'VXLAN overlay on a real kernel (two subnets, a router)',
  () => {
    const pool = new NetnsPool();
    const handles: NetlinkHandle[] = [];
    let router: TestNetns;
    let nodeA: TestNetns;
    let nodeB: TestNetns;
    let podA: TestNetns;
    let podB: TestNetns;

    const selfA: PeerNode = {
      name: 'node-a',
      podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'],
      internalIPs: ['192.168.10.2', 'fd00:10::2'],
    };
    const selfB: PeerNode = {
      name: 'node-b',
      podCIDRs: ['10.244.2.0/24', 'fd00:244:2::/64'],
      internalIPs: ['192.168.20.2', 'fd00:20::2'],
    };
    /** A peer on node-a's own subnet: auto mode must route it directly, not through the tunnel. */
    const sameSubnet: PeerNode = {
      name: 'node-c',
      podCIDRs: ['10.244.3.0/24'],
      internalIPs: ['192.168.10.3'],
      vtepMacs: { 4: vtepMac('node-c', 4) },
    };

    /** The agent's node cache holding these nodes, their VTEP MACs as the annotations carry them. */
    const clusterOf = (nodes: readonly PeerNode[]): ClusterView => {
      const asNode = (n: PeerNode): ClusterNode => ({
        name: n.name,
        podCIDRs: n.podCIDRs,
        internalIPs: n.internalIPs,
        annotations: Object.fromEntries(
          Object.entries(n.vtepMacs ?? {}).map(([f, mac]) => [
            VTEP_MAC_ANNOTATIONS[Number(f) as Family],
            mac,
          ]),
        ),
      });
      const all = nodes.map(asNode);
      return { list: () => all, get: (name) => all.find((n) => n.name === name), hasSynced: () => true };
    };

    const published = (n: PeerNode): PeerNode => ({
      ...n,
      vtepMacs: { 4: vtepMac(n.name, 4), 6: vtepMac(n.name, 6) },
    });

    function open(ns: TestNetns): NetlinkHandle {
      const h = port!.openNetlinkIn(ns.path);
      handles.push(h);
      return h;
    }

    /** Writes the real kernel is told to refuse: a fault injected in front of the real handle. */
    interface Faults {
      replaceRoute?: (r: RouteInfo) => boolean;
      replaceNeighbour?: (n: NeighbourEntry) => boolean;
      createVxlan?: (spec: { name: string }) => boolean;
    }

    function withFaults(real: NetlinkHandle, faults: Faults): NetlinkHandle {
      return new Proxy(real, {
        get(target, prop) {
          const refuse =
            prop === 'replaceRoute' || prop === 'replaceNeighbour' || prop === 'createVxlan'
              ? (faults[prop] as ((x: never) => boolean) | undefined)
              : undefined;
          const value = Reflect.get(target, prop, target);
          if (typeof value !== 'function') return value;
          const bound = value.bind(target) as (x: never) => Promise<void>;
          if (refuse === undefined) return bound;
          return async (x: never) => {
            if (refuse(x)) throw new Error(`${String(prop)}: Network is down (a fault the test injects)`);
            return bound(x);
          };
        },
      });
    }

    function reconciler(
      ns: TestNetns,
      name: string,
      opts: {
        mode?: RoutingMode;
        vni?: number;
        port?: number;
        tool?: VxlanLinkTool;
        faults?: Faults;
        now?: () => number;
      } = {},
    ) {
      const handle = opts.faults === undefined ? open(ns) : withFaults(open(ns), opts.faults);
      const overlay = new VxlanOverlay({
        handle,
        tool: opts.tool ?? netlinkVxlanTool(handle),
        nodeName: name,
        vni: opts.vni ?? 4096,
        port: opts.port ?? 8472,
        mtu: 0,
      });
      return {
        overlay,
        routes: new RouteReconciler({
          handle,
          mode: opts.mode ?? 'auto',
          overlay,
          ...(opts.now === undefined ? {} : { now: opts.now }),
        }),
      };
    }

    /** The real tool, with `beforeCheck` run ahead of each device check (it may throw or change the kernel). */
    function toolWithCheckHook(ns: TestNetns, beforeCheck: (name: string) => void): VxlanLinkTool {
      const real = netlinkVxlanTool(open(ns));
      return {
        vxlanParams: async (name) => {
          beforeCheck(name);
          return real.vxlanParams(name);
        },
        setMac: (index, mac) => real.setMac(index, mac),
      };
    }

    async function pass(
      r: { routes: RouteReconciler },
      self: PeerNode,
      peers: PeerNode[],
      synced = true,
    ): Promise<ReconcileReport> {
      const report = await r.routes.reconcile({ synced, self, peers: [self, ...peers] });
      expect(report.errors).toEqual([]);
      expect(report.overlay?.errors.map((e) => `${e.op} ${e.what}: ${e.error.message}`)).toEqual([]);
      return report;
    }

    const link = (ns: TestNetns, dev: string): KernelLink =>
      ipJson<KernelLink[]>(ns.name, '-d', '-s', 'link', 'show', 'dev', dev)[0]!;
    const routesOn = (ns: TestNetns, family: Family): string[] =>
      ipJson<KernelRoute[]>(ns.name, `-${family}`, 'route', 'show', 'table', 'main')
        .filter((r) => r.protocol === '126' && r.gateway !== undefined)
        .map((r) => `${r.dst} via ${r.gateway} dev ${r.dev}${r.flags?.includes('onlink') ? ' onlink' : ''}`)
        .sort();
    const neighsOn = (ns: TestNetns, dev: string): string[] =>
      ipJson<KernelNeigh[]>(ns.name, 'neigh', 'show', 'dev', dev)
        .filter((n) => !n.dst.startsWith('fe80'))
        .map((n) => `${n.dst} ${n.lladdr ?? '-'} ${(n.state ?? []).join(',')}`)
        .sort();
    const fdbOn = (ns: TestNetns, dev: string): string[] =>
      (
        JSON.parse(
          execFileSync('bridge', ['-n', ns.name, '-j', 'fdb', 'show', 'dev', dev], { encoding: 'utf8' }) ||
            '[]',
        ) as KernelFdb[]
      )
        .filter((f) => f.dst !== undefined)
        .map((f) => `${f.mac} dst ${f.dst}`)
        .sort();

    beforeAll(() => {
      router = pool.add('vx-r');
      nodeA = pool.add('vx-a');
      nodeB = pool.add('vx-b');
      podA = pool.add('vx-pa');
      podB = pool.add('vx-pb');
      for (const ns of [router, nodeA, nodeB]) {
        nsSysctl(ns.name, 'net.ipv4.ip_forward', '1');
        nsSysctl(ns.name, 'net.ipv6.conf.all.forwarding', '1');
      }
      for (const [node, leg, v4, v6, rv4, rv6] of [
        [nodeA, 'leg-a', '192.168.10.2/24', 'fd00:10::2/64', '192.168.10.1/24', 'fd00:10::1/64'],
        [nodeB, 'leg-b', '192.168.20.2/24', 'fd00:20::2/64', '192.168.20.1/24', 'fd00:20::1/64'],
      ] as const) {
        ip(router.name, 'link', 'add', leg, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.name);
        nsSysctl(router.name, `net.ipv6.conf.${leg}.accept_dad`, '0');
        nsSysctl(node.name, 'net.ipv6.conf.eth0.accept_dad', '0');
        ip(router.name, 'link', 'set', leg, 'up');
        ip(node.name, 'link', 'set', 'eth0', 'up');
        ip(router.name, 'addr', 'add', rv4, 'dev', leg);
        ip(router.name, 'addr', 'add', rv6, 'dev', leg, 'nodad');
        ip(node.name, 'addr', 'add', v4, 'dev', 'eth0');
        ip(node.name, 'addr', 'add', v6, 'dev', 'eth0', 'nodad');
        ip(node.name, 'route', 'add', 'default', 'via', rv4.split('/')[0]!);
        ip(node.name, '-6', 'route', 'add', 'default', 'via', rv6.split('/')[0]!);
      }
      wireHandmadePod(nodeA, podA, '10.244.1.5', 'fd00:244:1::5');
      wireHandmadePod(nodeB, podB, '10.244.2.5', 'fd00:244:2::5');
    });

    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    it('the underlay works and the pods cannot reach each other before the overlay exists', () => {
      expect(nsPing(nodeA.name, '192.168.20.2')).toBe(true);
      expect(nsPing(nodeA.name, 'fd00:20::2')).toBe(true);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(false);
    });

    it('host-gw cannot reach a node on another subnet and creates no device', async () => {
      const r = reconciler(nodeA, 'node-a', { mode: 'host-gw' });
      const report = await pass(r, selfA, [published(selfB)]);
      expect(report.decisions.map((d) => `${d.node} v${d.family} ${d.path}`)).toEqual([
        'node-b v4 unreachable',
        'node-b v6 unreachable',
      ]);
      expect(report.problems.map((p) => p.problem)).toEqual([
        expect.stringMatching(/^unreachable with host-gw: InternalIP 192\.168\.20\.2 is not on a subnet/),
        expect.stringMatching(/^unreachable with host-gw: InternalIP fd00:20::2 is not on a subnet/),
      ]);
      expect(ipJson<KernelLink[]>(nodeA.name, 'link', 'show', 'type', 'vxlan')).toEqual([]);
    });

    it('auto: pods on different subnets talk through VXLAN (IPv4 and IPv6), a same-subnet peer goes direct', async () => {
      const a = reconciler(nodeA, 'node-a');
      const b = reconciler(nodeB, 'node-b');
      // First pass: devices come up; the peers have not published their MACs yet, so they are unreachable.
      const first = await pass(a, selfA, [selfB]);
      expect(first.decisions.map((d) => d.path)).toEqual(['unreachable', 'unreachable']);
      expect(first.problems[0]!.problem).toMatch(/VXLAN: the node has not published an IPv4 VTEP MAC/);
      await pass(b, selfB, [selfA]);
      expect(a.overlay.vtepMacs()).toEqual({ 4: vtepMac('node-a', 4), 6: vtepMac('node-a', 6) });

      const ra = await pass(a, selfA, [published(selfB), sameSubnet]);
      await pass(b, selfB, [published(selfA)]);
      expect(ra.decisions.map((d) => `${d.node} v${d.family} ${d.path}`)).toEqual([
        'node-b v4 vxlan',
        'node-b v6 vxlan',
        'node-c v4 direct',
      ]);

      // The devices: kernel-reported parameters, deterministic MAC, VTEP address, MTU = 1500 - overhead.
      const v4 = link(nodeA, 'trellis.v4');
      const v6 = link(nodeA, 'trellis.v6');
      expect(v4.linkinfo).toMatchObject({
        info_kind: 'vxlan',
        info_data: { id: 4096, port: 8472, local: '192.168.10.2', learning: false },
      });
      expect(v6.linkinfo).toMatchObject({
        info_kind: 'vxlan',
        info_data: { id: 4096, port: 8472, local6: 'fd00:10::2', learning: false },
      });
      expect([v4.address, v6.address]).toEqual([vtepMac('node-a', 4), vtepMac('node-a', 6)]);
      expect([v4.mtu, v6.mtu]).toEqual([1450, 1430]);
      expect(ip(nodeA.name, '-4', 'addr', 'show', 'dev', 'trellis.v4')).toContain('inet 10.244.1.0/32');
      expect(ip(nodeA.name, '-6', 'addr', 'show', 'dev', 'trellis.v6')).toContain('inet6 fd00:244:1::/128');

      // Neighbour, FDB, onlink route: what the kernel shows.
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual([`10.244.2.0 ${vtepMac('node-b', 4)} PERMANENT`]);
      expect(neighsOn(nodeA, 'trellis.v6')).toEqual([`fd00:244:2:: ${vtepMac('node-b', 6)} PERMANENT`]);
      expect(fdbOn(nodeA, 'trellis.v4')).toEqual([`${vtepMac('node-b', 4)} dst 192.168.20.2`]);
      expect(fdbOn(nodeA, 'trellis.v6')).toEqual([`${vtepMac('node-b', 6)} dst fd00:20::2`]);
      expect(routesOn(nodeA, 4)).toEqual([
        '10.244.2.0/24 via 10.244.2.0 dev trellis.v4 onlink',
        '10.244.3.0/24 via 192.168.10.3 dev eth0',
      ]);
      expect(routesOn(nodeA, 6)).toEqual(['fd00:244:2::/64 via fd00:244:2:: dev trellis.v6 onlink']);

      // Traffic: pod to pod across the router, both families, counted on the VXLAN devices of both nodes.
      const tx4 = link(nodeA, 'trellis.v4').stats64!.tx.packets;
      const rx6 = link(nodeB, 'trellis.v6').stats64!.rx.packets;
      expect(nsPing(podA.name, '10.244.2.5', 3)).toBe(true);
      expect(nsPing(podA.name, 'fd00:244:2::5', 3)).toBe(true);
      expect(nsPing(podB.name, '10.244.1.5')).toBe(true);
      // The node itself reaches remote pods from its VTEP address, so the answer comes back through the tunnel.
      expect(ip(nodeA.name, 'route', 'get', '10.244.2.5')).toMatch(/dev trellis\.v4 src 10\.244\.1\.0/);
      expect(nsPing(nodeA.name, '10.244.2.5')).toBe(true);
      expect(nsPing(nodeA.name, 'fd00:244:2::5')).toBe(true);
      expect(link(nodeA, 'trellis.v4').stats64!.tx.packets).toBeGreaterThanOrEqual(tx4 + 3);
      expect(link(nodeB, 'trellis.v6').stats64!.rx.packets).toBeGreaterThanOrEqual(rx6 + 3);
      // Full-size packets fit: pod MTU 1430 (the IPv6 overhead) minus IPv4 and ICMP headers, DF set.
      expect(
        nsPingSize(podA.name, '10.244.2.5', 1430 - 28),
        'a 1430-byte IPv4 packet crosses the tunnel unfragmented',
      ).toBe(true);
    });

    it('a restarted agent (fresh reconciler and overlay) changes nothing', async () => {
      const before = { ifindex: link(nodeA, 'trellis.v4').ifindex, routes: routesOn(nodeA, 4) };
      const a = reconciler(nodeA, 'node-a');
      const report = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(report).toMatchObject({ added: 0, replaced: 0, removed: 0 });
      expect(report.overlay).toMatchObject({ added: 0, removed: 0 });
      expect(report.overlay!.devices.map((d) => d.action)).toEqual(['unchanged', 'unchanged']);
      expect(link(nodeA, 'trellis.v4').ifindex).toBe(before.ifindex);
      expect(routesOn(nodeA, 4)).toEqual(before.routes);
    });

    it('a pass that makes the devices plans with their VTEP addresses: the next pass over the same inputs is quiet', async () => {
      ip(nodeA.name, 'link', 'del', 'trellis.v4');
      ip(nodeA.name, 'link', 'del', 'trellis.v6');
      const a = reconciler(nodeA, 'node-a');
      const made = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(made.overlay?.devices.map((d) => `${d.name} ${d.action}`)).toEqual([
        'trellis.v4 created',
        'trellis.v6 created',
      ]);
      expect((await pass(a, selfA, [published(selfB), sameSubnet])).quiet).toBe(true);
    });

    it('neighbour and FDB entries deleted by hand are written back by the next pass, which says so and is not quiet', async () => {
      const a = reconciler(nodeA, 'node-a');
      await pass(a, selfA, [published(selfB), sameSubnet]);
      expect((await pass(a, selfA, [published(selfB), sameSubnet])).quiet).toBe(true);
      const neighs = neighsOn(nodeA, 'trellis.v4');
      const fdb = fdbOn(nodeA, 'trellis.v4');
      expect(neighs).toHaveLength(1);
      expect(fdb).toHaveLength(1);
      ip(nodeA.name, 'neigh', 'del', neighs[0]!.split(' ')[0]!, 'dev', 'trellis.v4');
      const [mac, , dst] = fdb[0]!.split(' ');
      execFileSync('bridge', [
        '-n',
        nodeA.name,
        'fdb',
        'del',
        mac!,
        'dev',
        'trellis.v4',
        'dst',
        dst!,
        'self',
      ]);
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual([]);

      const repaired = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(repaired.quiet).toBeUndefined();
      expect(repaired.overlay).toMatchObject({ added: 2, removed: 0 });
      expect(repaired).toMatchObject({ added: 0, replaced: 0, removed: 0 });
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual(neighs);
      expect(fdbOn(nodeA, 'trellis.v4')).toEqual(fdb);
      expect((await pass(a, selfA, [published(selfB), sameSubnet])).quiet).toBe(true);
    });

    it('a device check that fails (a spawn, say) keeps the devices and their tunnel routes; the pass reports it', async () => {
      let failing = false;
      const tool = toolWithCheckHook(nodeA, () => {
        if (failing) throw new Error('spawn ip EAGAIN');
      });
      const a = reconciler(nodeA, 'node-a', { tool });
      await pass(a, selfA, [published(selfB), sameSubnet]);
      const before = {
        ifindex: link(nodeA, 'trellis.v4').ifindex,
        v4: routesOn(nodeA, 4),
        v6: routesOn(nodeA, 6),
      };

      failing = true;
      const report = await a.routes.reconcile({
        synced: true,
        self: selfA,
        peers: [selfA, published(selfB), sameSubnet],
      });
      expect(report.overlay?.errors.map((e) => `${e.op} ${e.what}`)).toEqual([
        'ensure device trellis.v4',
        'ensure device trellis.v6',
      ]);
      // What the agent publishes as its VTEPs and routes through: both devices, as they were.
      expect(report.overlay!.devices.map((d) => [d.name, d.action])).toEqual([
        ['trellis.v4', 'kept (its check failed)'],
        ['trellis.v6', 'kept (its check failed)'],
      ]);
      expect(report).toMatchObject({ removed: 0, errors: [] });
      expect(routesOn(nodeA, 4)).toEqual(before.v4);
      expect(routesOn(nodeA, 6)).toEqual(before.v6);
      expect(link(nodeA, 'trellis.v4').ifindex).toBe(before.ifindex);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);

      failing = false;
      const healed = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(healed).toMatchObject({ added: 0, replaced: 0, removed: 0 });
    });

    it('a restarted agent whose first device check fails keeps the devices the last agent made, and their routes', async () => {
      await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
      const before = { v4: routesOn(nodeA, 4), v6: routesOn(nodeA, 6), link: link(nodeA, 'trellis.v4') };
      // A new process: an overlay and reconciler with nothing of their own yet.
      const restarted = reconciler(nodeA, 'node-a', {
        tool: toolWithCheckHook(nodeA, () => {
          throw new Error('netlink: ENOBUFS');
        }),
      });
      const report = await restarted.routes.reconcile({
        synced: true,
        self: selfA,
        peers: [selfA, published(selfB), sameSubnet],
      });
      // Published as this node's VTEPs (vtepMacs) and routed through: both devices, as the kernel has them.
      expect(report.overlay!.devices.map((d) => [d.name, d.action, d.ifindex, d.mac])).toEqual([
        ['trellis.v4', 'kept (its check failed)', before.link.ifindex, before.link.address],
        [
          'trellis.v6',
          'kept (its check failed)',
          link(nodeA, 'trellis.v6').ifindex,
          link(nodeA, 'trellis.v6').address,
        ],
      ]);
      expect(restarted.overlay.vtepMacs()).toEqual({
        4: before.link.address,
        6: link(nodeA, 'trellis.v6').address,
      });
      expect(report).toMatchObject({ removed: 0, errors: [] });
      expect(routesOn(nodeA, 4)).toEqual(before.v4);
      expect(routesOn(nodeA, 6)).toEqual(before.v6);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it("a refused move off the tunnel keeps the peer's neighbour and FDB entries; a refused neighbour keeps its route off the tunnel", async () => {
      let refuseRoute = false;
      let refuseNeighbour = false;
      const a = reconciler(nodeA, 'node-a', {
        faults: {
          replaceRoute: (r) => refuseRoute && r.dst === '10.244.2.0/24',
          replaceNeighbour: (n) => refuseNeighbour && n.family === 4,
        },
      });
      await pass(a, selfA, [published(selfB), sameSubnet]);
      const tunnelled = {
        routes: routesOn(nodeA, 4),
        neighs: neighsOn(nodeA, 'trellis.v4'),
        fdb: fdbOn(nodeA, 'trellis.v4'),
      };
      expect(tunnelled.routes).toContain('10.244.2.0/24 via 10.244.2.0 dev trellis.v4 onlink');
      expect(tunnelled.neighs).toHaveLength(1);
      // node-b's InternalIPs now on node-a's subnet: auto routes it directly, and the kernel refuses that.
      const moved: PeerNode = { ...published(selfB), internalIPs: ['192.168.10.9', 'fd00:10::9'] };
      const peers = (b: PeerNode) => [selfA, b, sameSubnet];
      refuseRoute = true;
      const refused = await a.routes.reconcile({ synced: true, self: selfA, peers: peers(moved) });
      expect(refused.errors.map((e) => `${e.op} ${e.route.dst}`)).toEqual(['replace 10.244.2.0/24']);
      expect(routesOn(nodeA, 4)).toEqual(tunnelled.routes);
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual(tunnelled.neighs);
      expect(fdbOn(nodeA, 'trellis.v4')).toEqual(tunnelled.fdb);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);

      refuseRoute = false;
      await pass(a, selfA, [moved, sameSubnet]);
      const direct = routesOn(nodeA, 4);
      expect(direct).toContain('10.244.2.0/24 via 192.168.10.9 dev eth0');
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual([]);
      // Back to its own subnet (the tunnel), but its neighbour entry cannot be written: the route stays.
      refuseNeighbour = true;
      const unwritten = await a.routes.reconcile({
        synced: true,
        self: selfA,
        peers: peers(published(selfB)),
      });
      expect(unwritten.overlay?.errors.map((e) => e.op)).toEqual(['replace neighbour']);
      expect(routesOn(nodeA, 4)).toEqual(direct);

      refuseNeighbour = false;
      await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(routesOn(nodeA, 4)).toEqual(tunnelled.routes);
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual(tunnelled.neighs);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it("a neighbour entry the kernel keeps refusing holds back its peer alone: other peers' steps go on, no pass is quiet until it is written", async () => {
      let refuse = true;
      const a = reconciler(nodeA, 'node-a', {
        faults: { replaceNeighbour: (n) => refuse && n.family === 4 && n.address === '10.244.2.0' },
      });
      // Without node-b first: its route and entries gone, whatever the tests before left.
      refuse = false;
      await pass(a, selfA, [sameSubnet]);
      refuse = true;
      const peers = [selfA, published(selfB), sameSubnet];
      const first = await a.routes.reconcile({ synced: true, self: selfA, peers });
      expect(first.overlay?.errors.map((e) => `${e.scope} ${e.op} ${e.what}`)).toEqual([
        `entry replace neighbour 10.244.2.0 lladdr ${vtepMac('node-b', 4)}`,
      ]);
      expect(routesOn(nodeA, 4)).toEqual(['10.244.3.0/24 via 192.168.10.3 dev eth0']);
      expect(first.heldBack?.map((h) => `${h.route.dst}: ${h.reason}`)).toEqual([
        "10.244.2.0/24: its VXLAN neighbour or FDB entry could not be written (the pass's overlay errors say why)",
      ]);
      // Another tunnelled peer joins: a per-node step, not a full pass (before, every Node event of the
      // cluster went to a full pass at the backoff's pace while the entry was refused).
      const nodeD: PeerNode = published({
        name: 'node-d',
        podCIDRs: ['10.244.4.0/24'],
        internalIPs: ['192.168.30.2'],
      });
      const step = await a.routes.reconcilePeer('node-d', nodeD);
      expect(step).toMatchObject({ kind: 'applied', node: 'node-d' });
      expect(routesOn(nodeA, 4)).toContain('10.244.4.0/24 via 10.244.4.0 dev trellis.v4 onlink');
      // The refused peer's own change escalates ...
      expect(
        await a.routes.reconcilePeer('node-b', { ...published(selfB), internalIPs: ['192.168.20.9'] }),
      ).toEqual({
        kind: 'full',
        reason:
          "node node-b: the last full pass held back routes through 10.244.2.0 (a VXLAN entry the kernel refused, or this node's InternalIP off that subnet): only a full pass writes them",
      });
      // ... and a pass over unchanged inputs is no quiet one: it tries the entry again.
      const retried = await a.routes.reconcile({ synced: true, self: selfA, peers: [...peers, nodeD] });
      expect(retried.quiet).toBeUndefined();
      expect(retried.overlay?.errors.map((e) => e.op)).toEqual(['replace neighbour']);
      expect(routesOn(nodeA, 4)).not.toContain('10.244.2.0/24 via 10.244.2.0 dev trellis.v4 onlink');
      refuse = false;
      await pass(a, selfA, [published(selfB), sameSubnet, nodeD]);
      expect(routesOn(nodeA, 4)).toContain('10.244.2.0/24 via 10.244.2.0 dev trellis.v4 onlink');
      await pass(reconciler(nodeB, 'node-b'), selfB, [published(selfA)]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
      const quiet = await pass(a, selfA, [published(selfB), sameSubnet, nodeD]);
      expect(quiet.quiet).toBe(true);
      expect(await a.routes.reconcilePeer('node-d', undefined)).toMatchObject({ kind: 'applied' });
      expect(routesOn(nodeA, 4)).not.toContain('10.244.4.0/24 via 10.244.4.0 dev trellis.v4 onlink');
    });

    it('a restarted agent that recreates a device (a new VNI) and fails to create it keeps no device it deleted', async () => {
      await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
      const restarted = reconciler(nodeA, 'node-a', {
        vni: 4097,
        faults: { createVxlan: (spec) => spec.name === 'trellis.v4' },
      });
      const report = await restarted.routes.reconcile({
        synced: true,
        self: selfA,
        peers: [selfA, published(selfB), sameSubnet],
      });
      expect(report.overlay?.errors.map((e) => `${e.op} ${e.what}`)).toEqual(['ensure device trellis.v4']);
      // Gone from the kernel, so neither published nor routed through.
      expect(ipJson<KernelLink[]>(nodeA.name, 'link', 'show', 'type', 'vxlan').map((l) => l.ifname)).toEqual([
        'trellis.v6',
      ]);
      expect(report.overlay!.devices.map((d) => d.name)).toEqual(['trellis.v6']);
      expect(restarted.overlay.vtepMacs()[4]).toBeUndefined();
      expect(routesOn(nodeA, 4).filter((r) => r.includes('trellis.v4'))).toEqual([]);
      // The VNI back as it was: everything returns.
      await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
      await pass(reconciler(nodeB, 'node-b'), selfB, [published(selfA)]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    /** A pass of node-a's reconciler over its usual peers, its errors left to the test. */
    const reconcileA = (r: { routes: RouteReconciler }): Promise<ReconcileReport> =>
      r.routes.reconcile({ synced: true, self: selfA, peers: [selfA, published(selfB), sameSubnet] });
    /** What a pass says while node-a's InternalIP is off eth0 and the device made for it is kept. */
    const KEPT_V4 = {
      node: 'node-a',
      problem:
        "InternalIP 192.168.10.2 is not an address of this node's interfaces: the IPv4 VXLAN device is kept as it was until it is back",
    };
    /** node-a's underlay address and default route back, whatever a test took away. */
    function restoreUnderlayA(): void {
      if (!ip(nodeA.name, 'addr', 'show', 'dev', 'eth0').includes('192.168.10.2/24')) {
        ip(nodeA.name, 'addr', 'add', '192.168.10.2/24', 'dev', 'eth0');
      }
      if (!ip(nodeA.name, 'route', 'show', 'default').includes('via')) {
        ip(nodeA.name, 'route', 'add', 'default', 'via', '192.168.10.1');
      }
    }

    it('the InternalIP off its interface for a moment (a DHCP renewal): the device stays as it was, the problem said', async () => {
      const a = reconciler(nodeA, 'node-a');
      await pass(a, selfA, [published(selfB), sameSubnet]);
      const before = link(nodeA, 'trellis.v4').ifindex;
      ip(nodeA.name, 'addr', 'del', '192.168.10.2/24', 'dev', 'eth0');
      try {
        const off = await reconcileA(a);
        expect(off.problems).toContainEqual(KEPT_V4);
        // Kept: its index, its FDB entry for node-b and its VTEP MAC (what the Node annotation publishes).
        expect(off.overlay!.devices.map((d) => d.name)).toEqual(['trellis.v4', 'trellis.v6']);
        expect(link(nodeA, 'trellis.v4').ifindex).toBe(before);
        expect(fdbOn(nodeA, 'trellis.v4')).toContain(`${vtepMac('node-b', 4)} dst 192.168.20.2`);
      } finally {
        restoreUnderlayA();
      }
      await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(link(nodeA, 'trellis.v4').ifindex).toBe(before);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it('the InternalIP off its interface for a moment: a peer on its subnet stays routed directly (no move to the tunnel and back), its route waits for the address', async () => {
      let clock = 1_000_000;
      const a = reconciler(nodeA, 'node-a', { now: () => clock });
      const on = await pass(a, selfA, [published(selfB), sameSubnet]);
      const direct = '10.244.3.0/24 via 192.168.10.3 dev eth0';
      expect(routesOn(nodeA, 4)).toContain(direct);
      ip(nodeA.name, 'addr', 'del', '192.168.10.2/24', 'dev', 'eth0');
      try {
        const off = await reconcileA(a);
        expect(off.errors).toEqual([]);
        expect(off.problems).toContainEqual({
          node: 'node-a',
          problem:
            "InternalIP 192.168.10.2 is not an address of this node's interfaces: routes are planned as when it was on eth0 (192.168.10.0/24) for up to 30 s, and those through that subnet wait for it",
        });
        // Held back, said per route (the peers' coverage and metrics show node-c as broken meanwhile).
        expect(off.heldBack?.map((h) => `${h.route.dst}: ${h.reason}`)).toEqual([
          "10.244.3.0/24: waits for this node's InternalIP 192.168.10.2 back on eth0 (up to 30 s)",
        ]);
        // Planned as before: node-c direct, and the subnets this node publishes unchanged (every peer
        // would act on a change). Whether the kernel kept the direct route (its nexthop object) or not,
        // nothing took its place through the tunnel.
        expect(off.decisions.find((d) => d.node === 'node-c')).toMatchObject({ path: 'direct' });
        expect(off.directSubnets).toEqual(on.directSubnets);
        expect(routesOn(nodeA, 4).filter((r) => r.startsWith('10.244.3.0/24') && r !== direct)).toEqual([]);
        // The routes view (`trellis-agent routes`) plans as the passes do, the address held; from the
        // links as read it would show node-c moved to the tunnel, a drift the agent holds off on purpose.
        const view = (withHold: boolean) =>
          computeRouteState({
            host: open(nodeA),
            cluster: clusterOf([selfA, published(selfB), sameSubnet]),
            nodeName: 'node-a',
            mode: 'auto',
            overlayDevices: a.overlay.devices(),
            ...(withHold ? { linksToPlan: a.routes.linksToPlan.bind(a.routes) } : {}),
          });
        const viewed = await view(true);
        expect(viewed.decisions.find((d) => d.node === 'node-c')).toMatchObject({ path: 'direct' });
        expect(viewed.desired.map((r) => `${r.dst} via ${r.gateway}`)).toContain(
          '10.244.3.0/24 via 192.168.10.3',
        );
        expect(viewed.problems.map((p) => p.problem)).toContainEqual(
          expect.stringContaining("InternalIP 192.168.10.2 is not an address of this node's interfaces"),
        );
        expect((await view(false)).decisions.find((d) => d.node === 'node-c')).toMatchObject({
          path: 'vxlan',
        });
        // node-c's row: in the kernel as wanted (the kernel kept it), or held back with why, never
        // "missing" (which the agent would put back at its next pass: it will not, meanwhile).
        expect(viewed.held?.map((h) => h.reason)).toEqual([
          "waits for this node's InternalIP 192.168.10.2 back on eth0 (up to 30 s)",
        ]);
        const row = routesView('node-a', viewed).routes.find((r) => r.dst === '10.244.3.0/24')!;
        if (routesOn(nodeA, 4).includes(direct)) expect(row.state).toBe('ok');
        else
          expect(row).toMatchObject({
            state: 'held',
            reason: "waits for this node's InternalIP 192.168.10.2 back on eth0 (up to 30 s)",
          });
        expect(neighsOn(nodeA, 'trellis.v4')).not.toContainEqual(expect.stringContaining('10.244.3.0'));
        // node-c's change is the full pass's while its route waits; node-b's (tunnelled) is a step.
        const heldC = {
          kind: 'full',
          reason:
            "node node-c: the last full pass held back routes through 192.168.10.3 (a VXLAN entry the kernel refused, or this node's InternalIP off that subnet): only a full pass writes them",
        };
        expect(
          await a.routes.reconcilePeer('node-c', { ...sameSubnet, vtepMacs: { 4: '02:00:00:00:00:99' } }),
        ).toEqual(heldC);
        expect(
          await a.routes.reconcilePeer('node-b', { ...published(selfB), podCIDRs: ['10.244.2.0/24'] }),
        ).toMatchObject({ kind: 'applied' });
        // A new InternalIP of node-c is in no step's state, though: steps wait for the full pass too,
        // or one could route a CIDR holding that address.
        expect(
          await a.routes.reconcilePeer('node-c', { ...sameSubnet, internalIPs: ['192.168.10.4'] }),
        ).toEqual(heldC);
        expect(
          await a.routes.reconcilePeer('node-b', { ...published(selfB), podCIDRs: ['10.244.2.0/24'] }),
        ).toEqual({ kind: 'full', reason: 'no clean full pass yet' });
        // Still off at the next pass: still held, no quiet pass.
        clock += 29_000;
        const again = await reconcileA(a);
        expect(again.quiet).toBeUndefined();
        expect(again.decisions.find((d) => d.node === 'node-c')).toMatchObject({ path: 'direct' });
        // Off for longer than the hold: the links are taken as they are (an address gone for good must
        // not keep a plan that no longer holds); node-c goes through the tunnel, as before the hold.
        clock += 1_000;
        const over = await reconcileA(a);
        expect(over.heldBack).toBeUndefined();
        expect(over.decisions.find((d) => d.node === 'node-c')).toMatchObject({ path: 'vxlan' });
      } finally {
        restoreUnderlayA();
      }
      const back = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(back.problems).toEqual([]);
      expect((await reconcileA(a)).quiet).toBe(true);
      expect(routesOn(nodeA, 4)).toContain(direct);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it('an agent started while the InternalIP is off its interface keeps the device the last one made', async () => {
      await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
      const before = link(nodeA, 'trellis.v4').ifindex;
      ip(nodeA.name, 'addr', 'del', '192.168.10.2/24', 'dev', 'eth0');
      try {
        // Another VNI at start: that device is not the one this agent wants, kept or not.
        const otherVni = reconciler(nodeA, 'node-a', { vni: 4097 });
        const gone = await reconcileA(otherVni);
        expect(gone.overlay!.devices.map((d) => d.name)).toEqual(['trellis.v6']);
        expect(ip(nodeA.name, 'link', 'show', 'type', 'vxlan')).not.toContain('trellis.v4');
        // Made again with the agent's VNI, then that agent restarts with the address still off.
        ip(nodeA.name, 'addr', 'add', '192.168.10.2/24', 'dev', 'eth0');
        await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
        const made = link(nodeA, 'trellis.v4').ifindex;
        expect(made).not.toBe(before);
        ip(nodeA.name, 'addr', 'del', '192.168.10.2/24', 'dev', 'eth0');
        const restarted = reconciler(nodeA, 'node-a');
        const off = await reconcileA(restarted);
        expect(off.problems).toContainEqual(KEPT_V4);
        expect(off.overlay!.devices.map((d) => [d.name, d.action])).toEqual([
          ['trellis.v4', 'unchanged'],
          ['trellis.v6', 'unchanged'],
        ]);
        expect(link(nodeA, 'trellis.v4').ifindex).toBe(made);
        expect(fdbOn(nodeA, 'trellis.v4')).toContain(`${vtepMac('node-b', 4)} dst 192.168.20.2`);
      } finally {
        restoreUnderlayA();
      }
      await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB), sameSubnet]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it('a new device is created with its VTEP MAC (not a random one that udev may rewrite), no later change', async () => {
      // A device created without IFLA_ADDRESS gets a random MAC (addr_assign_type 1), which
      // systemd-udevd's MACAddressPolicy=persistent rewrites, racing a MAC set afterwards.
      for (const family of [4, 6] as const) ip(nodeA.name, 'link', 'del', `trellis.v${family}`);
      const macsSet: number[] = [];
      const real = netlinkVxlanTool(open(nodeA));
      const tool: VxlanLinkTool = {
        vxlanParams: (name) => real.vxlanParams(name),
        setMac: (index, mac) => {
          macsSet.push(index);
          return real.setMac(index, mac);
        },
      };
      await pass(reconciler(nodeA, 'node-a', { tool }), selfA, [published(selfB)]);
      expect(macsSet).toEqual([]);
      for (const family of [4, 6] as const) {
        const dev = `trellis.v${family}`;
        expect(nsExec(nodeA.name, 'cat', [`/sys/class/net/${dev}/addr_assign_type`]).trim()).toBe('3'); // NET_ADDR_SET
        expect(ipJson<{ address: string }[]>(nodeA.name, 'link', 'show', dev)[0]!.address).toBe(
          vtepMac('node-a', family),
        );
      }
    });

    it('a device deleted between its lookup and its check is created again in the same pass', async () => {
      let vanish = false;
      const tool = toolWithCheckHook(nodeA, (name) => {
        if (vanish && name === 'trellis.v4') {
          vanish = false;
          ip(nodeA.name, 'link', 'del', name); // by hand, at the worst moment
        }
      });
      const a = reconciler(nodeA, 'node-a', { tool });
      await pass(a, selfA, [published(selfB), sameSubnet]);
      const before = link(nodeA, 'trellis.v4').ifindex;
      vanish = true;
      const report = await pass(a, selfA, [published(selfB), sameSubnet]);
      expect(report.overlay!.devices.find((d) => d.name === 'trellis.v4')?.action).toBe(
        'recreated (vanished)',
      );
      expect(link(nodeA, 'trellis.v4').ifindex).not.toBe(before);
      expect(routesOn(nodeA, 4).some((r) => r.includes('trellis.v4'))).toBe(true);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it('a parameter change (VNI, then port) recreates the devices; traffic flows again once both sides agree', async () => {
      const old = link(nodeA, 'trellis.v4').ifindex;
      const a = reconciler(nodeA, 'node-a', { vni: 4097 });
      const report = await pass(a, selfA, [published(selfB)]);
      expect(report.overlay!.devices.map((d) => d.action)).toEqual([
        'recreated (VNI 4096 -> 4097)',
        'recreated (VNI 4096 -> 4097)',
      ]);
      const now = link(nodeA, 'trellis.v4');
      expect(now.ifindex).not.toBe(old);
      expect(now.linkinfo!.info_data.id).toBe(4097);
      // Neighbour, FDB and route were reprogrammed on the new device in the same pass.
      expect(neighsOn(nodeA, 'trellis.v4')).toEqual([`10.244.2.0 ${vtepMac('node-b', 4)} PERMANENT`]);
      expect(fdbOn(nodeA, 'trellis.v4')).toEqual([`${vtepMac('node-b', 4)} dst 192.168.20.2`]);
      expect(routesOn(nodeA, 4)).toEqual(['10.244.2.0/24 via 10.244.2.0 dev trellis.v4 onlink']);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(false); // node-b still speaks VNI 4096
      await pass(reconciler(nodeB, 'node-b', { vni: 4097 }), selfB, [published(selfA)]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);

      const p = await pass(reconciler(nodeA, 'node-a', { vni: 4097, port: 4789 }), selfA, [published(selfB)]);
      expect(p.overlay!.devices[0]!.action).toBe('recreated (port 8472 -> 4789)');
      expect(link(nodeA, 'trellis.v4').linkinfo!.info_data.port).toBe(4789);
      await pass(reconciler(nodeB, 'node-b', { vni: 4097, port: 4789 }), selfB, [published(selfA)]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
      expect(nsPing(podA.name, 'fd00:244:2::5')).toBe(true);

      // node-a's InternalIP changes: its device is recreated with the new local address, node-b's FDB
      // entry follows the Node (its one remote re-pointed in place), and traffic flows again.
      ip(nodeA.name, 'addr', 'add', '192.168.10.9/24', 'dev', 'eth0');
      const movedA = { ...selfA, internalIPs: ['192.168.10.9', 'fd00:10::2'] };
      const m = await pass(reconciler(nodeA, 'node-a', { vni: 4097, port: 4789 }), movedA, [
        published(selfB),
      ]);
      expect(m.overlay!.devices.map((d) => d.action)).toEqual([
        'recreated (local 192.168.10.2 -> 192.168.10.9)',
        'unchanged',
      ]);
      expect(link(nodeA, 'trellis.v4').linkinfo!.info_data.local).toBe('192.168.10.9');
      await pass(reconciler(nodeB, 'node-b', { vni: 4097, port: 4789 }), selfB, [published(movedA)]);
      expect(fdbOn(nodeB, 'trellis.v4')).toEqual([`${vtepMac('node-a', 4)} dst 192.168.10.9`]);
      expect(nsPing(podB.name, '10.244.1.5')).toBe(true);
      // And back, so the rest of the file sees the original topology.
      await pass(reconciler(nodeA, 'node-a', { vni: 4097, port: 4789 }), selfA, [published(selfB)]);
      await pass(reconciler(nodeB, 'node-b', { vni: 4097, port: 4789 }), selfB, [published(selfA)]);
      ip(nodeA.name, 'addr', 'del', '192.168.10.9/24', 'dev', 'eth0');
      expect(fdbOn(nodeB, 'trellis.v4')).toEqual([`${vtepMac('node-a', 4)} dst 192.168.10.2`]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);
    });

    it('a removed peer loses its neighbour, FDB entry and route (only once synced)', async () => {
      const a = reconciler(nodeA, 'node-a', { vni: 4097, port: 4789 });
      const early = await pass(a, selfA, [], false);
      expect(early.overlay!.removalsDeferred).toBe(4);
      expect(neighsOn(nodeA, 'trellis.v4')).toHaveLength(1);
      expect(routesOn(nodeA, 4)).toHaveLength(1);
      const synced = await pass(a, selfA, [], true);
      expect(synced).toMatchObject({ removed: 2 });
      expect(synced.overlay).toMatchObject({ removed: 4, removalsDeferred: 0 });
      for (const dev of ['trellis.v4', 'trellis.v6']) {
        expect(neighsOn(nodeA, dev)).toEqual([]);
        expect(fdbOn(nodeA, dev)).toEqual([]);
      }
      expect(routesOn(nodeA, 4)).toEqual([]);
      expect(routesOn(nodeA, 6)).toEqual([]);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(false);
    });

    it("vxlan mode tunnels even a same-subnet peer; host-gw removes trellis' devices", async () => {
      const a = reconciler(nodeA, 'node-a', { mode: 'vxlan' });
      const report = await pass(a, selfA, [sameSubnet]);
      expect(report.decisions.map((d) => `${d.node} ${d.path}`)).toEqual(['node-c vxlan']);
      expect(routesOn(nodeA, 4)).toEqual(['10.244.3.0/24 via 10.244.3.0 dev trellis.v4 onlink']);
      expect(fdbOn(nodeA, 'trellis.v4')).toEqual([`${vtepMac('node-c', 4)} dst 192.168.10.3`]);

      const hg = await pass(reconciler(nodeA, 'node-a', { mode: 'host-gw' }), selfA, [sameSubnet]);
      expect(hg.overlay!.devices).toEqual([]);
      expect(ipJson<KernelLink[]>(nodeA.name, 'link', 'show', 'type', 'vxlan')).toEqual([]);
      expect(routesOn(nodeA, 4)).toEqual(['10.244.3.0/24 via 192.168.10.3 dev eth0']);
    });

    it.skipIf(builtSkipReason() !== undefined)(
      '`trellis-agent uninstall` (the real binary, in the node namespace) removes the VXLAN devices',
      async () => {
        await pass(reconciler(nodeA, 'node-a'), selfA, [published(selfB)]);
        const vxlans = () =>
          ipJson<KernelLink[]>(nodeA.name, 'link', 'show', 'type', 'vxlan').map((l) => l.ifname);
        expect(vxlans().sort()).toEqual(['trellis.v4', 'trellis.v6']);
        const objects = () => ipJson<{ id: number }[]>(nodeA.name, 'nexthop', 'show').map((o) => o.id);
        expect(objects().length).toBeGreaterThan(0); // the routes' own nexthop objects
        // And one no route names (as a crash between object and route would leave it).
        ip(
          nodeA.name,
          'nexthop',
          'add',
          'id',
          '2113939999',
          'via',
          '192.168.10.77',
          'dev',
          'eth0',
          'proto',
          '126',
        );
        const dir = mkdtempSync(join(tmpdir(), 'trl-vx-uninstall-'));
        try {
          const argv = [
            'netns',
            'exec',
            nodeA.name,
            AGENT_BINARY,
            'uninstall',
            '--state-dir',
            join(dir, 'state'),
          ];
          argv.push('--socket', join(dir, 'cni.sock'), '--cni-conf-dir', join(dir, 'net.d'));
          argv.push('--cni-bin-dir', join(dir, 'bin'));
          execFileSync('ip', argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
        expect(vxlans()).toEqual([]);
        expect(routesOn(nodeA, 4)).toEqual([]);
        expect(routesOn(nodeA, 6)).toEqual([]);
        expect(objects()).toEqual([]);
        expect(ip(nodeA.name, 'link', 'show', 'dev', 'eth0')).toContain('eth0'); // the underlay stays
      },
    );
  },
);

function nsPingSize(ns: string, addr: string, size: number): boolean {
  try {
    ip(undefined, 'netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', '-M', 'do', '-s', String(size), addr);
    return true;
  } catch {
    return false;
  }
}
