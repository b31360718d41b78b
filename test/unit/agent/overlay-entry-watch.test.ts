import { describe, expect, it } from 'vitest';
import { OverlayEntryWatch } from '../../../pkg/agent/overlay-entry-watch.ts';
import type { NetlinkEventsPort } from '../../../pkg/datapath/ports.ts';

describe('OverlayEntryWatch', () => {
  it('a subscription that failed is tried again at the next follow of the same devices', () => {
    let failures = 1;
    const subscribed: number[][] = [];
    const events = {
      subscribeNeighbourDeletions: (_cb: unknown, links: number[]) => {
        if (failures-- > 0) throw Object.assign(new Error('socket: EMFILE'), { code: 'EMFILE' });
        subscribed.push(links);
        return { close: () => undefined };
      },
    } as unknown as NetlinkEventsPort;
    const watch = new OverlayEntryWatch(
      events,
      () => undefined,
      () => false,
    );
    const devices = [{ name: 'trellis.v4', ifindex: 7 }];
    expect(() => watch.follow(devices)).toThrow(/EMFILE/);
    // Before, the set counted as followed: no watch until the devices changed.
    watch.follow(devices);
    expect(subscribed).toEqual([[7]]);
    watch.follow(devices); // followed now: nothing new
    expect(subscribed).toEqual([[7]]);
    watch.close();
  });
});
