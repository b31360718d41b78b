import { describe, expect, it } from 'vitest';
import { OverlayEntryWatch } from '../../../pkg/agent/overlay-entry-watch.ts';
import type { NeighbourDeletion, NetlinkEventsPort } from '../../../pkg/datapath/ports.ts';

describe('OverlayEntryWatch', () => {
  it("asks for a pass when one of the overlay's (permanent) entries is deleted, not for the kernel's own", () => {
    let deliver: ((ev: NeighbourDeletion) => void) | undefined;
    const followed: number[][] = [];
    const events = {
      subscribeNeighbourDeletions: (cb: (ev: NeighbourDeletion) => void, links: readonly number[]) => {
        deliver = cb;
        followed.push([...links]);
        return { close: () => {} };
      },
    } as unknown as NetlinkEventsPort;
    const why: string[] = [];
    const watch = new OverlayEntryWatch(events, (w) => why.push(w));
    watch.follow([{ name: 'trellis.v6', ifindex: 9 }]);
    expect(followed).toEqual([[9]]);
    deliver!({ type: 'deleted', ifindex: 9, family: 10, permanent: false }); // NDP aging out
    deliver!({ type: 'deleted', ifindex: 9, family: 10, permanent: true }); // ip neigh del ... by hand
    deliver!({ type: 'deleted', ifindex: 9, family: 7, permanent: true }); // bridge fdb del ...
    deliver!({ type: 'overflow' });
    expect(why).toEqual([
      'a neighbour entry of trellis.v6 was deleted',
      'a FDB entry of trellis.v6 was deleted',
      'VXLAN neighbour or FDB notifications were lost',
    ]);
    watch.close();
  });
});
