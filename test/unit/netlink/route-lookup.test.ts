import { describe, expect, it } from 'vitest';
import { AF, NHA, RTA, RTM, RTM_F_FIB_MATCH, RTM_F_LOOKUP_TABLE } from '../../../pkg/netlink/constants.ts';
import { NetlinkError, opText } from '../../../pkg/netlink/errors.ts';
import { parseRoute, parseRouteAnswer, routeLookupBody } from '../../../pkg/netlink/messages.ts';
import { getNexthopBody, nexthopGroupMembers, parseNexthop } from '../../../pkg/netlink/nexthop-messages.ts';
import { keyHolder, routeTo } from '../../../pkg/netlink/route-lookup.ts';
import type { Request } from '../../../pkg/netlink/socket.ts';
import { decodeAttrs, type RawMessage } from '../../../pkg/netlink/wire.ts';

/**
 * Answers of a 6.18 kernel, taken in a test namespace whose default routes are ECMP over up1
 * (ifindex 2, via 169.254.1.1 / fd00:1::1) and up2 (ifindex 3, via 169.254.2.1 / fd00:2::1), with
 * 10.100.99.11/32 on lo. RTM_NEWROUTE payloads (after the nlmsghdr).
 */
const KERNEL = {
  // ip route get fibmatch 8.8.8.8: the default route, RTA_MULTIPATH with both nexthops.
  fibmatch4:
    '02000000fe0300010000000008000f00fe00000024000900100000000200000008000500a9fe0101100000000300000008000500a9fe0201',
  // ip route get 8.8.8.8: the resolved answer, one nexthop (RTA_OIF 2), RTM_F_CLONED, dst 8.8.8.8/32.
  resolved4:
    '02200000fe0000010002000008000f00fe0000000800010008080808080004000200000008000700a9fe010208000500a9fe0101080019000000000024000c000200000000000000000000000000000000000000000000000000000000000000',
  // ip route get fibmatch 2001:4860:4860::8888: the IPv6 default route, up2's nexthop first.
  fibmatch6:
    '0a000000fe0300010000000008000f00fe00000008000600000400003c0009001c0000000300000014000500fd0000020000000000000000000000011c0000000200000014000500fd00000100000000000000000000000124000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000',
  // ip route get fibmatch 10.100.99.11: the local route on lo.
  local4: '02200000fe02fe020000000008000f00fe000000080001000a64630b080007000a64630b0800040001000000',
  // The default route on nexthop group 10 (members 1: up1, 2: up2), nexthop_compat_mode=0: RTA_NH_ID only.
  groupOnly4: '02000000fe0300010000000008000f00fe00000008001e000a000000',
  // The same with nexthop_compat_mode=1: RTA_NH_ID and the group expanded as RTA_MULTIPATH.
  groupCompat4:
    '02000000fe0300010000000008000f00fe00000008001e000a00000024000900100000000200000008000500a9fe0101100000000300000008000500a9fe0201',
};
/** RTM_NEWNEXTHOP payloads of `ip nexthop get id N` in the same namespace. */
const NEXTHOPS: Record<number, string> = {
  10: '0000000000000000080001000a0000000600030000000000140002000100000000000000020000000000000008000e0000000080',
  1: '02fd0000000000000800010001000000080005000200000008000600a9fe0101',
  2: '02fd0000000000000800010002000000080005000300000008000600a9fe0201',
};
const hex = (s: string) => Buffer.from(s, 'hex');

