import type { LinkEvent, LinkEventInterest, NetlinkEventsPort, Subscription } from '../datapath/ports.ts';

/**
 * The one kernel-filtered link subscription a watch keeps for the links it follows (LinkMtuWatch,
 * LinkCarrierWatch): replaced only when the set of links changes, and never again after close(), when
 * a pass still in flight while the agent stops asks to follow.
 */
export class LinkSubscription {
  private readonly events: NetlinkEventsPort;
  private current: Subscription | undefined;
  /** The ifindexes `current` follows. */
  private followed = new Set<number>();
  private closed = false;

  constructor(events: NetlinkEventsPort) {
    this.events = events;
  }

  /**
   * Whether follow(links) would keep the subscription it has (notifications waiting in it are then
   * still to come; a new one starts without them).
   */
  keeps(links: readonly number[]): boolean {
    if (this.closed) return true;
    const next = new Set(links);
    const sameSet = next.size === this.followed.size && links.every((i) => this.followed.has(i));
    return sameSet && (this.current !== undefined || next.size === 0);
  }

  /** Follows `links` with `cb`, for these kinds of change; the subscription stays while the set does. */
  follow(links: readonly number[], changes: LinkEventInterest['changes'], cb: (ev: LinkEvent) => void): void {
    if (this.closed || this.keeps(links)) return;
    const next = new Set(links);
    this.current?.close();
    this.current = undefined;
    this.followed = next;
    if (next.size === 0) return;
    this.current = this.events.subscribeLinkEvents(cb, { changes, links: [...next] });
  }

  close(): void {
    this.closed = true;
    this.current?.close();
    this.current = undefined;
    this.followed.clear();
  }
}
