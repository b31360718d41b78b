import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { WATCHED_LINKS, WATCHED_ROUTES, watchKernel } from '../../../pkg/agent/kernel-watch.ts';
import type { NetlinkEventsPort, RouteEvent, RouteInfo } from '../../../pkg/datapath/ports.ts';
import { capturedLog } from '../../support/captured-log.ts';

const MAIN = 254;

/** The watch over a fake events port: `route()` delivers a route notification as the kernel would. */
function setup(
  concerned: (r: RouteInfo) => boolean,
  log = pino({ level: 'silent' }),
  deletedItself?: (index: number) => boolean,
) {
  let onRoute: ((ev: RouteEvent) => void) | undefined;
  let onLink: Parameters<NetlinkEventsPort['subscribeLinkEvents']>[0] | undefined;
  const events: NetlinkEventsPort = {
    subscribeRouteEvents: (cb) => {
      onRoute = cb;
      return { close: () => {} };
    },
    subscribeLinkEvents: (cb) => {
      onLink = cb;
      return { close: () => {} };
    },
  };
  let passes = 0;
  let urgent = 0;
  const asked: RouteInfo[] = [];
  const podRoutes: string[] = [];
  const vethsLost: string[] = [];
  const subs = watchKernel({
    events,
    masq: undefined,
    routesNexthop: () => false,
    isOwnDeletion: () => false,
    concernsPrefix: (r) => {
      asked.push(r);
      return concerned(r);
    },
    markDirty: (_why, endsBackoff) => {
      passes++;
      if (endsBackoff === true) urgent++;
    },
    podRouteDeleted: (r) => podRoutes.push(r.dst),
    podVethLost: (name) => vethsLost.push(name),
    ...(deletedItself === undefined ? {} : { deletedItself }),
    log,
  });
  const route = (type: 'add' | 'delete', r: Partial<RouteInfo>, table = MAIN): void =>
    onRoute!({ type, table, route: { family: 4, dst: '10.244.2.0/24', ...r } });
  /** A route the parser cannot express (multipath, prohibit...): its key and protocol only. */
  const unreadable = (type: 'add' | 'delete', dst: string, protocol: number): void =>
    onRoute!({ type, table: MAIN, route: { family: 4, dst, protocol, unreadable: true } });
  const settled = (): Promise<void> => new Promise((r) => setTimeout(r, 60));
  /** An IPv6 route of ours (protocol 126) through a device. */
  const onRoute6 = (type: 'add' | 'delete', r: Partial<RouteInfo>): void =>
    onRoute!({ type, table: MAIN, route: { family: 6, dst: '::/0', protocol: 126, ...r } });
  return {
    route,
    onRoute6,
    link: (ev: Parameters<NonNullable<typeof onLink>>[0]) => onLink!(ev),
    unreadable,
    settled,
    passes: () => passes,
    urgent: () => urgent,
    asked,
    podRoutes,
    vethsLost,
    close: () => {
      for (const s of subs) s.close();
    },
  };
}

describe('watchKernel: links', () => {
  it('a VXLAN device of ours deleted, or link notifications lost, asks for a full pass; another link going does not', async () => {
    const t = setup(() => false);
    const link = (name: string) => ({ index: 7, name, kind: undefined, mac: '', mtu: 1500, up: true });
    t.link({ type: 'delete', link: link('eth1') });
    await t.settled();
    expect(t.passes()).toBe(0);
    t.link({ type: 'delete', link: link('trellis.v4') });
    await t.settled();
    expect(t.passes()).toBe(1);
    t.link({ type: 'overflow' });
    await t.settled();
    expect(t.passes()).toBe(2);
    t.close();
  });

  it("a pod's host veth deleted or set down goes to podVethLost, not to a full pass; other changes of it go nowhere", async () => {
    const t = setup(() => false);
    const veth = { index: 9, name: 'trl35da632a557a', kind: 'veth', mac: '', mtu: 1500, up: false };
    t.link({ type: 'add', link: veth });
    t.link({ type: 'add', link: { ...veth, name: 'eth0' }, wentDown: true });
    t.link({ type: 'add', link: veth, wentDown: true });
    t.link({ type: 'delete', link: veth });
    await t.settled();
    expect(t.vethsLost).toEqual(['trl35da632a557a', 'trl35da632a557a']);
    expect(t.passes()).toBe(0);
    expect(WATCHED_LINKS.changes).toEqual(['delete', 'down']);
    t.close();
  });
});

