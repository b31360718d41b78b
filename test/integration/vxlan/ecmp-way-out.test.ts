import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectMtu } from '../../../pkg/agent/mtu-detect.ts';
import { CONFLIST_FILE_NAME } from '../../../pkg/cniconf/render.ts';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { gatherDoctorFacts } from '../../../pkg/ops/doctor-gather.ts';
import { netlinkVxlanTool, VxlanOverlay } from '../../../pkg/vxlan/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, nsSysctl, type TestNetns } from '../../support/netns.ts';

/**
 * A node whose InternalIPs are a /32 and a /128 on lo (announced by BGP) and whose way out is an ECMP
 * default route per family over two uplinks of different MTUs, up1 (9000) and up2 (1400), to a fabric
 * namespace. No interface holds an InternalIP on a subnet, so the pod MTU and the VXLAN devices' MTU
 * come from the way out: the smaller uplink, since flows are spread over both. What the agent-side
 * detection returns is checked, and the devices' MTU as the kernel shows them; the route table is
 * never dumped for it.
 *
 *   node: lo 10.100.99.11/32 fd00:100:99::11/128
 *         up1 (9000) 169.254.11.2/30 fd00:11::2/64 --- fabric 169.254.11.1 fd00:11::1
 *         up2 (1400) 169.254.12.2/30 fd00:12::2/64 --- fabric 169.254.12.1 fd00:12::1
 *         default: nexthop via .11.1 dev up1, nexthop via .12.1 dev up2 (both families)
 */
const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

const self = {
  name: 'node-1',
  podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'],
  internalIPs: ['10.100.99.11', 'fd00:100:99::11'],
};
const LONG = 'up2 (default route, smallest MTU of up1, up2) minus 70 bytes of encapsulation';

