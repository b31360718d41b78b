import { describe, expect, it } from 'vitest';
import type { RouteInfo } from '../../../pkg/datapath/ports.ts';
import {
  AF,
  IFA,
  IFA_F,
  IFLA,
  IFLA_INFO,
  IFLA_VXLAN,
  NDA,
  NTF_SELF,
  NUD,
  RT_SCOPE,
  RTA,
  RTAX,
  RTN,
  RTNH_F_ONLINK,
  VETH_INFO_PEER,
} from '../../../pkg/netlink/constants.ts';
import {
  addAddressBody,
  createVethBody,
  createVxlanBody,
  fdbBody,
  neighbourBody,
  parseAddress,
  parseFdb,
  parseLink,
  parseNeighbour,
  parseRoute,
  routeBody,
  routeTable,
} from '../../../pkg/netlink/messages.ts';
import {
  attr,
  decodeAttrs,
  decodeErrno,
  decodeMessages,
  encodeMessage,
  encodeMessages,
  nested,
  strAttr,
  u32Attr,
} from '../../../pkg/netlink/wire.ts';

const cat = (body: Buffer[]) => Buffer.concat(body);
const str = (b: Buffer | undefined) => b?.toString('utf8');

describe('framing', () => {
  it('encodes a header (nlmsg_len without the padding) and decodes it back, aligned', () => {
    const msg = encodeMessage(24, 0x405, 77, [Buffer.from([1, 2, 3])]);
    expect(msg.length).toBe(20); // 16 + 3, padded to 4
    expect(msg.readUInt32LE(0)).toBe(19); // nlmsg_len excludes the padding
    const two = decodeMessages(Buffer.concat([msg, encodeMessage(3, 2, 78, [])]));
    expect(two.map((m) => [m.type, m.flags, m.seq, m.payload.length])).toEqual([
      [24, 0x405, 77, 3],
      [3, 2, 78, 0],
    ]);
  });

  it('packs a datagram of messages as encodeMessage writes each, zero padding included', () => {
    // Dirty the shared pool first: the datagram is carved from it and must not carry its garbage.
    Buffer.allocUnsafe(64).fill(0xff);
    const messages = [
      { type: 24, flags: 0x405, seq: 77, body: [Buffer.from([1, 2, 3])] },
      { type: 104, flags: 1, seq: 78, body: [Buffer.from([9]), Buffer.from([8, 7])] },
      { type: 3, flags: 2, seq: 79, body: [] },
    ];
    const datagram = encodeMessages(messages);
    expect(datagram).toEqual(
      Buffer.concat(messages.map((m) => encodeMessage(m.type, m.flags, m.seq, m.body))),
    );
    expect(datagram.subarray(19, 20)).toEqual(Buffer.from([0]));
    expect(decodeMessages(datagram).map((m) => [m.type, m.flags, m.seq, [...m.payload]])).toEqual([
      [24, 0x405, 77, [1, 2, 3]],
      [104, 1, 78, [9, 8, 7]],
      [3, 2, 79, []],
    ]);
  });

  it('stops at a truncated message instead of reading past the datagram', () => {
    const msg = encodeMessage(24, 0, 1, [Buffer.alloc(8)]);
    expect(decodeMessages(msg.subarray(0, 20))).toEqual([]);
  });

  it('reads the errno of NLMSG_ERROR (negative in the wire format)', () => {
    const p = Buffer.alloc(20);
    p.writeInt32LE(-19, 0);
    expect(decodeErrno(p)).toBe(19);
    expect(decodeErrno(Buffer.alloc(20))).toBe(0);
  });

  it('masks NLA_F_NESTED from attribute types', () => {
    const a = Buffer.alloc(8);
    a.writeUInt16LE(8, 0);
    a.writeUInt16LE(0x8000 | 18, 2);
    expect([...decodeAttrs(a).keys()]).toEqual([18]);
  });
});

