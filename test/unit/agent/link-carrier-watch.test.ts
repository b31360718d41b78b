import { describe, expect, it, vi } from 'vitest';
import { type LinkCarrierChange, LinkCarrierWatch } from '../../../pkg/agent/link-carrier-watch.ts';
import { HANDOVER_MS } from '../../../pkg/agent/link-subscription.ts';
import type {
  LinkEvent,
  LinkEventInterest,
  LinkInfo,
  NetlinkEventsPort,
} from '../../../pkg/datapath/ports.ts';
import { gatewayDevices } from '../../../pkg/routes/local-links.ts';

/** The watch over a fake events port that records each subscription's interest, as the kernel filter gets it. */
function setup(readLink?: (index: number) => Promise<LinkInfo | undefined>) {
  const subscriptions: { interest: LinkEventInterest | undefined; closed: boolean }[] = [];
  let deliver: ((ev: LinkEvent) => void) | undefined;
  /** Each subscription's callback, by the order they were made (a replaced one may still deliver). */
  const callbacks: ((ev: LinkEvent) => void)[] = [];
  const events: NetlinkEventsPort = {
    subscribeRouteEvents: () => ({ close: () => {} }),
    subscribeLinkEvents: (cb, interest) => {
      const sub = { interest, closed: false };
      subscriptions.push(sub);
      callbacks.push(cb);
      deliver = cb;
      return {
        close: () => {
          sub.closed = true;
        },
      };
    },
  };
  const changes: LinkCarrierChange[] = [];
  const watch = new LinkCarrierWatch(events, (c) => changes.push(c), readLink);
  const link = (index: number, up: boolean, carrier: boolean): LinkInfo => ({
    index,
    name: `eth${index}`,
    kind: undefined,
    mac: '02:00:00:00:00:01',
    mtu: 1500,
    up,
    ...(carrier ? { lowerUp: true as const } : {}),
  });
  return {
    watch,
    changes,
    subscriptions,
    link,
    newLink: (index: number, up: boolean, carrier: boolean) =>
      deliver!({ type: 'add', link: link(index, up, carrier) }),
    /** A notification that was waiting in subscription `n`'s socket. */
    newLinkOn: (n: number, index: number, up: boolean, carrier: boolean) =>
      callbacks[n]!({ type: 'add', link: link(index, up, carrier) }),
    delLink: (index: number) => deliver!({ type: 'delete', link: link(index, false, false) }),
    overflow: () => deliver!({ type: 'overflow' }),
  };
}