describe.skipIf(netnsSkipReason !== undefined)(
  'the way out of a node with its InternalIP on lo (ECMP)',
  () => {
    const pool = new NetnsPool();
    const handles: NetlinkHandle[] = [];
    let node: TestNetns;
    let fabric: TestNetns;
    /** Route table dumps made through the handle the detection uses. */
    let dumps = 0;

    /** The node's handle, counting route dumps (listRoutes and scanRoutes). */
    function open(): NetlinkHandle {
      const real = port!.openNetlinkIn(node.path);
      handles.push(real);
      return new Proxy(real, {
        get(target, key, receiver) {
          if (key === 'listRoutes' || key === 'scanRoutes') dumps++;
          const v = Reflect.get(target, key, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    }

    function ecmpDefaults(): void {
      ip(
        node.name,
        'route',
        'replace',
        'default',
        'nexthop',
        'via',
        '169.254.11.1',
        'dev',
        'up1',
        'nexthop',
        'via',
        '169.254.12.1',
        'dev',
        'up2',
      );
      ip(
        node.name,
        '-6',
        'route',
        'replace',
        'default',
        'nexthop',
        'via',
        'fd00:11::1',
        'dev',
        'up1',
        'nexthop',
        'via',
        'fd00:12::1',
        'dev',
        'up2',
      );
    }

    beforeAll(() => {
      node = pool.add('ecmp-n');
      fabric = pool.add('ecmp-f');
      for (const [up, mtu, v4, v6] of [
        ['up1', '9000', '169.254.11', 'fd00:11:'],
        ['up2', '1400', '169.254.12', 'fd00:12:'],
      ] as const) {
        ip(
          node.name,
          'link',
          'add',
          up,
          'mtu',
          mtu,
          'type',
          'veth',
          'peer',
          'name',
          `f-${up}`,
          'netns',
          fabric.name,
        );
        ip(fabric.name, 'link', 'set', `f-${up}`, 'mtu', mtu, 'up');
        ip(node.name, 'link', 'set', up, 'up');
        ip(node.name, 'addr', 'add', `${v4}.2/30`, 'dev', up);
        ip(node.name, 'addr', 'add', `${v6}:2/64`, 'dev', up, 'nodad');
        ip(fabric.name, 'addr', 'add', `${v4}.1/30`, 'dev', `f-${up}`);
        ip(fabric.name, 'addr', 'add', `${v6}:1/64`, 'dev', `f-${up}`, 'nodad');
      }
      ip(node.name, 'addr', 'add', '10.100.99.11/32', 'dev', 'lo');
      ip(node.name, 'addr', 'add', 'fd00:100:99::11/128', 'dev', 'lo');
      ecmpDefaults();
    });

    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    it('the default routes are multipath, as the kernel shows them', () => {
      for (const family of ['-4', '-6']) {
        const [dflt] = ipJson<{ nexthops?: { dev: string }[] }[]>(
          node.name,
          family,
          'route',
          'show',
          'default',
        );
        expect(dflt?.nexthops?.map((n) => n.dev).sort(), family).toEqual(['up1', 'up2']);
      }
    });

    /** Both uplinks as the MTU choice names them (the links LinkMtuWatch follows), in index order. */
    const uplinks = () =>
      ['up1', 'up2']
        .map(
          (dev) =>
            ipJson<{ ifindex: number; mtu: number; ifname: string }[]>(
              node.name,
              'link',
              'show',
              'dev',
              dev,
            )[0]!,
        )
        .map((l) => ({ index: l.ifindex, mtu: l.mtu, name: l.ifname }))
        .sort((a, b) => a.index - b.index);

    it('the pod MTU is the smaller uplink’s less the overhead, found without a route dump', async () => {
      dumps = 0;
      const choice = await detectMtu(open(), self, 'vxlan');
      expect(choice).toEqual({ mtu: 1330, overhead: 70, source: LONG, links: uplinks() });
      expect(dumps).toBe(0);
    });

    /** The VXLAN overlay on the node's handle; `warnings` collects what it warns. */
    function overlay(warnings: string[] = []): VxlanOverlay {
      const handle = open();
      return new VxlanOverlay({
        handle,
        tool: netlinkVxlanTool(handle),
        nodeName: self.name,
        vni: 4096,
        port: 8472,
        mtu: 0,
        log: { info: () => undefined, warn: (_o, msg) => warnings.push(msg) },
      });
    }
    const onLo = [
      {
        ifindex: 1,
        name: 'lo',
        addresses: [
          { family: 4 as const, address: '10.100.99.11', prefixLen: 32 },
          { family: 6 as const, address: 'fd00:100:99::11', prefixLen: 128 },
        ],
      },
    ];
    const deviceMtus = () =>
      ['trellis.v4', 'trellis.v6'].map(
        (dev) => ipJson<{ mtu: number }[]>(node.name, 'link', 'show', 'dev', dev)[0]?.mtu,
      );

    it('the VXLAN devices take the smaller uplink’s MTU less their family’s overhead', async () => {
      dumps = 0;
      const { problems } = await overlay().prepare(self, onLo, 'auto');
      expect(problems).toEqual([]);
      expect(deviceMtus()).toEqual([1350, 1330]);
      expect(dumps).toBe(0);
    });

    it("doctor's gather finds both uplinks as the ways out (its MTU check compares against them)", async () => {
      const tmp = mkdtempSync(join(tmpdir(), 'trl-ecmp-doctor-'));
      try {
        dumps = 0;
        const facts = await gatherDoctorFacts({
          adminSocket: join(tmp, 'no-agent.sock'),
          cniConfDir: tmp,
          cniBinDir: tmp,
          stateDir: tmp,
          conflistName: CONFLIST_FILE_NAME,
          openHost: open,
        });
        expect([...facts.defaultRouteIfaces].sort()).toEqual(['up1', 'up2']);
        expect(dumps).toBe(0);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });

    it('a default route on a nexthop group (FRR), shown by id only: still both uplinks', async () => {
      try {
        ip(node.name, 'nexthop', 'add', 'id', '1', 'via', '169.254.11.1', 'dev', 'up1');
        ip(node.name, 'nexthop', 'add', 'id', '2', 'via', '169.254.12.1', 'dev', 'up2');
        ip(node.name, 'nexthop', 'add', 'id', '10', 'group', '1/2');
        ip(node.name, 'route', 'replace', 'default', 'nhid', '10');
        for (const compat of ['1', '0']) {
          nsSysctl(node.name, 'net.ipv4.nexthop_compat_mode', compat);
          const v4 = { ...self, internalIPs: ['10.100.99.11'] };
          expect(await detectMtu(open(), v4, 'vxlan'), `compat mode ${compat}`).toEqual({
            mtu: 1350,
            overhead: 50,
            source: 'up2 (default route, smallest MTU of up1, up2) minus 50 bytes of encapsulation',
            links: uplinks(),
          });
        }
      } finally {
        nsSysctl(node.name, 'net.ipv4.nexthop_compat_mode', '1');
        ip(node.name, 'route', 'del', 'default');
        ip(node.name, 'nexthop', 'flush');
        ecmpDefaults();
      }
    });

    it('without a default route for a moment: the last MTU is kept, 1500 assumed only with none', async () => {
      const found = await detectMtu(open(), self, 'vxlan');
      try {
        ip(node.name, 'route', 'del', 'default');
        ip(node.name, '-6', 'route', 'del', 'default');
        expect(await detectMtu(open(), self, 'vxlan', { last: found })).toMatchObject({
          mtu: 1330,
          kept: true,
        });
        expect(await detectMtu(open(), self, 'vxlan')).toMatchObject({ mtu: 1430, fallback: true });
        // The VXLAN devices keep theirs too, with one warning each however many passes it lasts.
        const warnings: string[] = [];
        const o = overlay(warnings);
        for (let pass = 0; pass < 2; pass++) {
          expect((await o.prepare(self, onLo, 'auto')).problems).toEqual([]);
          expect(deviceMtus()).toEqual([1350, 1330]);
        }
        expect(warnings).toHaveLength(2);
      } finally {
        ecmpDefaults();
      }
      expect(await detectMtu(open(), self, 'vxlan', { last: found })).toEqual(found);
    });
  },
);
