import type { LinkInfo, NetlinkEventsPort } from '../datapath/ports.ts';
import { LinkSubscription } from './link-subscription.ts';

/**
 * Watches the MTU of the links the pod MTU was read from (MtuChoice.links): the node's uplink, or the
 * devices of its ways out. A change there asks for a full pass at once, which re-reads the MTU for new
 * pods' config and the VXLAN devices, instead of the next resync up to --resync-seconds later (a VXLAN
 * device left above a lowered underlay MTU drops every full-size frame meanwhile). The kernel filters
 * the notifications to these links: every pod ADD and DEL would otherwise wake the agent for its veth.
 */
export class LinkMtuWatch {
  private readonly onChange: (
    change: { link: Pick<LinkInfo, 'index' | 'mtu' | 'name'>; was: number } | { overflow: true },
  ) => void;
  private readonly subscription: LinkSubscription;
  /** ifindex -> the MTU last seen (read by the pass, or by a notification since). */
  private watched = new Map<number, number>();
  /** ifindex -> the MTU its latest notification since the last follow() carried (passReadsToo). */
  private readonly notified = new Map<number, number>();
  private readonly passReadsToo: boolean;
  private closed = false;

  /**
   * `passReadsToo`: a change a pass read before its notification came is said too (the notification
   * then finds nothing new): a pass started for another reason must not swallow it. Not for links
   * whose MTU the pass sets itself.
   */
  constructor(
    events: NetlinkEventsPort,
    onChange: (
      change: { link: Pick<LinkInfo, 'index' | 'mtu' | 'name'>; was: number } | { overflow: true },
    ) => void,
    opts: { passReadsToo?: boolean } = {},
  ) {
    this.subscription = new LinkSubscription(events);
    this.onChange = onChange;
    this.passReadsToo = opts.passReadsToo === true;
  }

  /** From now on, these links (as a pass read them); the subscription is replaced only when the set changes. */
  follow(links: readonly Pick<LinkInfo, 'index' | 'mtu' | 'name'>[]): void {
    if (this.closed) return;
    const seen: { link: Pick<LinkInfo, 'index' | 'mtu' | 'name'>; was: number }[] = [];
    /** A pass to read again: which of a notification and a reading is newer cannot be told. */
    let readAgain = false;
    if (this.passReadsToo) {
      const kept = this.subscription.keeps(links.map((l) => l.index));
      const next = new Map<number, number>();
      for (const l of links) {
        // A notification handled since the last pass is as new as the pass's reading, or newer (the
        // pass may have read before it: a stale value, not a change); a later one is still to come,
        // unless the subscription is replaced now (it would wait in the old socket): then a pass reads
        // again once the new one is open.
        const told = this.notified.get(l.index);
        if (told !== undefined) {
          next.set(l.index, told);
          if (!kept && told !== l.mtu) readAgain = true;
          continue;
        }
        const was = this.watched.get(l.index);
        if (was !== undefined && was !== l.mtu) seen.push({ link: l, was });
        next.set(l.index, l.mtu);
      }
      this.notified.clear();
      this.watched = next;
    } else {
      this.watched = new Map(links.map((l) => [l.index, l.mtu]));
    }
    try {
      this.subscribe(links);
    } finally {
      // Said even when the subscription could not be opened (the pass fails and is retried, and would
      // compare with the MTU already taken in above).
      for (const change of seen) this.onChange(change);
      if (readAgain && seen.length === 0) this.onChange({ overflow: true });
    }
  }

  /** The subscription to these links' changes. */
  private subscribe(links: readonly Pick<LinkInfo, 'index'>[]): void {
    this.subscription.follow(
      links.map((l) => l.index),
      ['add'],
      (ev) => {
        if (ev.type === 'overflow') {
          // Notifications lost: what was handled says nothing about now; the pass asked for reads.
          this.notified.clear();
          this.onChange({ overflow: true });
          return;
        }
        if (ev.type !== 'add') return;
        if (this.passReadsToo) this.notified.set(ev.link.index, ev.link.mtu);
        const was = this.watched.get(ev.link.index);
        if (was === undefined || was === ev.link.mtu) return;
        this.watched.set(ev.link.index, ev.link.mtu);
        this.onChange({ link: ev.link, was });
      },
    );
  }

  close(): void {
    this.closed = true;
    this.subscription.close();
    this.watched.clear();
    this.notified.clear();
  }
}
