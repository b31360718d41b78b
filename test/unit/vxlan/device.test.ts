import { describe, expect, it } from 'vitest';
import { DEFAULTS, parseAgentConfig } from '../../../pkg/agent/config.ts';
import { chooseMtu, encapOverhead } from '../../../pkg/agent/mtu.ts';
import { isHostVethName } from '../../../pkg/datapath/names.ts';
import type { LinkInfo, RouteLookup } from '../../../pkg/datapath/ports.ts';
import { createVethBody, createVxlanBody, parseVxlanParams } from '../../../pkg/netlink/messages.ts';
import type { LocalLink, PeerNode } from '../../../pkg/routes/types.ts';
import {
  DEFAULT_VXLAN_PORT,
  DEFAULT_VXLAN_VNI,
  desiredDevices,
  familiesNeedingWayOut,
  isVxlanDeviceName,
  VXLAN_OVERHEAD,
  vtepMac,
} from '../../../pkg/vxlan/index.ts';

const self: PeerNode = {
  name: 'node-a',
  podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'],
  internalIPs: ['192.168.10.2', 'fd00:10::2'],
};
const localLinks: LocalLink[] = [
  {
    ifindex: 2,
    name: 'eth0',
    addresses: [
      { family: 4, address: '192.168.10.2', prefixLen: 24 },
      { family: 6, address: 'fd00:10::2', prefixLen: 64 },
    ],
  },
];
const links: LinkInfo[] = [
  { index: 2, name: 'eth0', kind: undefined, mac: '02:00:00:00:00:02', mtu: 9000, up: true },
];
const settings = { vni: 4096, port: 8472, mtu: 0 };