describe('watchKernel: routes someone else writes', () => {
  it('a static route taking or leaving a prefix of ours asks for one full pass; elsewhere, nothing', async () => {
    const t = setup((r) => r.dst === '10.244.2.0/24');
    t.route('add', { gateway: '10.0.0.99', protocol: 4 });
    t.route('delete', { gateway: '10.0.0.99', protocol: 4 });
    await t.settled();
    expect(t.passes()).toBe(1); // the two folded into one by the debounce
    t.route('add', { dst: '192.168.7.0/24', gateway: '10.0.0.99', protocol: 3 });
    await t.settled();
    expect(t.passes()).toBe(1);
    // The table travels with the question: concernsPrefix decides on it.
    expect(t.asked.map((r) => r.table)).toEqual([MAIN, MAIN, MAIN]);
    t.close();
  });

  it('a multipath or prohibit route (key only) taking or leaving a prefix of ours asks too; elsewhere, nothing', async () => {
    const t = setup((r) => r.dst === '10.244.2.0/24');
    t.unreadable('add', '10.244.2.0/24', 4);
    await t.settled();
    expect(t.passes()).toBe(1);
    t.unreadable('delete', '10.244.2.0/24', 4);
    await t.settled();
    expect(t.passes()).toBe(2);
    t.unreadable('add', '192.168.7.0/24', 3);
    await t.settled();
    expect(t.passes()).toBe(2);
    // Never mistaken for a connected subnet (the kernel's protocol, no type): not ours, no question.
    t.unreadable('add', '10.9.0.0/16', 2);
    await t.settled();
    expect(t.passes()).toBe(2);
    expect(t.asked.map((r) => [r.dst, r.table])).toEqual([
      ['10.244.2.0/24', MAIN],
      ['10.244.2.0/24', MAIN],
      ['192.168.7.0/24', MAIN],
    ]);
    t.close();
  });

  it('our own route additions never ask (only deletions of ours, by someone else, do)', async () => {
    const t = setup(() => true);
    t.route('add', { gateway: '10.0.0.3', protocol: 126 });
    await t.settled();
    expect(t.passes()).toBe(0);
    expect(t.asked).toEqual([]);
    t.route('delete', { gateway: '10.0.0.3', protocol: 126 });
    await t.settled();
    expect(t.passes()).toBe(1);
    t.close();
  });

  it("what someone else took away is put back at once, even during a backoff; another's route taking a prefix waits for it", async () => {
    const t = setup(() => true);
    t.route('add', { dst: '10.244.9.0/24', gateway: '10.0.0.9', protocol: 4 });
    await t.settled();
    expect([t.passes(), t.urgent()]).toEqual([1, 0]);
    t.route('delete', { dst: '10.244.2.0/24', gateway: '10.0.0.2', protocol: 126 });
    await t.settled();
    expect([t.passes(), t.urgent()]).toEqual([2, 1]);
    t.close();
  });

  it('routes of ours deleted by someone else are warned about once a burst, with how many', async () => {
    const { log, lines } = capturedLog();
    const t = setup(() => true, log);
    for (let i = 2; i < 10; i++)
      t.route('delete', { dst: `10.244.${i}.0/24`, gateway: `10.0.0.${i}`, protocol: 126 });
    await t.settled();
    const warned = lines.filter((l) => l.level === 'warn');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({
      msg: 'routes of ours were deleted by someone else (or went with their link); putting them back',
      count: 8,
      routes: ['10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24', '10.244.6.0/24'],
    });
    t.close();
  });

  it('routes that went with a VXLAN device the overlay deleted itself are neither warned about nor urgent', async () => {
    const { log, lines } = capturedLog();
    const t = setup(
      () => true,
      log,
      (index) => index === 9,
    );
    for (let i = 2; i < 6; i++)
      t.onRoute6('delete', { dst: `fd00:10:244:${i}::/64`, gateway: `fd00:10:244:${i}::`, ifindex: 9 });
    await t.settled();
    expect([t.passes(), t.urgent()]).toEqual([1, 0]);
    expect(lines.filter((l) => l.level === 'warn')).toEqual([]);
    // The same deletion on a device someone else deleted: put back at once, and said.
    t.onRoute6('delete', { dst: 'fd00:10:244:7::/64', gateway: 'fd00:10:244:7::', ifindex: 8 });
    await t.settled();
    expect([t.passes(), t.urgent()]).toEqual([2, 1]);
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    t.close();
  });

  it("an on-link prefix appearing or going (an RA's /64, a DHCP client's /24: no gateway) asks for a full pass; a default route does not", async () => {
    const t = setup(() => false);
    t.route('add', { family: 6, dst: '2001:db8:5::/64', protocol: 9 });
    await t.settled();
    expect(t.passes()).toBe(1);
    t.route('delete', { dst: '192.168.90.0/24', protocol: 16 });
    await t.settled();
    expect(t.passes()).toBe(2);
    t.route('add', { family: 6, dst: '::/0', gateway: 'fe80::1', protocol: 9 });
    t.route('add', { family: 6, dst: '::/0', protocol: 9 });
    t.route('add', { dst: '0.0.0.0/0', protocol: 4 });
    await t.settled();
    expect(t.passes()).toBe(2);
    t.close();
  });

  it("asks the kernel for boot, static and dhcp routes of the main table, not routing daemons' (the kernel keeping to it: netlink/watched-routes.test.ts)", () => {
    const foreign = WATCHED_ROUTES.routes.filter((r) => r.protocol !== 2 && r.protocol !== 126);
    expect(foreign.map((r) => [r.protocol, r.table, r.change])).toEqual([
      [9, MAIN, 'any'],
      [3, MAIN, 'any'],
      [4, MAIN, 'any'],
      [16, MAIN, 'any'],
    ]);
  });
});

describe('watchKernel: pod host routes', () => {
  it('a deleted route of ours without a gateway goes to podRouteDeleted, not to a full pass; added ones go nowhere', async () => {
    const t = setup(() => false);
    t.route('delete', { dst: '10.244.1.5/32', ifindex: 9, scope: 'link', protocol: 126 });
    t.route('add', { dst: '10.244.1.6/32', ifindex: 9, scope: 'link', protocol: 126 });
    // Someone else's route with a gateway (not ours) is not a pod route of ours.
    t.route('delete', { dst: '10.244.1.7/32', gateway: '10.0.0.3', protocol: 4 });
    await t.settled();
    expect(t.podRoutes).toEqual(['10.244.1.5/32']);
    expect(t.passes()).toBe(0);
    // A peer route of ours (a gateway) deleted is a full pass, as before.
    t.route('delete', { dst: '10.244.2.0/24', gateway: '10.0.0.2', protocol: 126 });
    await t.settled();
    expect(t.passes()).toBe(1);
    expect(t.podRoutes).toHaveLength(1);
    t.close();
  });
});
