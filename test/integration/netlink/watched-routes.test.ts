import { afterAll, describe, expect, it } from 'vitest';
import { WATCHED_LINKS, WATCHED_ROUTES } from '../../../pkg/agent/kernel-watch.ts';
import type { LinkEvent, RouteEvent } from '../../../pkg/datapath/ports.ts';
import { createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import { ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { sleep } from '../faults/support.ts';

/**
 * The kernel-side filter the agent's watch subscribes with (WATCHED_ROUTES, WATCHED_LINKS), on a real
 * kernel: the main table's boot, static and dhcp routes, on-link routes from the kernel and from router
 * advertisements, and deletions of our own routes reach the agent; routing daemons' routes (bird, zebra,
 * bgp: they rarely touch a pod CIDR, and churn), the local table and our own additions do not.
 */
const title = "the agent's kernel watch filter (real kernel, test namespace)";
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  afterAll(() => pool.cleanup());

  it('keeps boot, static, dhcp, kernel and ra routes of the main table and our deletions; drops daemons, our additions, the local table', async () => {
    const ns = pool.add('watchf', { loUp: true });
    ip(ns.name, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    ip(ns.name, 'link', 'set', 'v0', 'up');
    ip(ns.name, 'link', 'set', 'v1', 'up');
    const routes: RouteEvent[] = [];
    const links: LinkEvent[] = [];
    const subs = withNetns(ns.path, () => {
      const events = createNetlinkEvents();
      return [
        events.subscribeRouteEvents((e) => routes.push(e), WATCHED_ROUTES),
        events.subscribeLinkEvents((e) => links.push(e), WATCHED_LINKS),
      ];
    });
    try {
      const add = (dst: string, proto: string) =>
        ip(ns.name, 'route', 'add', 'blackhole', dst, 'proto', proto);
      add('10.70.1.0/24', 'boot');
      add('10.70.2.0/24', 'static');
      add('10.70.3.0/24', 'dhcp');
      add('10.70.4.0/24', 'bird');
      add('10.70.5.0/24', 'zebra');
      add('10.70.6.0/24', 'bgp');
      add('10.70.7.0/24', '126'); // ours, added: dropped
      ip(ns.name, 'addr', 'add', '10.70.8.1/24', 'dev', 'v0'); // kernel's on-link route (and local-table ones)
      ip(ns.name, 'route', 'add', '10.70.9.0/24', 'dev', 'v0', 'proto', 'ra');
      ip(ns.name, 'link', 'add', 'gone0', 'type', 'veth', 'peer', 'name', 'gone1');
      ip(ns.name, 'link', 'del', 'gone0'); // a deletion: kept (the watch looks at its name)
      ip(ns.name, 'route', 'del', '10.70.7.0/24'); // ours, deleted by someone else: kept, and last
      for (let i = 0; !routes.some((e) => e.type === 'delete' && e.route.dst === '10.70.7.0/24'); i++) {
        expect(i, 'the deletion of ours arrives').toBeLessThan(200);
        await sleep(10);
      }
      await sleep(100);
      const seen = routes.map((e) =>
        e.type === 'add' || e.type === 'delete' ? `${e.type} ${e.route.dst} ${e.route.protocol}` : e.type,
      );
      expect(seen).toEqual([
        'add 10.70.1.0/24 3',
        'add 10.70.2.0/24 4',
        'add 10.70.3.0/24 16',
        'add 10.70.8.0/24 2',
        'add 10.70.9.0/24 9',
        'delete 10.70.7.0/24 126',
      ]);
      expect(links.map((e) => (e.type === 'overflow' ? e.type : `${e.type} ${e.link.name}`))).toEqual(
        expect.arrayContaining(['delete gone0']),
      );
      expect(links.every((e) => e.type === 'delete')).toBe(true);
    } finally {
      for (const s of subs) s.close();
    }
  });
});