describe('desiredDevices', () => {
  it("auto/vxlan: one device per family, local = InternalIP, MTU = underlay minus that family's overhead", () => {
    const { specs, problems } = desiredDevices('node-a', self, localLinks, links, 'auto', settings);
    expect(problems).toEqual([]);
    expect(specs).toEqual([
      {
        family: 4,
        name: 'trellis.v4',
        vni: 4096,
        port: 8472,
        localIp: '192.168.10.2',
        underlay: 'eth0',
        mac: vtepMac('node-a', 4),
        mtu: 8950,
        vtepIP: '10.244.1.0',
      },
      {
        family: 6,
        name: 'trellis.v6',
        vni: 4096,
        port: 8472,
        localIp: 'fd00:10::2',
        underlay: 'eth0',
        mac: vtepMac('node-a', 6),
        mtu: 8930,
        vtepIP: 'fd00:244:1::',
      },
    ]);
    expect(desiredDevices('node-a', self, localLinks, links, 'vxlan', settings).specs).toEqual(specs);
  });

  it('host-gw: none; an explicit MTU is used as is', () => {
    expect(desiredDevices('node-a', self, localLinks, links, 'host-gw', settings)).toEqual({
      specs: [],
      problems: [],
    });
    const fixed = desiredDevices('node-a', self, localLinks, links, 'auto', { ...settings, mtu: 1400 });
    expect(fixed.specs.map((s) => s.mtu)).toEqual([1400, 1400]);
  });

  it("a link-local IPv6 InternalIP listed first is never the device's local address; only link-local: no device", () => {
    const withLinkLocal: LocalLink[] = [
      {
        ...localLinks[0]!,
        addresses: [...localLinks[0]!.addresses, { family: 6, address: 'fe80::2', prefixLen: 64 }],
      },
    ];
    const first = { ...self, internalIPs: ['192.168.10.2', 'fe80::2', 'fd00:10::2'] };
    const a = desiredDevices('node-a', first, withLinkLocal, links, 'auto', settings);
    expect(a.problems).toEqual([]);
    expect(a.specs.find((d) => d.family === 6)?.localIp).toBe('fd00:10::2');
    const only = { ...self, internalIPs: ['192.168.10.2', 'fe80::2'] };
    const b = desiredDevices('node-a', only, withLinkLocal, links, 'auto', settings);
    expect(b.specs.map((d) => d.family)).toEqual([4]);
    expect(b.problems).toEqual([
      {
        node: 'node-a',
        problem:
          'no usable IPv6 InternalIP (fe80::2: link-local address): no IPv6 VXLAN device, IPv6 pod traffic can only use direct routes',
      },
    ]);
  });

  it('an IPv6 device below 1280 (an underlay of 1280-1349, or --mtu under 1280) is not made: a problem says why', () => {
    const small = links.map((l) => ({ ...l, mtu: 1340 }));
    const a = desiredDevices('node-a', self, localLinks, small, 'auto', settings);
    expect(a.specs.map((d) => [d.family, d.mtu])).toEqual([[4, 1290]]);
    expect(a.problems).toEqual([
      {
        node: 'node-a',
        problem:
          "the IPv6 VXLAN device would get MTU 1270 (eth0's MTU 1340 less 70 bytes of encapsulation), below the 1280 IPv6 needs: no IPv6 VXLAN device, IPv6 pod traffic can only use direct routes (raise the underlay's MTU to 1350 or more)",
      },
    ]);
    expect(
      desiredDevices(
        'node-a',
        self,
        localLinks,
        links.map((l) => ({ ...l, mtu: 1350 })),
        'auto',
        settings,
      ).specs,
    ).toHaveLength(2);
    const configured = desiredDevices('node-a', self, localLinks, links, 'auto', { ...settings, mtu: 1000 });
    expect(configured.specs.map((d) => d.family)).toEqual([4]);
    expect(configured.problems[0]?.problem).toContain('MTU 1000 (--mtu 1000)');
    expect(configured.problems[0]?.problem).toContain('or --mtu to 1280 or more');
  });

  it('an InternalIP off the interfaces keeps the device the last pass made for it; a changed InternalIP does not', () => {
    const last = desiredDevices('node-a', self, localLinks, links, 'auto', settings).specs;
    const withDevice: LinkInfo[] = [
      ...links,
      { index: 7, name: 'trellis.v4', kind: 'vxlan', mac: vtepMac('node-a', 4), mtu: 8950, up: true },
    ];
    const off = localLinks.map((l) => ({ ...l, addresses: l.addresses.filter((a) => a.family === 6) }));
    const kept = desiredDevices('node-a', self, off, withDevice, 'auto', settings, [], last);
    expect(kept.specs).toEqual(last);
    expect(kept.problems.map((p) => p.problem)).toEqual([
      "InternalIP 192.168.10.2 is not an address of this node's interfaces: the IPv4 VXLAN device is kept as it was until it is back",
    ]);
    // The device gone meanwhile, the Node's InternalIP another one, or its pod CIDR (the VTEP
    // address): nothing to keep.
    expect(desiredDevices('node-a', self, off, links, 'auto', settings, [], last).specs).toHaveLength(1);
    const renumbered = { ...self, podCIDRs: ['10.244.7.0/24', 'fd00:244:1::/64'] };
    expect(
      desiredDevices('node-a', renumbered, off, withDevice, 'auto', settings, [], last).specs.map(
        (d) => d.name,
      ),
    ).toEqual(['trellis.v6']);
    const moved = { ...self, internalIPs: ['192.168.10.9', 'fd00:10::2'] };
    const gone = desiredDevices('node-a', moved, off, withDevice, 'auto', settings, [], last);
    expect(gone.specs.map((d) => d.name)).toEqual(['trellis.v6']);
    expect(gone.problems[0]!.problem).toMatch(/no IPv4 VXLAN device$/);
  });

  it('a family without an InternalIP, or with one no interface holds, gets no device and a problem', () => {
    const v4only = { ...self, internalIPs: ['192.168.10.2'] };
    const a = desiredDevices('node-a', v4only, localLinks, links, 'auto', settings);
    expect(a.specs.map((s) => s.name)).toEqual(['trellis.v4']);
    expect(a.problems).toEqual([{ node: 'node-a', problem: expect.stringMatching(/^no IPv6 InternalIP/) }]);
    const foreign = { ...self, internalIPs: ['203.0.113.7', 'fd00:10::2'] };
    const b = desiredDevices('node-a', foreign, localLinks, links, 'auto', settings);
    expect(b.specs.map((s) => s.name)).toEqual(['trellis.v6']);
    expect(b.problems[0]!.problem).toMatch(/InternalIP 203\.0\.113\.7 is not an address of this node/);
    // Standalone (no InternalIP at all): nothing to tunnel to, nothing to report.
    expect(
      desiredDevices('node-a', { ...self, internalIPs: [] }, localLinks, links, 'auto', settings),
    ).toEqual({
      specs: [],
      problems: [],
    });
    // A single-stack node: no pod CIDR of the other family, no device, no problem.
    const single = { ...self, podCIDRs: ['10.244.1.0/24'] };
    expect(
      desiredDevices('node-a', single, localLinks, links, 'auto', settings).specs.map((s) => s.family),
    ).toEqual([4]);
  });
});

