import type { LinkInfo, NetlinkEventsPort } from '../datapath/ports.ts';
import { LinkSubscription } from './link-subscription.ts';

/** What the watch reports: a followed link went down or came back, was deleted, or events were lost. */
export type LinkCarrierChange =
  | { link: LinkInfo; running: boolean; was: boolean | undefined }
  | { deleted: LinkInfo }
  | { overflow: true };

/** Up and with carrier: the state in which the kernel keeps a device's nexthop objects. */
function isRunning(link: LinkInfo): boolean {
  return link.up && link.lowerUp === true;
}

/**
 * Watches the links the routes to peers leave by (ReconcileReport.routeDevices: the uplink, the VXLAN
 * devices). When such a device goes down or loses carrier (a cable pulled, a switch rebooted, a bond
 * failing over, `ip link set dev X down`), the kernel deletes the nexthop objects on it, and every
 * IPv4 route written through them, without a route or nexthop notification (IPv6 announces its own):
 * kernel-watch.ts cannot see it, and peers' pods would be unreachable until the next resync. Each
 * change of a followed link's state therefore asks for a full pass; the one after carrier returns puts
 * the routes back. The kernel filters the notifications to these links: every pod ADD and DEL would
 * otherwise wake the agent for its veth.
 */
export class LinkCarrierWatch {
  private readonly onChange: (change: LinkCarrierChange) => void;
  private readonly subscription: LinkSubscription;
  private readonly readLink: ((index: number) => Promise<LinkInfo | undefined>) | undefined;
  /**
   * ifindex -> running, from the last notification or, before one came, from the link as read when
   * it was first followed; undefined until either (a pass reads no flags).
   */
  private watched = new Map<number, boolean | undefined>();
  /** ifindex -> notifications handled for it: a reading older than one of them is dropped. */
  private heard = new Map<number, number>();

  /**
   * `readLink`: reads a link's state when it is first followed, so that one followed while down
   * reports coming up (its routes then go back at once, not at the failed pass's next retry).
   */
  constructor(
    events: NetlinkEventsPort,
    onChange: (change: LinkCarrierChange) => void,
    readLink?: (index: number) => Promise<LinkInfo | undefined>,
  ) {
    this.subscription = new LinkSubscription(events);
    this.onChange = onChange;
    this.readLink = readLink;
  }

  /**
   * From now on, these links; the subscription is replaced only when the set changes. When it is,
   * every link is also read again once the new one is open, and a state that differs from the known
   * one is a change: the old socket's queued notifications still come during its handover
   * (link-subscription.ts), and the reading covers any it lost all the same.
   */
  follow(indexes: readonly number[]): void {
    const replaced = !this.subscription.keeps(indexes);
    const next = new Map(indexes.map((i) => [i, this.watched.get(i)]));
    const fresh = indexes.filter((i) => !this.watched.has(i));
    this.watched = next;
    for (const index of [...this.heard.keys()]) if (!next.has(index)) this.heard.delete(index);
    this.subscribe();
    for (const index of fresh) this.seed(index);
    if (!replaced) return;
    const known = indexes.filter((i) => !fresh.includes(i));
    // Nothing to read them with: a pass reads the links instead.
    if (this.readLink === undefined && known.length > 0) this.onChange({ overflow: true });
    else for (const index of known) this.readAgain(index);
  }

  private subscribe(): void {
    this.subscription.follow([...this.watched.keys()], ['add', 'delete'], (ev) => {
      if (ev.type === 'overflow') {
        // The lost notifications may have held a change of state: what is known is read again, or a
        // link's coming back would match a `running` the missed going down never changed.
        for (const index of this.watched.keys()) {
          this.watched.set(index, undefined);
          this.seed(index);
        }
        this.onChange({ overflow: true });
        return;
      }
      if (!this.watched.has(ev.link.index)) return;
      this.heard.set(ev.link.index, (this.heard.get(ev.link.index) ?? 0) + 1);
      if (ev.type === 'delete') {
        this.watched.delete(ev.link.index);
        this.onChange({ deleted: ev.link });
        return;
      }
      // RTM_NEWLINK also reports changes that leave the state alone (MTU, address, statistics).
      this.observe(ev.link);
    });
  }

  /** A link's state as notified or read: a change of the known one is reported. */
  private observe(link: LinkInfo): void {
    const was = this.watched.get(link.index);
    const running = isRunning(link);
    if (was === running) return;
    this.watched.set(link.index, running);
    // The first word on a link that is running says nothing new (an MTU or address change): the
    // pass that followed it saw it up. Down is always news.
    if (was === undefined && running) return;
    this.onChange({ link, running, was });
  }

  /** A followed link read again (its subscription replaced), unless a notification said it first. */
  private readAgain(index: number): void {
    if (this.readLink === undefined) return;
    const heard = this.heard.get(index) ?? 0;
    this.readLink(index).then(
      (link) => {
        if (!this.watched.has(index) || (this.heard.get(index) ?? 0) !== heard) return;
        if (link === undefined) {
          // Deleted, its notification lost with the old socket: a pass reads the links.
          this.watched.delete(index);
          this.onChange({ overflow: true });
          return;
        }
        this.observe(link);
      },
      () => {
        if (this.watched.has(index)) this.onChange({ overflow: true }); // unread: a pass reads it
      },
    );
  }

  close(): void {
    this.subscription.close();
    this.watched.clear();
    this.heard.clear();
  }

  /** The state of a newly followed link, unless a notification said it first (it is newer). */
  private seed(index: number): void {
    if (this.readLink === undefined) return;
    this.readLink(index).then(
      (link) => {
        if (link === undefined || !this.watched.has(index) || this.watched.get(index) !== undefined) return;
        this.watched.set(index, isRunning(link));
      },
      () => undefined, // unread: the first notification decides, as without a reader
    );
  }
}
