import { describe, expect, it } from 'vitest';
import type { RouteInfo } from '../../../pkg/datapath/ports.ts';
import {
  NEXTHOP_ID_BASE,
  NexthopBook,
  nexthopRouteKey,
  routeKeyOf,
  usesNexthop,
} from '../../../pkg/netlink/nexthop-book.ts';

const P = 126;
const peerRoute: RouteInfo = {
  family: 4,
  dst: '10.244.1.0/24',
  gateway: '192.168.1.2',
  ifindex: 2,
  protocol: P,
};

describe('usesNexthop: which routes get a nexthop object of their own', () => {
  it('our unicast gateway routes on a known device', () => {
    expect(usesNexthop(peerRoute, P)).toBe(true);
    expect(usesNexthop({ ...peerRoute, type: 'unicast', onlink: true }, P)).toBe(true);
    expect(usesNexthop({ ...peerRoute, family: 6, dst: 'fd00:1::/64', gateway: 'fd00::2' }, P)).toBe(true);
  });

  it('not someone else’s routes, blackholes, device routes, or a gateway without a device', () => {
    expect(usesNexthop({ ...peerRoute, protocol: 4 }, P)).toBe(false);
    expect(usesNexthop({ ...peerRoute, protocol: undefined }, P)).toBe(false);
    expect(usesNexthop({ family: 4, dst: '10.244.0.0/24', type: 'blackhole', protocol: P }, P)).toBe(false);
    expect(usesNexthop({ family: 4, dst: '10.244.0.5/32', ifindex: 7, scope: 'link', protocol: P }, P)).toBe(
      false,
    );
    const { ifindex: _, ...noDevice } = peerRoute;
    expect(usesNexthop(noDevice, P)).toBe(false);
    expect(usesNexthop({ ...peerRoute, gateway: '' }, P)).toBe(false);
  });
});

describe('route keys', () => {
  it('are the kernel key: family, canonical prefix, table (main spelled out), metric', () => {
    expect(nexthopRouteKey(6, 'fd00:0:0::/64', undefined)).toBe(nexthopRouteKey(6, 'fd00::/64', 254));
    expect(routeKeyOf(peerRoute)).toBe('4 10.244.1.0/24 254 0');
    expect(routeKeyOf({ ...peerRoute, table: 100 })).not.toBe(routeKeyOf(peerRoute));
    expect(routeKeyOf({ ...peerRoute, metric: 10 })).not.toBe(routeKeyOf(peerRoute));
    // The gateway is not part of the key: a replace keeps the route's object.
    expect(routeKeyOf({ ...peerRoute, gateway: '192.168.1.3' })).toBe(routeKeyOf(peerRoute));
  });
});

describe('NexthopBook', () => {
  it('hands out ids of its own range, never one the kernel holds or one handed out before', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: NEXTHOP_ID_BASE, protocol: 4 },
      { id: NEXTHOP_ID_BASE + 2, protocol: P },
    ]);
    expect([book.allocate(), book.allocate(), book.allocate()]).toEqual([
      NEXTHOP_ID_BASE + 1,
      NEXTHOP_ID_BASE + 3,
      NEXTHOP_ID_BASE + 4,
    ]);
    expect(book.isOwned(NEXTHOP_ID_BASE + 1)).toBe(true);
    expect(book.isOwned(NEXTHOP_ID_BASE)).toBe(false);
  });

  it('remembers a dumped route’s object only when the object is ours', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: 7, protocol: P },
      { id: 8, protocol: 4 },
    ]);
    book.learnRoute('a', 7);
    book.learnRoute('b', 8);
    expect(book.current('a')).toBe(7);
    expect(book.current('b')).toBeUndefined();
  });

  it('a new dump drops what points at objects that are gone or no longer ours', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: 7, protocol: P },
      { id: 9, protocol: P },
    ]);
    book.learnRoute('a', 7);
    book.learnRoute('b', 9);
    book.learnNexthops([
      { id: 7, protocol: 4 },
      { id: 9, protocol: P },
    ]);
    expect(book.current('a')).toBeUndefined();
    expect(book.current('b')).toBe(9);
  });

  it('orphans are our objects no route references; dropping them forgets their routes', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: 7, protocol: P },
      { id: 8, protocol: 4 },
      { id: 9, protocol: P },
    ]);
    book.learnRoute('a', 7);
    book.learnRoute('b', 9);
    expect(book.orphans(new Set([9, 8]))).toEqual([7]);
    book.dropped([7]);
    expect(book.current('a')).toBeUndefined();
    expect(book.isOwned(7)).toBe(false);
    expect(book.orphans(new Set([9]))).toEqual([]);
  });

  it('unbind forgets a route and returns its object', () => {
    const book = new NexthopBook(P);
    const id = book.allocate();
    book.bind('a', id);
    expect(book.unbind('a')).toBe(id);
    expect(book.unbind('a')).toBeUndefined();
  });
});
