import type { LinkEvent, LinkEventInterest, NetlinkEventsPort, Subscription } from '../datapath/ports.ts';

/**
 * The one kernel-filtered link subscription a watch keeps for the links it follows (LinkMtuWatch,
 * LinkCarrierWatch): replaced only when the set of links changes, and never again after close(), when
 * a pass still in flight while the agent stops asks to follow.
 */
export class LinkSubscription {
  private readonly events: NetlinkEventsPort;
  private current: Subscription | undefined;
  private closed = false;

  constructor(events: NetlinkEventsPort) {
    this.events = events;
  }

  /** Follows `links` (`sameSet`: the links followed before) with `cb`, for these kinds of change. */
  follow(
    links: readonly number[],
    sameSet: boolean,
    changes: LinkEventInterest['changes'],
    cb: (ev: LinkEvent) => void,
  ): void {
    if (this.closed) return;
    if (sameSet && (this.current !== undefined || links.length === 0)) return;
    this.current?.close();
    this.current = undefined;
    if (links.length === 0) return;
    this.current = this.events.subscribeLinkEvents(cb, { changes, links: [...links] });
  }

  close(): void {
    this.closed = true;
    this.current?.close();
    this.current = undefined;
  }
}