describe('desiredDevices: the underlay of an InternalIP on lo', () => {
  // A /32 and a /128 on lo hold the InternalIPs (announced by BGP, reached through host routes); eth0
  // (MTU 9000) and eth1 (MTU 1500, the default routes' device) are the ways out.
  const onLo = { ...self, internalIPs: ['10.9.9.9', 'fd00:99::9'] };
  const loLinks: LocalLink[] = [
    {
      ifindex: 1,
      name: 'lo',
      addresses: [
        { family: 4, address: '10.9.9.9', prefixLen: 32 },
        { family: 6, address: 'fd00:99::9', prefixLen: 128 },
      ],
    },
    ...localLinks,
    { ifindex: 3, name: 'eth1', addresses: [{ family: 4, address: '192.0.2.5', prefixLen: 24 }] },
  ];
  const allLinks: LinkInfo[] = [
    { index: 1, name: 'lo', kind: undefined, mac: '00:00:00:00:00:00', mtu: 65536, up: true, loopback: true },
    ...links,
    { index: 3, name: 'eth1', kind: undefined, mac: '02:00:00:00:00:03', mtu: 1500, up: true },
  ];
  const waysOut: RouteLookup[] = [
    { family: 4, dst: '0.0.0.0/0', ifindexes: [3] },
    { family: 6, dst: '::/0', ifindexes: [2] },
  ];

  it("local = the InternalIP on lo; MTU from the way out of the family, not lo's 65536", () => {
    const { specs, problems } = desiredDevices('node-a', onLo, loLinks, allLinks, 'auto', settings, waysOut);
    expect(problems).toEqual([]);
    expect(specs.map((s) => [s.name, s.localIp, s.underlay, s.mtu])).toEqual([
      ['trellis.v4', '10.9.9.9', 'eth1', 1450],
      ['trellis.v6', 'fd00:99::9', 'eth0', 8930],
    ]);
  });

  it('a multipath way out: the smallest MTU among its nexthops', () => {
    const ecmp: RouteLookup[] = [{ family: 4, dst: '0.0.0.0/0', ifindexes: [2, 3] }];
    const { specs } = desiredDevices('node-a', onLo, loLinks, allLinks, 'auto', settings, ecmp);
    expect(specs.map((s) => [s.name, s.underlay, s.mtu])).toEqual([
      ['trellis.v4', 'eth1', 1450],
      ['trellis.v6', undefined, 1430],
    ]);
  });

  it('without a way out of the family: a new device gets 1500 less the overhead, an existing one keeps its MTU', () => {
    const { specs } = desiredDevices('node-a', onLo, loLinks, allLinks, 'auto', settings, []);
    expect(specs.map((s) => [s.name, s.underlay, s.mtu])).toEqual([
      ['trellis.v4', undefined, 1450],
      ['trellis.v6', undefined, 1430],
    ]);
    const existing: LinkInfo[] = [
      ...allLinks,
      { index: 7, name: 'trellis.v4', kind: 'vxlan', mac: '', mtu: 8950, up: true },
    ];
    const kept = desiredDevices('node-a', onLo, loLinks, existing, 'auto', settings, []).specs;
    expect(kept.map((s) => [s.name, s.underlay, s.mtu])).toEqual([
      ['trellis.v4', undefined, 8950],
      ['trellis.v6', undefined, 1430],
    ]);
  });

  it('familiesNeedingWayOut: the families with pods whose InternalIP no interface holds on a subnet', () => {
    expect(familiesNeedingWayOut(onLo, loLinks, allLinks, 'auto')).toEqual([4, 6]);
    expect(familiesNeedingWayOut(onLo, loLinks, allLinks, 'host-gw')).toEqual([]);
    expect(familiesNeedingWayOut(self, loLinks, allLinks, 'vxlan')).toEqual([]);
    expect(
      familiesNeedingWayOut(
        { ...self, internalIPs: ['192.168.10.2', 'fd00:99::9'] },
        loLinks,
        allLinks,
        'auto',
      ),
    ).toEqual([6]);
    expect(
      familiesNeedingWayOut({ ...onLo, podCIDRs: ['10.244.1.0/24'] }, loLinks, allLinks, 'auto'),
    ).toEqual([4]);
  });
});