describe('route lookups: request and answer', () => {
  it('asks for one address (no dump), the matched FIB entry when fibMatch', () => {
    const v4 = Buffer.concat(routeLookupBody('8.8.8.8', true));
    expect([v4[0], v4[1], v4.readUInt32LE(8)]).toEqual([AF.INET, 32, RTM_F_FIB_MATCH]);
    expect([...decodeAttrs(v4, 12).get(RTA.DST)!]).toEqual([8, 8, 8, 8]);
    const v6 = Buffer.concat(routeLookupBody('2001:4860:4860::8888', false));
    expect([v6[0], v6[1], v6.readUInt32LE(8)]).toEqual([AF.INET6, 128, 0]);
    // keyHolder's: the answer names the table the rules chose (IPv4 says main otherwise).
    const key = Buffer.concat(routeLookupBody('10.244.1.0', true, true));
    expect(key.readUInt32LE(8)).toBe(RTM_F_FIB_MATCH | RTM_F_LOOKUP_TABLE);
  });

  it('a multipath default route: every nexthop’s device, where the dump parser sees nothing', () => {
    expect(parseRoute(hex(KERNEL.fibmatch4))).toBeUndefined();
    expect(parseRouteAnswer(hex(KERNEL.fibmatch4))).toEqual({
      family: 4,
      dst: '0.0.0.0/0',
      unicast: true,
      ifindexes: [2, 3],
      protocol: 3, // boot: `ip route add`
      table: 254,
      onLink: false, // several nexthops, each with a gateway
      multipath: true,
    });
    expect(parseRouteAnswer(hex(KERNEL.fibmatch6))).toEqual({
      family: 6,
      dst: '::/0',
      unicast: true,
      ifindexes: [3, 2],
      protocol: 3,
      table: 254,
      onLink: false,
      multipath: true,
    });
  });

  it('the resolved answer names the one device; a local route is not unicast', () => {
    expect(parseRouteAnswer(hex(KERNEL.resolved4))).toEqual({
      family: 4,
      dst: '8.8.8.8/32',
      unicast: true,
      ifindexes: [2],
      protocol: 0,
      table: 254,
      onLink: false, // via 169.254.1.1
    });
    expect(parseRouteAnswer(hex(KERNEL.local4))).toMatchObject({ dst: '10.100.99.11/32', unicast: false });
  });

  it('a route on a nexthop group: its id, and the members’ devices only as compat mode expands them', () => {
    expect(parseRouteAnswer(hex(KERNEL.groupOnly4))).toEqual({
      family: 4,
      dst: '0.0.0.0/0',
      unicast: true,
      ifindexes: [],
      nexthopId: 10,
      protocol: 3,
      table: 254,
      onLink: false, // the object's gateway is not in the answer
    });
    expect(parseRouteAnswer(hex(KERNEL.groupCompat4))).toMatchObject({ ifindexes: [2, 3], nexthopId: 10 });
    expect(nexthopGroupMembers(hex(NEXTHOPS[10]!))).toEqual([1, 2]);
    expect(nexthopGroupMembers(hex(NEXTHOPS[1]!))).toBeUndefined();
    expect(parseNexthop(hex(NEXTHOPS[2]!))).toMatchObject({ id: 2, ifindex: 3, gateway: '169.254.2.1' });
    expect(
      decodeAttrs(Buffer.concat(getNexthopBody(10)), 8)
        .get(NHA.ID)
        ?.readUInt32LE(0),
    ).toBe(10);
  });
});

/** A socket that answers from the recorded kernel messages; `fail` maps an op to the errno it gets. */
function replay(answers: { fib: string; resolved?: string }, fail: Record<string, string> = {}) {
  const ops: string[] = [];
  const send = async (req: Request): Promise<RawMessage[]> => {
    const op = opText(req.op);
    ops.push(op);
    const errno = fail[op];
    if (errno !== undefined) throw new NetlinkError(errno, op);
    const body = Buffer.concat(req.body);
    const msg = (type: number, payload: string) => [
      { type, flags: 0, seq: 1, pid: 0, payload: hex(payload) },
    ];
    if (req.type === RTM.GETNEXTHOP) return msg(RTM.NEWNEXTHOP, NEXTHOPS[body.readUInt32LE(12)]!);
    const fib = (body.readUInt32LE(8) & RTM_F_FIB_MATCH) !== 0;
    return msg(RTM.NEWROUTE, fib ? answers.fib : answers.resolved!);
  };
  return { send, ops };
}

