import type { DeletedEntry, NeighbourDeletion, NetlinkEventsPort, Subscription } from '../datapath/ports.ts';

/**
 * Deleted neighbour and FDB entries of the VXLAN devices. A full pass compares the entries the
 * overlay writes (permanent) with the kernel's and puts back what is missing, but one deleted by
 * hand (`bridge fdb del … dev trellis.v4`, `ip neigh flush dev trellis.v6`) cut the tunnel to that
 * peer until the next resync, up to a minute. The kernel announces deletions, filtered to these
 * devices: each asks for a pass at once. The agent's own removals (a peer gone) are recorded as
 * they are made and wake nothing, nor do entries the plan does not keep (`ignore`: a neighbour the
 * kernel learned from a peer's NDP, aged out); the kernel's ageing of its own multicast entries
 * (NOARP) is filtered out before it reaches us (pkg/netlink subscribeNeighbourDeletions).
 */
export class OverlayEntryWatch {
  private readonly events: NetlinkEventsPort;
  private readonly onDeleted: (why: string) => void;
  private readonly ignore: (entry: DeletedEntry) => boolean;
  private current: Subscription | undefined;
  private followed = '';
  private closed = false;

  constructor(
    events: NetlinkEventsPort,
    onDeleted: (why: string) => void,
    ignore: (entry: DeletedEntry) => boolean,
  ) {
    this.events = events;
    this.onDeleted = onDeleted;
    this.ignore = ignore;
  }

  /** From now on, the entries of these devices (a new subscription only when the set changes). */
  follow(devices: readonly { name: string; ifindex: number }[]): void {
    const subscribe = this.events.subscribeNeighbourDeletions;
    if (this.closed || subscribe === undefined) return;
    const key = devices
      .map((d) => d.ifindex)
      .sort((a, b) => a - b)
      .join();
    if (key === this.followed) return;
    this.current?.close();
    this.current = undefined;
    // Known as followed only once subscribed: a subscription that failed (EMFILE, say) is tried
    // again at the next pass, not taken as done while the device set stays the same.
    this.followed = '';
    if (devices.length === 0) {
      this.followed = key;
      return;
    }
    const names = new Map(devices.map((d) => [d.ifindex, d.name]));
    this.current = subscribe.call(
      this.events,
      (ev: NeighbourDeletion) => {
        if (ev.type === 'overflow') this.onDeleted('VXLAN neighbour or FDB notifications were lost');
        else if (ev.entry === undefined || !this.ignore(ev.entry))
          this.onDeleted(
            `a ${ev.family === AF_BRIDGE ? 'FDB' : 'neighbour'} entry of ${names.get(ev.ifindex) ?? `#${ev.ifindex}`} was deleted`,
          );
      },
      devices.map((d) => d.ifindex),
    );
    this.followed = key;
  }

  close(): void {
    this.closed = true;
    this.current?.close();
    this.current = undefined;
  }
}

/** The family of a bridge (and VXLAN) forwarding database entry's notification. */
const AF_BRIDGE = 7;
