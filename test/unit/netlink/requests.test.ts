import { describe, expect, it } from 'vitest';
import type { SetUpStep } from '../../../pkg/datapath/ports.ts';
import { NLM_F } from '../../../pkg/netlink/constants.ts';
import { ExistsError, LinkNotFoundError, NetlinkError, opText } from '../../../pkg/netlink/errors.ts';
import {
  deleteNexthopRequest,
  deleteRouteRequest,
  firstSetUpFailure,
  nexthopRequest,
  routeRequest,
  setUpOutcomes,
  setUpRequest,
} from '../../../pkg/netlink/requests.ts';

const route = { family: 4, dst: '0.0.0.0/0', gateway: '169.254.1.1', ifindex: 2, onlink: true } as const;
const steps: SetUpStep[] = [
  { kind: 'up', index: 2 },
  { kind: 'address', address: { family: 4, ifindex: 2, address: '10.244.1.5', prefixLen: 32 } },
  { kind: 'route', route },
  { kind: 'route', route, keepExisting: true },
];

describe('setUp requests', () => {
  it("a prepared pair's rename and MTU go in one RTM_NEWLINK, a link goes down in another", () => {
    const rename = setUpRequest({ kind: 'link', index: 7, name: 'eth0', mtu: 1400 });
    expect(rename.op).toBe('RTM_NEWLINK #7 name eth0 mtu 1400');
    expect(rename.flags).toBe(0);
    const body = Buffer.concat(rename.body);
    expect(body.readInt32LE(4)).toBe(7); // ifi_index
    expect(body.readUInt32LE(12)).toBe(0); // ifi_change: no flag changes
    expect(body.includes(Buffer.from('eth0\0'))).toBe(true);
    const down = setUpRequest({ kind: 'down', index: 7 });
    expect(down.op).toBe('RTM_NEWLINK #7 down');
    const d = Buffer.concat(down.body);
    expect([d.readUInt32LE(8), d.readUInt32LE(12)]).toEqual([0, 1]); // IFF_UP cleared
  });

  it('creates or replaces a route, and creates a keepExisting route only where its destination is free', () => {
    const flags = steps.map((s) => setUpRequest(s).flags);
    expect(flags).toEqual([
      0,
      NLM_F.CREATE | NLM_F.EXCL,
      NLM_F.CREATE | NLM_F.REPLACE,
      NLM_F.CREATE | NLM_F.EXCL,
    ]);
  });

  it('an existing address and a keepExisting route whose destination is taken are kept, not failures', () => {
    const results = [undefined, new ExistsError('addr'), undefined, new ExistsError('kept')];
    expect(firstSetUpFailure(steps, results)).toBeUndefined();
    expect(setUpOutcomes(steps, results)).toEqual(['done', 'kept', 'done', 'kept']);
    // Steps the kernel answered nothing for (only the last asks for an ACK) succeeded.
    expect(setUpOutcomes(steps, new Array(steps.length))).toEqual(['done', 'done', 'done', 'done']);
  });

  it('throws the first failure: EEXIST of a route that replaces, or any other error of a keepExisting route', () => {
    const replaced = new ExistsError('replaced');
    expect(firstSetUpFailure(steps, [undefined, undefined, replaced, undefined])).toBe(replaced);
    const gone = new LinkNotFoundError('kept route');
    expect(() => setUpOutcomes(steps, [undefined, undefined, undefined, gone])).toThrow(gone);
    const first = new NetlinkError('EINVAL', 'up');
    expect(() => setUpOutcomes(steps, [first, undefined, undefined, gone])).toThrow(first);
  });
});

describe('request names', () => {
  it('the hot route and nexthop requests name themselves only when asked (an error), as the eager ones do', () => {
    const peer = { family: 4, dst: '10.244.7.0/24', gateway: '10.0.0.7', ifindex: 3, table: 100 } as const;
    expect(opText(routeRequest(peer, 0, 42).op)).toBe(
      'RTM_NEWROUTE 10.244.7.0/24 via 10.0.0.7 dev #3 table 100 nhid 42',
    );
    expect(opText(nexthopRequest(42, peer, 0).op)).toBe(
      'RTM_NEWNEXTHOP id 42 via 10.0.0.7 dev #3 for 10.244.7.0/24',
    );
    // A key-only delete is named after the whole route it removes.
    expect(opText(deleteRouteRequest({ family: 4, dst: peer.dst, table: 100 }, peer).op)).toBe(
      'RTM_DELROUTE 10.244.7.0/24 via 10.0.0.7 dev #3 table 100',
    );
    expect(opText(deleteNexthopRequest(42).op)).toBe('RTM_DELNEXTHOP id 42');
    expect(opText('RTM_GETLINK dump')).toBe('RTM_GETLINK dump');
  });
});
