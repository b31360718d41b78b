import { describe, expect, it } from 'vitest';
import type { RouteInfo } from '../../../pkg/datapath/ports.ts';
import {
  canonicalPrefix,
  NEXTHOP_ID_BASE,
  NexthopBook,
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

const routeA = peerRoute;
const routeB: RouteInfo = { ...peerRoute, dst: '10.244.2.0/24', gateway: '192.168.1.3' };

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
  it('spell a prefix as the kernel dumps it, whichever spelling came in', () => {
    expect(canonicalPrefix('10.244.2.0/24')).toBe('10.244.2.0/24');
    expect(canonicalPrefix('10.244.2.0/024')).toBe('10.244.2.0/24');
    expect(canonicalPrefix('10.244.2.5')).toBe('10.244.2.5/32');
    expect(canonicalPrefix('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(canonicalPrefix('::ffff:10.0.0.0/120')).toBe('::ffff:10.0.0.0/120');
    expect(() => canonicalPrefix('10.244.2.0/33')).toThrow(TypeError);
    expect(() => canonicalPrefix('010.244.2.0/24')).toThrow(TypeError);
  });

  it('are the kernel key: family, canonical prefix, table (main spelled out), metric; not the gateway', () => {
    expect(canonicalPrefix('fd00:0:0::/64')).toBe('fd00::/64');
    const book = new NexthopBook(P);
    const id = book.allocate();
    const v6: RouteInfo = { family: 6, dst: 'fd00:0:0::/64', gateway: 'fd00::2', ifindex: 2, protocol: P };
    book.bind(v6, id);
    expect(book.current({ ...v6, dst: 'fd00::/64', table: 254 })).toBe(id);
    expect(book.current({ ...v6, gateway: 'fd00::3' })).toBe(id); // a replace keeps the route's object
    expect(book.current({ ...v6, table: 100 })).toBeUndefined();
    expect(book.current({ ...v6, metric: 10 })).toBeUndefined();
    expect(book.current({ ...v6, family: 4, dst: '0.0.0.0/0' })).toBeUndefined();
    // The kernel stores an IPv6 route written without a metric as metric 1024, and dumps it so.
    expect(book.current({ ...v6, metric: 1024 })).toBe(id);
    expect(book.current({ ...peerRoute, metric: 0 })).toBeUndefined();
    book.bind(peerRoute, id + 2);
    expect(book.current({ ...peerRoute, metric: 0 })).toBe(id + 2);
    book.bind({ ...v6, metric: 10 }, id + 1);
    expect(book.current({ ...v6, metric: 10 })).toBe(id + 1);
    expect(book.current(v6)).toBe(id);
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
    book.learnRoute(routeA, 7);
    book.learnRoute(routeB, 8);
    expect(book.current(routeA)).toBe(7);
    expect(book.current(routeB)).toBeUndefined();
  });

  it('a new dump drops what points at objects that are gone or no longer ours', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: 7, protocol: P },
      { id: 9, protocol: P },
    ]);
    book.learnRoute(routeA, 7);
    book.learnRoute(routeB, 9);
    book.learnNexthops([
      { id: 7, protocol: 4 },
      { id: 9, protocol: P },
    ]);
    expect(book.current(routeA)).toBeUndefined();
    expect(book.current(routeB)).toBe(9);
  });

  it('an id refused as taken is no orphan of ours to delete; one whose deletion the kernel refused is one again', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([]);
    const refused = book.allocate();
    book.notOurs(refused); // another program's object holds it
    const orphan = book.allocate();
    book.dropped([orphan]); // forgotten before its deletion...
    book.stillOurs([orphan]); // ...which the kernel refused: the next prune tries again
    expect(book.orphans(new Set())).toEqual([orphan]);
    expect(book.isOwned(refused)).toBe(false);
  });

  it('orphans are our objects no route references; dropping them forgets their routes', () => {
    const book = new NexthopBook(P);
    book.learnNexthops([
      { id: 7, protocol: P },
      { id: 8, protocol: 4 },
      { id: 9, protocol: P },
    ]);
    book.learnRoute(routeA, 7);
    book.learnRoute(routeB, 9);
    expect(book.orphans(new Set([9, 8]))).toEqual([7]);
    book.dropped([7]);
    expect(book.current(routeA)).toBeUndefined();
    expect(book.isOwned(7)).toBe(false);
    expect(book.orphans(new Set([9]))).toEqual([]);
  });

  it('unbind forgets a route and returns its object', () => {
    const book = new NexthopBook(P);
    const id = book.allocate();
    book.bind(routeA, id);
    expect(book.unbind(routeA)).toBe(id);
    expect(book.unbind(routeA)).toBeUndefined();
  });
});