describe('LinkCarrierWatch', () => {
  it('a link followed while down reports coming up: its state is read when it is first followed', async () => {
    const reads: number[] = [];
    // 3 down when read, 4 up when read; 5 is read, but a notification comes before the answer.
    const running = new Map([
      [3, false],
      [4, true],
      [6, false],
    ]);
    let answer5: ((l: LinkInfo) => void) | undefined;
    const t = setup((index) => {
      reads.push(index);
      if (index === 5 && answer5 === undefined) return new Promise((r) => (answer5 = r));
      return Promise.resolve(t.link(index, running.get(index)!, running.get(index)!));
    });
    t.watch.follow([3, 4, 5]);
    t.newLink(5, false, false); // news before the read's answer: down
    answer5!(t.link(5, true, true)); // the older answer does not overwrite it
    await new Promise((r) => setImmediate(r));
    t.newLink(3, true, true); // was down when followed: back up is news
    t.newLink(4, true, true); // was up: an MTU or address change, nothing
    t.newLink(5, true, true);
    for (const i of [3, 4, 5]) running.set(i, true);
    // The new link is read, and the others again: the subscription was replaced (what waited in the
    // old one's socket could have changed them). Read as they were notified: nothing new.
    t.watch.follow([3, 4, 5, 6]);
    await new Promise((r) => setImmediate(r));
    expect(reads).toEqual([3, 4, 5, 6, 3, 4, 5]);
    expect(t.changes.map((c) => ('link' in c ? [c.link.index, c.running, c.was] : c))).toEqual([
      [5, false, undefined],
      [3, true, false],
      [5, true, false],
    ]);
  });

  it('after lost notifications it reads its links again: a going down it missed does not hide the coming back', async () => {
    let down = false;
    const t = setup((index) => Promise.resolve(t.link(index, !down, !down)));
    t.watch.follow([2]);
    await new Promise((r) => setImmediate(r)); // read: running
    down = true; // carrier lost, its notification among the lost ones
    t.overflow();
    await new Promise((r) => setImmediate(r)); // read again: down
    t.newLink(2, true, true); // back: news, its routes go back at once
    expect(t.changes.map((c) => ('link' in c ? [c.link.index, c.running, c.was] : c))).toEqual([
      { overflow: true },
      [2, true, false],
    ]);
  });

  it('reports a followed link losing carrier, going down and coming back, once per change of state', () => {
    const t = setup();
    t.watch.follow([2, 7]);
    expect(t.subscriptions).toEqual([
      { interest: { changes: ['add', 'delete'], links: [2, 7] }, closed: false },
    ]);
    t.newLink(2, true, true); // first word on it, running: nothing new (the pass saw it up)
    t.newLink(2, true, true); // an MTU or address change: same state, nothing
    t.newLink(2, true, false); // carrier lost
    t.newLink(2, true, false);
    t.newLink(2, false, false); // then set down: still not running, nothing new
    t.newLink(2, true, true); // back
    t.newLink(7, false, false); // first word on another, down: news
    expect(t.changes.map((c) => ('link' in c ? [c.link.index, c.running, c.was] : c))).toEqual([
      [2, false, true],
      [2, true, false],
      [7, false, undefined],
    ]);
  });

  it('ignores links it does not follow (the kernel filter is a superset), reports deletion and overflow', () => {
    const t = setup();
    t.watch.follow([2]);
    t.newLink(9, true, false);
    t.delLink(9);
    expect(t.changes).toEqual([]);
    t.delLink(2);
    t.overflow();
    expect(t.changes).toEqual([{ deleted: expect.objectContaining({ index: 2 }) }, { overflow: true }]);
    // A deleted link is no longer followed: a new link reusing the index says nothing until a pass follows it.
    t.newLink(2, false, false);
    expect(t.changes).toHaveLength(2);
  });

  it('after close(), a pass still in flight cannot subscribe again', () => {
    const t = setup();
    t.watch.follow([2]);
    t.watch.close();
    t.watch.follow([2, 3]);
    expect(t.subscriptions.map((s) => s.closed)).toEqual([true]);
  });

  it('replaces its subscription only when the set of links changes, closing the old one after a handover', () => {
    vi.useFakeTimers();
    try {
      const t = setup();
      t.watch.follow([7, 2]);
      t.watch.follow([2, 7]);
      expect(t.subscriptions).toHaveLength(1);
      t.newLink(2, true, false);
      t.watch.follow([2, 7, 11]);
      // The old one stays open a moment: notifications already queued in its socket still come.
      expect(t.subscriptions.map((s) => [s.interest?.links, s.closed])).toEqual([
        [[7, 2], false],
        [[2, 7, 11], false],
      ]);
      vi.advanceTimersByTime(HANDOVER_MS);
      expect(t.subscriptions.map((s) => s.closed)).toEqual([true, false]);
      t.newLink(2, true, false); // still known as down: nothing
      // Without a way to read the links, a replaced subscription asks a pass to read them.
      expect(t.changes.map((c) => ('link' in c ? [c.link.index, c.running, c.was] : c))).toEqual([
        [2, false, undefined],
        { overflow: true },
      ]);
      t.watch.follow([]);
      vi.advanceTimersByTime(HANDOVER_MS);
      expect(t.subscriptions.every((s) => s.closed)).toBe(true);
      t.watch.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('a link going down just before its subscription is replaced is not lost: the old one still delivers it, and the links are read again', async () => {
    let down = false;
    const t = setup((index) =>
      Promise.resolve(t.link(index, !(down && index === 2), !(down && index === 2))),
    );
    t.watch.follow([2]);
    await new Promise((r) => setImmediate(r)); // read: running
    // eth2 bounces (down, then up) while a pass runs: both notifications wait in the old socket.
    t.watch.follow([2, 7]);
    t.newLinkOn(0, 2, true, false);
    t.newLinkOn(0, 2, true, true);
    await new Promise((r) => setImmediate(r));
    expect(t.changes.map((c) => ('link' in c ? [c.link.index, c.running, c.was] : c))).toEqual([
      [2, false, true],
      [2, true, false], // back up: the pass that puts its routes back
    ]);
    // Down with its notification lost for good: the reading after the replacement tells it.
    down = true;
    t.watch.follow([2, 7, 9]);
    await new Promise((r) => setImmediate(r));
    expect(t.changes.at(-1)).toMatchObject({ link: { index: 2 }, running: false, was: true });
    t.watch.close();
    expect(t.subscriptions.every((s) => s.closed)).toBe(true);
  });
});

describe('gatewayDevices', () => {
  it('the devices of routes through a gateway, once each, ascending; blackholes and local routes left out', () => {
    expect(
      gatewayDevices([
        { family: 4, dst: '10.244.2.0/24', gateway: '10.0.0.12', ifindex: 9 },
        { family: 6, dst: 'fd00:10:244:2::/64', gateway: 'fd00::12', ifindex: 9 },
        { family: 4, dst: '10.244.3.0/24', gateway: '10.244.3.0', ifindex: 4 },
        { family: 4, dst: '10.244.1.0/24', type: 'blackhole' },
        { family: 4, dst: '10.244.1.7/32', ifindex: 30 },
      ]),
    ).toEqual([4, 9]);
  });
});