describe('device names', () => {
  it('never look like pod veths, and uninstall recognises exactly them', () => {
    for (const name of ['trellis.v4', 'trellis.v6']) {
      expect(isVxlanDeviceName(name)).toBe(true);
      expect(isHostVethName(name)).toBe(false);
      expect(name.length).toBeLessThanOrEqual(15); // IFNAMSIZ - 1
    }
    expect(isVxlanDeviceName('trl0123456789ab')).toBe(false);
    expect(isVxlanDeviceName('flannel.1')).toBe(false);
  });
});

describe('MTU arithmetic', () => {
  it('overhead: 0 in host-gw and auto; vxlan 50 over IPv4, 70 with an IPv6 underlay, of the families tunnelled; 0 without InternalIPs', () => {
    expect(VXLAN_OVERHEAD).toEqual({ 4: 50, 6: 70 });
    const dual = ['10.244.1.0/24', 'fd00:244:1::/64'];
    expect(encapOverhead('host-gw', ['192.168.10.2', 'fd00:10::2'], dual)).toBe(0);
    // auto: pods keep the full MTU; the node clamps TCP into its tunnels (table-rules.ts).
    expect(encapOverhead('auto', ['192.168.10.2', 'fd00:10::2'], dual)).toBe(0);
    expect(encapOverhead('vxlan', ['192.168.10.2'], dual)).toBe(50);
    expect(encapOverhead('vxlan', ['fd00:10::2'], dual)).toBe(70);
    expect(encapOverhead('vxlan', ['192.168.10.2', 'fd00:10::2'], dual)).toBe(70);
    // A family is tunnelled only where the node has pods of it: IPv4 pods over a dual-stack underlay.
    expect(encapOverhead('vxlan', ['192.168.10.2', 'fd00:10::2'], ['10.244.1.0/24'])).toBe(50);
    expect(encapOverhead('vxlan', ['192.168.10.2', 'fd00:10::2'], ['fd00:244:1::/64'])).toBe(70);
    expect(encapOverhead('vxlan', ['192.168.10.2'], ['fd00:244:1::/64'])).toBe(0);
    // A link-local IPv6 InternalIP makes no IPv6 device: IPv4's overhead.
    expect(encapOverhead('vxlan', ['192.168.10.2', 'fe80::2'], dual)).toBe(50);
    expect(encapOverhead('vxlan', [], dual)).toBe(0);
  });

  it('pod MTU = the InternalIP interface MTU minus the overhead; --mtu wins', () => {
    const base = { internalIPs: self.internalIPs, localLinks, links, waysOut: [] };
    const eth0 = links.find((l) => l.name === 'eth0')!;
    expect(chooseMtu({ ...base, configured: 0, overhead: 70 })).toEqual({
      mtu: 8930,
      source: 'eth0 (InternalIP) minus 70 bytes of encapsulation',
      links: [{ index: eth0.index, mtu: 9000, name: 'eth0' }],
    });
    expect(chooseMtu({ ...base, configured: 0, overhead: 0 }).mtu).toBe(9000);
    expect(chooseMtu({ ...base, configured: 1400, overhead: 70 })).toEqual({
      mtu: 1400,
      source: 'configured',
    });
  });
});

