import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import { netlinkVxlanTool, VxlanOverlay, type VxlanSysctls, vtepMac } from '../../../pkg/vxlan/index.ts';
import {
  ip,
  NetnsPool,
  netnsSkipReason,
  nsExec,
  nsPing,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { within } from '../faults/support.ts';
import { wireHandmadePod } from './hand-wired-pod.ts';

/**
 * A hardened dual-stack node: net.ipv6.conf.default.disable_ipv6=1, IPv6 turned on again only on its
 * uplink. A link made afterwards (trellis.v6) starts without IPv6, and its VTEP address, neighbours and
 * onlink routes are refused until the overlay turns it on.
 *
 *   pod-a (fd00:244:1::5) -- node-a eth0 fd00:10::2 ==== fd00:10::3 eth0 node-b -- pod-b (fd00:244:2::5)
 *
 * --mode vxlan: the peers share a subnet, so only the tunnel carries their pods' traffic (no pod routes
 * anywhere else).
 */

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

const disabled = (ns: TestNetns, dev: string): string =>
  nsExec(ns.name, 'cat', [`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`]).trim();

describe.skipIf(netnsSkipReason !== undefined)(
  'the IPv6 VXLAN device on a node with IPv6 off by default',
  () => {
    const pool = new NetnsPool();
    const handles: NetlinkHandle[] = [];
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
      internalIPs: ['192.168.10.3', 'fd00:10::3'],
    };
    const published = (n: PeerNode): PeerNode => ({
      ...n,
      vtepMacs: { 4: vtepMac(n.name, 4), 6: vtepMac(n.name, 6) },
    });

    /** The node namespace's /proc/sys, as the agent's netns port is its own namespace's. */
    const sysctlsOf = (ns: TestNetns): VxlanSysctls => ({
      readSysctl: (key) => nsExec(ns.name, 'cat', [`/proc/sys/${key}`]).trim(),
      writeSysctl: (key, value) => port!.writeSysctlIn(ns.path, key, value),
    });

    function reconciler(ns: TestNetns, name: string, sysctl: VxlanSysctls | undefined) {
      const handle = port!.openNetlinkIn(ns.path);
      handles.push(handle);
      const overlay = new VxlanOverlay({
        handle,
        tool: netlinkVxlanTool(handle),
        nodeName: name,
        vni: 4096,
        port: 8472,
        mtu: 0,
        ...(sysctl === undefined ? {} : { sysctl }),
      });
      return { overlay, routes: new RouteReconciler({ handle, mode: 'vxlan', overlay }) };
    }

    async function pass(r: ReturnType<typeof reconciler>, self: PeerNode, peer: PeerNode) {
      const report = await r.routes.reconcile({ synced: true, self, peers: [self, peer] });
      return {
        report,
        errors: [
          ...report.errors.map((e) => String(e.error?.message ?? e)),
          ...(report.overlay?.errors ?? []).map((e) => `${e.op} ${e.what}: ${e.error.message}`),
        ],
      };
    }

    beforeAll(() => {
      nodeA = pool.add('v6off-a');
      nodeB = pool.add('v6off-b');
      podA = pool.add('v6off-pa');
      podB = pool.add('v6off-pb');
      for (const ns of [nodeA, nodeB]) {
        nsSysctl(ns.name, 'net.ipv4.ip_forward', '1');
        nsSysctl(ns.name, 'net.ipv6.conf.all.forwarding', '1');
        nsSysctl(ns.name, 'net.ipv6.conf.default.disable_ipv6', '1');
      }
      ip(nodeA.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nodeB.name);
      for (const [ns, v4, v6] of [
        [nodeA, '192.168.10.2/24', 'fd00:10::2/64'],
        [nodeB, '192.168.10.3/24', 'fd00:10::3/64'],
      ] as const) {
        // The uplink, IPv6 turned on again by the node's own configuration.
        nsSysctl(ns.name, 'net.ipv6.conf.eth0.disable_ipv6', '0');
        nsSysctl(ns.name, 'net.ipv6.conf.eth0.accept_dad', '0');
        ip(ns.name, 'link', 'set', 'eth0', 'up');
        ip(ns.name, 'addr', 'add', v4, 'dev', 'eth0');
        ip(ns.name, 'addr', 'add', v6, 'dev', 'eth0', 'nodad');
      }
      wireHandmadePod(nodeA, podA, '10.244.1.5', 'fd00:244:1::5', { ipv6On: true });
      wireHandmadePod(nodeB, podB, '10.244.2.5', 'fd00:244:2::5', { ipv6On: true });
    });

    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    it('a new link on these nodes starts without IPv6, the uplink has it, and the pods cannot reach each other', () => {
      ip(nodeA.name, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1');
      try {
        expect(disabled(nodeA, 'probe0')).toBe('1');
      } finally {
        ip(nodeA.name, 'link', 'del', 'probe0');
      }
      expect(nsPing(nodeA.name, 'fd00:10::3')).toBe(true);
      expect(nsPing(podA.name, 'fd00:244:2::5')).toBe(false);
    });

    it('without IPv6 on it, the device is not published or routed through, pass after pass', async () => {
      // No sysctl port: the device stays as the kernel made it, and its VTEP address is refused.
      const a = reconciler(nodeA, 'node-a', undefined);
      try {
        for (let i = 0; i < 3; i++) {
          const { report, errors } = await pass(a, selfA, published(selfB));
          // The IPv4 device is complete and published; the IPv6 one is neither published nor used.
          expect(a.overlay.vtepMacs()).toEqual({ 4: vtepMac('node-a', 4) });
          expect(report.overlay?.devices.map((d) => d.name)).toEqual(['trellis.v4']);
          expect(ip(nodeA.name, '-6', 'route', 'show', 'proto', '126')).not.toContain('trellis.v6');
          expect(errors).toContainEqual(expect.stringMatching(/^ensure device trellis\.v6: /));
        }
      } finally {
        ip(nodeA.name, 'link', 'del', 'trellis.v6');
      }
    });

    it('the overlay turns IPv6 on on trellis.v6: its VTEP address, neighbour and route are in, IPv6 pods talk through it', async () => {
      const a = reconciler(nodeA, 'node-a', sysctlsOf(nodeA));
      const b = reconciler(nodeB, 'node-b', sysctlsOf(nodeB));
      for (const [r, self, peer] of [
        [a, selfA, selfB],
        [b, selfB, selfA],
        [a, selfA, selfB],
        [b, selfB, selfA],
      ] as const) {
        expect((await pass(r, self, published(peer))).errors).toEqual([]);
      }
      for (const [ns, r, name, vtep] of [
        [nodeA, a, 'node-a', 'fd00:244:1::/128'],
        [nodeB, b, 'node-b', 'fd00:244:2::/128'],
      ] as const) {
        expect(disabled(ns, 'trellis.v6')).toBe('0');
        expect(ip(ns.name, '-6', 'addr', 'show', 'dev', 'trellis.v6')).toContain(`inet6 ${vtep}`);
        expect(r.overlay.vtepMacs()).toEqual({ 4: vtepMac(name, 4), 6: vtepMac(name, 6) });
      }
      expect(ip(nodeA.name, '-6', 'neigh', 'show', 'dev', 'trellis.v6')).toContain(
        `fd00:244:2:: lladdr ${vtepMac('node-b', 6)} PERMANENT`,
      );
      expect(ip(nodeA.name, '-6', 'route', 'show', 'proto', '126')).toMatch(
        /^fd00:244:2::\/64 .*via fd00:244:2:: dev trellis\.v6 .*onlink/m,
      );
      expect(nsPing(podA.name, 'fd00:244:2::5', 3)).toBe(true);
      expect(nsPing(podB.name, 'fd00:244:1::5', 3)).toBe(true);
      expect(nsPing(podA.name, '10.244.2.5')).toBe(true);

      // Nothing to write once it is on: a later pass changes nothing.
      const again = await pass(a, selfA, published(selfB));
      expect(again.errors).toEqual([]);
      expect(again.report.overlay?.devices.map((d) => d.action)).toEqual(['unchanged', 'unchanged']);
    });
  },
);

const skip = testbedSkipReason();
const title =
  'cluster: real agents on nodes with IPv6 off by default (default.disable_ipv6=1, the uplink on)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  it('each agent gives trellis.v6 IPv6 and its VTEP address, and IPv6 pods on two nodes talk through the tunnel', async () => {
    const tb = await Testbed.create({ segments: [{ nodes: 2 }], mode: 'vxlan' });
    try {
      // The hardening after the fact: eth0 keeps IPv6 (made before), anything made from now on has none.
      for (const n of tb.nodes()) {
        await tb.stopAgent(n.name);
        ip(n.ns, 'link', 'del', 'trellis.v6');
        nsSysctl(n.ns, 'net.ipv6.conf.default.disable_ipv6', '1');
      }
      for (const n of tb.nodes()) await tb.startAgent(n.name);
      for (const n of tb.nodes()) {
        await within(20_000, `${n.name}: trellis.v6 with its VTEP address`, () => {
          try {
            return ip(n.ns, '-6', 'addr', 'show', 'dev', 'trellis.v6').includes(
              `inet6 ${n.plan.podCIDRs[1]!.split('/')[0]}/128`,
            );
          } catch {
            return false;
          }
        });
        expect(disabled({ name: n.ns, path: '' }, 'trellis.v6')).toBe('0');
      }
      const p1 = await tb.addPod('node-1');
      const p2 = await tb.addPod('node-2');
      expect((await tb.ping(p1.ns, p2.v6, 10)).rttMs).toBeDefined();
      expect((await tb.ping(p2.ns, p1.v6, 3)).rttMs).toBeDefined();
    } finally {
      await tb.teardown();
    }
    expect(tb.leftovers()).toEqual([]);
  }, 120_000);
});