describe('routeTo', () => {
  it('an ECMP default route: both devices from one request', async () => {
    const r = replay({ fib: KERNEL.fibmatch4 });
    expect(await routeTo(r.send, '8.8.8.8')).toEqual({ family: 4, dst: '0.0.0.0/0', ifindexes: [2, 3] });
    expect(r.ops).toEqual(['RTM_GETROUTE fibmatch 8.8.8.8']);
  });

  it('a nexthop group shown by id only: its members are read one by one', async () => {
    const r = replay({ fib: KERNEL.groupOnly4 });
    expect(await routeTo(r.send, '8.8.8.8')).toEqual({ family: 4, dst: '0.0.0.0/0', ifindexes: [2, 3] });
    expect(r.ops).toEqual([
      'RTM_GETROUTE fibmatch 8.8.8.8',
      'RTM_GETNEXTHOP id 10',
      'RTM_GETNEXTHOP id 1',
      'RTM_GETNEXTHOP id 2',
    ]);
  });

  it('its object gone meanwhile: the resolved answer’s device', async () => {
    const r = replay(
      { fib: KERNEL.groupOnly4, resolved: KERNEL.resolved4 },
      { 'RTM_GETNEXTHOP id 10': 'ENOENT' },
    );
    expect(await routeTo(r.send, '8.8.8.8')).toEqual({ family: 4, dst: '0.0.0.0/0', ifindexes: [2] });
  });

  it('no route, unreachable, prohibit, blackhole, local: none; other failures are thrown', async () => {
    for (const errno of ['ENETUNREACH', 'EHOSTUNREACH', 'EACCES', 'EINVAL']) {
      const r = replay({ fib: KERNEL.fibmatch4 }, { 'RTM_GETROUTE fibmatch 8.8.8.8': errno });
      expect(await routeTo(r.send, '8.8.8.8'), errno).toBeUndefined();
    }
    expect(await routeTo(replay({ fib: KERNEL.local4 }).send, '10.100.99.11')).toBeUndefined();
    const broken = replay({ fib: KERNEL.fibmatch4 }, { 'RTM_GETROUTE fibmatch 8.8.8.8': 'ENOBUFS' });
    await expect(routeTo(broken.send, '8.8.8.8')).rejects.toThrow(NetlinkError);
  });
});

describe('keyHolder', () => {
  it('the key’s own route: its protocol and table; a shorter match: free; a longer one: unknown', async () => {
    const local = replay({ fib: KERNEL.local4 });
    expect(await keyHolder(local.send, '10.100.99.11/32')).toEqual({
      kind: 'route',
      protocol: 2,
      table: 254,
    });
    expect(local.ops).toEqual(['RTM_GETROUTE fibmatch 10.100.99.11']);
    expect(await keyHolder(replay({ fib: KERNEL.fibmatch4 }).send, '10.244.1.0/24')).toEqual({
      kind: 'free',
    });
    expect(await keyHolder(replay({ fib: KERNEL.local4 }).send, '10.100.99.0/24')).toEqual({
      kind: 'unknown',
      why: '10.100.99.11/32 answers for 10.100.99.0',
    });
    // The key asked about in another table than the one the lookup answered from (a policy rule).
    expect(await keyHolder(replay({ fib: KERNEL.fibmatch4 }).send, '10.244.1.0/24', 100)).toEqual({
      kind: 'unknown',
      why: '0.0.0.0/0 of table 254 answers for 10.244.1.0',
    });
  });

  it('no route at all: free; a blackhole, unreachable or prohibit answer: unknown; other failures thrown', async () => {
    const failing = (errno: string) =>
      replay({ fib: KERNEL.fibmatch4 }, { 'RTM_GETROUTE fibmatch 10.244.1.0': errno });
    expect(await keyHolder(failing('ENETUNREACH').send, '10.244.1.0/24')).toEqual({ kind: 'free' });
    for (const errno of ['EHOSTUNREACH', 'EACCES', 'EINVAL']) {
      expect(await keyHolder(failing(errno).send, '10.244.1.0/24'), errno).toEqual({
        kind: 'unknown',
        why: `the lookup of 10.244.1.0 answered ${errno}`,
      });
    }
    await expect(keyHolder(failing('ENOBUFS').send, '10.244.1.0/24')).rejects.toThrow(NetlinkError);
  });
});
