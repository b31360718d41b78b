import type { LinkEvent, LinkEventInterest, NetlinkEventsPort, Subscription } from '../datapath/ports.ts';

/**
 * How long a replaced subscription stays open beside the new one: notifications already queued in its
 * socket (a link going down a moment before) are still delivered, where closing it at once dropped
 * them. The watches take a repeated notification for what it is (no change of state).
 */
export const HANDOVER_MS = 250;

/**
 * The one kernel-filtered link subscription a watch keeps for the links it follows (LinkMtuWatch,
 * LinkCarrierWatch): replaced only when the set of links changes, and never again after close(), when
 * a pass still in flight while the agent stops asks to follow.
 */
export class LinkSubscription {
  private readonly events: NetlinkEventsPort;
  private current: Subscription | undefined;
  /** Replaced subscriptions in their handover, with the timers that close them. */
  private readonly retiring = new Map<Subscription, NodeJS.Timeout>();
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
    const old = this.current;
    this.current = undefined;
    this.followed = next;
    try {
      if (next.size > 0) this.current = this.events.subscribeLinkEvents(cb, { changes, links: [...next] });
    } finally {
      if (old !== undefined) this.retire(old);
    }
  }

  close(): void {
    this.closed = true;
    this.current?.close();
    this.current = undefined;
    this.followed.clear();
    for (const [sub, timer] of this.retiring) {
      clearTimeout(timer);
      sub.close();
    }
    this.retiring.clear();
  }

  private retire(sub: Subscription): void {
    const timer = setTimeout(() => {
      this.retiring.delete(sub);
      sub.close();
    }, HANDOVER_MS);
    timer.unref();
    this.retiring.set(sub, timer);
  }
}