describe('parseVxlanParams (RTM_NEWLINK)', () => {
  // A creating request has the layout of the kernel's answer: ifinfomsg, then IFLA_LINKINFO with kind and data.
  const payload = (body: Buffer[]) => Buffer.concat(body);
  it('reads VNI, port (network byte order), local/local6 and learning back; null for other kinds', () => {
    const v4 = { name: 'trellis.v4', vni: 4096, port: 8472, localIp: '192.168.10.2', mtu: 1450 };
    expect(parseVxlanParams(payload(createVxlanBody(v4)))).toEqual({
      vni: 4096,
      port: 8472,
      localIp: '192.168.10.2',
      learning: false,
    });
    const v6 = { name: 'trellis.v6', vni: 7, port: 4789, localIp: 'fd00::1', learning: true, mtu: 1430 };
    expect(parseVxlanParams(payload(createVxlanBody(v6)))).toEqual({
      vni: 7,
      port: 4789,
      localIp: 'fd00::1',
      learning: true,
    });
    const veth = createVethBody({ name: 'a', peerName: 'b', mtu: 1500, peerNetnsFd: 3, peerMtu: 1500 });
    expect(parseVxlanParams(payload(veth))).toBeNull();
    expect(parseVxlanParams(payload(createVxlanBody(v4)).subarray(0, 16))).toBeNull(); // no IFLA_LINKINFO
  });
});

describe('agent config: --vxlan-vni and --vxlan-port', () => {
  const env = { NODE_NAME: 'node-a' };
  it('default to VNI 4096 and port 8472', () => {
    expect([DEFAULT_VXLAN_VNI, DEFAULT_VXLAN_PORT]).toEqual([4096, 8472]);
    expect(DEFAULTS).toMatchObject({ vxlanVni: 4096, vxlanPort: 8472 });
    expect(parseAgentConfig([], env)).toMatchObject({ vxlanVni: 4096, vxlanPort: 8472, mode: 'auto' });
  });
  it('flags win over the environment; invalid values fail naming the flag', () => {
    expect(
      parseAgentConfig([], { ...env, TRELLIS_VXLAN_VNI: '1', TRELLIS_VXLAN_PORT: '4789' }),
    ).toMatchObject({
      vxlanVni: 1,
      vxlanPort: 4789,
    });
    expect(
      parseAgentConfig(['--vxlan-vni', '77', '--vxlan-port', '9000'], { ...env, TRELLIS_VXLAN_VNI: '1' }),
    ).toMatchObject({ vxlanVni: 77, vxlanPort: 9000 });
    expect(() => parseAgentConfig(['--vxlan-vni', '16777216'], env)).toThrow(/--vxlan-vni/);
    expect(() => parseAgentConfig(['--vxlan-vni', '0'], env)).toThrow(/--vxlan-vni/);
    expect(() => parseAgentConfig(['--vxlan-port', '70000'], env)).toThrow(/--vxlan-port/);
  });
});