describe('link requests', () => {
  it('puts the veth peer, with IFLA_NET_NS_FD, inside IFLA_LINKINFO/IFLA_INFO_DATA/VETH_INFO_PEER', () => {
    const body = cat(
      createVethBody({ name: 'veth1234', mtu: 1450, peerName: 'eth0', peerNetnsFd: 42, peerMtu: 1400 }),
    );
    const top = decodeAttrs(body, 16);
    expect(str(top.get(IFLA.IFNAME))).toBe('veth1234\0');
    expect(top.get(IFLA.MTU)?.readUInt32LE(0)).toBe(1450);
    const info = decodeAttrs(top.get(IFLA.LINKINFO)!);
    expect(str(info.get(IFLA_INFO.KIND))).toBe('veth\0');
    const peerMsg = decodeAttrs(info.get(IFLA_INFO.DATA)!).get(VETH_INFO_PEER)!;
    // The peer is a full ifinfomsg followed by its own attributes.
    const peer = decodeAttrs(peerMsg, 16);
    expect(str(peer.get(IFLA.IFNAME))).toBe('eth0\0');
    expect(peer.get(IFLA.MTU)?.readUInt32LE(0)).toBe(1400);
    expect(peer.get(IFLA.NET_NS_FD)?.readUInt32LE(0)).toBe(42);
  });

  it('encodes VXLAN id, local address, port (big endian) and learning off', () => {
    const body = cat(
      createVxlanBody({ name: 'trellis.1', vni: 1, port: 8472, localIp: '192.0.2.7', dev: 3, mtu: 1450 }),
    );
    const info = decodeAttrs(decodeAttrs(body, 16).get(IFLA.LINKINFO)!);
    expect(str(info.get(IFLA_INFO.KIND))).toBe('vxlan\0');
    const data = decodeAttrs(info.get(IFLA_INFO.DATA)!);
    expect(data.get(IFLA_VXLAN.ID)?.readUInt32LE(0)).toBe(1);
    expect([...data.get(IFLA_VXLAN.LOCAL)!]).toEqual([192, 0, 2, 7]);
    expect(data.get(IFLA_VXLAN.PORT)?.readUInt16BE(0)).toBe(8472);
    expect(data.get(IFLA_VXLAN.LEARNING)?.readUInt8(0)).toBe(0);
    expect(data.get(IFLA_VXLAN.LINK)?.readUInt32LE(0)).toBe(3);
    expect(() => createVxlanBody({ name: 'x', vni: 1 << 24, port: 1, localIp: '192.0.2.7', mtu: 1 })).toThrow(
      RangeError,
    );
  });

  it('parses RTM_NEWLINK: name, kind, MAC, MTU, up, peer index', () => {
    const payload = Buffer.concat([
      Buffer.from([0, 0, 1, 0, 7, 0, 0, 0, 0x43, 0x10, 0, 0, 0, 0, 0, 0]), // index 7, flags UP|RUNNING|...
      strAttr(IFLA.IFNAME, 'veth0'),
      u32Attr(IFLA.MTU, 1450),
      u32Attr(IFLA.LINK, 2),
      Buffer.from([10, 0, IFLA.ADDRESS, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0]),
      nested(IFLA.LINKINFO, [strAttr(IFLA_INFO.KIND, 'veth')]),
    ]);
    expect(parseLink(payload)).toEqual({
      index: 7,
      name: 'veth0',
      kind: 'veth',
      mac: 'aa:bb:cc:dd:ee:ff',
      mtu: 1450,
      up: true,
      peerIndex: 2,
    });
  });

  it('marks the loopback device (IFF_LOOPBACK), and only it', () => {
    const lo = Buffer.concat([
      Buffer.from([0, 0, 0x04, 0x03, 1, 0, 0, 0, 0x49, 0, 1, 0, 0, 0, 0, 0]), // index 1, UP|LOOPBACK|RUNNING
      strAttr(IFLA.IFNAME, 'lo'),
      u32Attr(IFLA.MTU, 65536),
    ]);
    expect(parseLink(lo)).toMatchObject({ index: 1, name: 'lo', mtu: 65536, up: true, loopback: true });
  });
});

