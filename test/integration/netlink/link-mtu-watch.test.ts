import { afterEach, describe, expect, it } from 'vitest';
import { LinkMtuWatch } from '../../../pkg/agent/link-mtu-watch.ts';
import { createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * The uplink's MTU watch against the kernel's own link notifications. A pass started for another
 * reason can read a new MTU before the notification is handled; the notification then finds the MTU
 * it was told already, and the change went unsaid (`MTU of the link the pod MTU comes from changed`
 * missing from the log, seen in CI). With `passReadsToo` the pass's own reading says it.
 */
describe.skipIf(netnsSkipReason !== undefined)('LinkMtuWatch and the kernel', () => {
  const pool = new NetnsPool();
  const watches: LinkMtuWatch[] = [];
  afterEach(() => {
    for (const w of watches.splice(0)) w.close();
    pool.cleanup();
  });

  const settle = () => new Promise((r) => setTimeout(r, 200));

  it('a change the pass read first is said once (passReadsToo), not swallowed; a notification alone still says one; a stale read after a notification says nothing; a new set of links while one waits: read again', async () => {
    const ns = pool.add('mtuw');
    ip(ns.name, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    ip(ns.name, 'link', 'set', 'v0', 'up');
    const index = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', 'v0')[0]!.ifindex;
    const peerIndex = ipJson<{ ifindex: number }[]>(ns.name, 'link', 'show', 'dev', 'v1')[0]!.ifindex;
    const link = (mtu: number) => ({ index, mtu, name: 'v0' });
    const changes = (passReadsToo: boolean) => {
      const seen: unknown[] = [];
      const watch = new LinkMtuWatch(createNetlinkEvents(), (c) => seen.push(c), { passReadsToo });
      watches.push(watch);
      withNetns(ns.path, () => watch.follow([link(1500)]));
      return { seen, watch };
    };

    for (const passReadsToo of [true, false]) {
      ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1500');
      const { seen, watch } = changes(passReadsToo);
      await settle();
      // The kernel has 1400 and its notification waits in the socket while the pass reads 1400.
      ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1400');
      withNetns(ns.path, () => watch.follow([link(1400)]));
      await settle();
      expect(seen, `passReadsToo ${passReadsToo}`).toEqual(
        passReadsToo ? [{ link: link(1400), was: 1500 }] : [],
      );
      // No pass first: the notification says it.
      ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1300');
      await settle();
      expect(seen.at(-1)).toMatchObject({ link: { index, mtu: 1300 }, was: 1400 });
      if (passReadsToo) {
        // A pass that read before that notification (1400, stale) says nothing, and the next change
        // is judged against the kernel's 1300.
        const said = seen.length;
        withNetns(ns.path, () => watch.follow([link(1400)]));
        await settle();
        expect(seen.length).toBe(said);
        ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1400');
        await settle();
        expect(seen.slice(said)).toEqual([
          expect.objectContaining({ link: expect.objectContaining({ mtu: 1400 }), was: 1300 }),
        ]);
        // A notification handled (1300), a later change (1200) waiting in the socket, and the pass
        // reading 1200 while it follows another set of links: a pass is asked for to read again, and
        // the old socket, open for the handover, still delivers the waiting notification.
        ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1300');
        await settle();
        const before = seen.length;
        ip(ns.name, 'link', 'set', 'dev', 'v0', 'mtu', '1200');
        withNetns(ns.path, () => watch.follow([link(1200), { index: peerIndex, mtu: 1500, name: 'v1' }]));
        await settle();
        expect(seen.slice(before)).toEqual([
          { overflow: true },
          expect.objectContaining({ link: expect.objectContaining({ mtu: 1200 }), was: 1300 }),
        ]);
      }
      watch.close();
    }
  });
});