describe('address requests', () => {
  it('carries IFA_F_NODAD both in the header byte and in IFA_FLAGS', () => {
    const body = cat(
      addAddressBody({ family: 6, ifindex: 9, address: 'fd00::5', prefixLen: 64, noDad: true }),
    );
    expect([body[0], body[1], body[2], body.readUInt32LE(4)]).toEqual([AF.INET6, 64, IFA_F.NODAD, 9]);
    expect(decodeAttrs(body, 8).get(IFA.FLAGS)?.readUInt32LE(0)).toBe(IFA_F.NODAD);
    const plain = cat(addAddressBody({ family: 4, ifindex: 9, address: '10.0.0.1', prefixLen: 24 }));
    expect(decodeAttrs(plain, 8).has(IFA.FLAGS)).toBe(false);
    expect(parseAddress(plain)).toEqual({
      family: 4,
      ifindex: 9,
      address: '10.0.0.1',
      prefixLen: 24,
      scope: 'universe',
    });
  });

  it('refuses an address of the wrong family', () => {
    expect(() => addAddressBody({ family: 4, ifindex: 1, address: 'fd00::1', prefixLen: 64 })).toThrow(
      TypeError,
    );
  });
});

describe('route requests', () => {
  /** One of our peer routes: onlink via another node's address. */
  const peerRoute: RouteInfo = {
    family: 4,
    dst: '10.244.2.0/24',
    gateway: '192.0.2.9',
    ifindex: 4,
    protocol: 126,
    onlink: true,
  };

  it('encodes protocol, table, onlink, gateway, device, source and metric', () => {
    const r: RouteInfo = { ...peerRoute, src: '10.244.1.1', metric: 20, table: 1000 };
    const body = cat(routeBody(r));
    expect([body[0], body[1], body[4], body[5], body[6], body[7]]).toEqual([
      AF.INET,
      24,
      0,
      126,
      RT_SCOPE.UNIVERSE,
      RTN.UNICAST,
    ]);
    expect(body.readUInt32LE(8)).toBe(RTNH_F_ONLINK);
    const a = decodeAttrs(body, 12);
    expect(a.get(RTA.TABLE)?.readUInt32LE(0)).toBe(1000);
    expect(a.get(RTA.OIF)?.readUInt32LE(0)).toBe(4);
    // The request layout is the kernel's answer layout: parsing it back gives the route.
    expect(parseRoute(body)).toEqual({ ...r, scope: 'universe', type: 'unicast' });
  });

  it('carries a path MTU as RTAX_MTU nested in RTA_METRICS, and reads it back', () => {
    const r: RouteInfo = { family: 6, dst: '::/0', gateway: 'fe80::1', ifindex: 2, mtu: 1430 };
    const body = cat(routeBody(r));
    const metrics = decodeAttrs(body, 12).get(RTA.METRICS);
    expect(metrics?.length).toBe(8);
    expect([metrics?.readUInt16LE(2), metrics?.readUInt32LE(4)]).toEqual([RTAX.MTU, 1430]);
    expect(parseRoute(body)).toEqual({ ...r, protocol: 0, scope: 'universe', type: 'unicast' });
    expect(parseRoute(cat(routeBody({ ...r, mtu: undefined })))?.mtu).toBeUndefined();
  });

  it('picks scope link for a device route and omits RTA_DST for a default route', () => {
    const dev = cat(routeBody({ family: 6, dst: 'fd00:1::/64', ifindex: 3 }));
    expect(dev[6]).toBe(RT_SCOPE.LINK);
    const def = cat(routeBody({ family: 4, dst: '0.0.0.0/0', gateway: '10.0.0.1' }));
    expect(decodeAttrs(def, 12).has(RTA.DST)).toBe(false);
    expect(parseRoute(def)).toMatchObject({ dst: '0.0.0.0/0', gateway: '10.0.0.1' });
  });

  it('deletes with scope NOWHERE and any type unless told, keeping protocol in the match', () => {
    const del = cat(routeBody({ family: 4, dst: '10.1.0.0/16', protocol: 126 }, true));
    expect([del[5], del[6], del[7]]).toEqual([126, RT_SCOPE.NOWHERE, RTN.UNSPEC]);
    const bh = cat(routeBody({ family: 4, dst: '10.1.0.0/16', type: 'blackhole' }, true));
    expect(bh[7]).toBe(RTN.BLACKHOLE);
  });

  it('through a nexthop object: RTA_NH_ID instead of gateway, device and onlink; parsing reports the id', () => {
    const body = cat(routeBody(peerRoute, false, 0x7e000005));
    expect(body[6]).toBe(RT_SCOPE.UNIVERSE); // still decided by the gateway
    expect(body.readUInt32LE(8)).toBe(0);
    const a = decodeAttrs(body, 12);
    expect([a.has(RTA.GATEWAY), a.has(RTA.OIF), a.get(RTA.NH_ID)?.readUInt32LE(0)]).toEqual([
      false,
      false,
      0x7e000005,
    ]);
    const ids: number[] = [];
    expect(parseRoute(body, (id) => ids.push(id))).toMatchObject({ dst: '10.244.2.0/24', protocol: 126 });
    expect(ids).toEqual([0x7e000005]);
    parseRoute(cat(routeBody(peerRoute)), (id) => ids.push(id));
    expect(ids).toHaveLength(1);
  });

  it('parses IPv6 addresses, a table above 255 and the metric; skips multipath; stops at a truncated attribute', () => {
    const r: RouteInfo = {
      family: 6,
      dst: 'fd00:10:244:1::/64',
      gateway: 'fe80::1',
      ifindex: 7,
      src: 'fd00::5',
      metric: 1024,
      table: 1000,
      protocol: 126,
    };
    const body = cat(routeBody(r));
    expect(parseRoute(body)).toEqual({ ...r, scope: 'universe', type: 'unicast' });
    expect(routeTable(body)).toBe(1000);
    const multipath = Buffer.concat([body, attr(RTA.MULTIPATH, Buffer.alloc(8))]);
    expect(parseRoute(multipath)).toBeUndefined();
    // A last attribute that claims more bytes than there are: the rest is ignored, not misread.
    const truncated = Buffer.concat([body.subarray(0, 12 + 8), Buffer.from([40, 0, RTA.GATEWAY, 0, 1, 2])]);
    expect(parseRoute(truncated)).toEqual({
      family: 6,
      dst: '::/64',
      table: 1000,
      protocol: 126,
      scope: 'universe',
      type: 'unicast',
    });
  });

  it('reads back a written route in canonical text whatever text it was written from', () => {
    // A route written is remembered for the next dump by its bytes; only a dump's own text may be.
    for (const [written, dumped] of [
      ['10.9.8.0/024', '10.9.8.0/24'],
      ['10.9.8.7', '10.9.8.7/32'],
      ['10.9.7.0/24', '10.9.7.0/24'],
    ] as const) {
      const body = cat(routeBody({ family: 4, dst: written, gateway: '192.0.2.77', protocol: 126 }));
      expect(parseRoute(body)).toMatchObject({ dst: dumped, gateway: '192.0.2.77' });
    }
  });

  it('rejects mixed families', () => {
    expect(() => routeBody({ family: 4, dst: 'fd00::/64' })).toThrow(TypeError);
    expect(() => routeBody({ family: 4, dst: '10.0.0.0/8', gateway: 'fd00::1' })).toThrow(TypeError);
  });
});

describe('neighbour and FDB requests', () => {
  it('encodes a permanent neighbour and parses it back', () => {
    const body = cat(
      neighbourBody({ family: 4, ifindex: 5, address: '10.244.3.0', mac: '0a:00:00:00:00:03' }),
    );
    expect(body.readUInt16LE(8)).toBe(NUD.PERMANENT);
    expect(parseNeighbour(body)).toEqual({
      family: 4,
      ifindex: 5,
      address: '10.244.3.0',
      mac: '0a:00:00:00:00:03',
      permanent: true,
    });
    const del = cat(
      neighbourBody({ family: 4, ifindex: 5, address: '10.244.3.0', mac: '0a:00:00:00:00:03' }, true),
    );
    expect(decodeAttrs(del, 12).has(NDA.LLADDR)).toBe(false);
  });

  it('encodes an FDB entry as AF_BRIDGE + NTF_SELF with NDA_DST, and parses it back', () => {
    const e = { ifindex: 6, mac: '00:00:00:00:00:00', dst: '192.0.2.20' };
    const body = cat(fdbBody(e));
    expect([body[0], body[10]]).toEqual([AF.BRIDGE, NTF_SELF]);
    expect(parseFdb(body)).toEqual(e);
  });
});
