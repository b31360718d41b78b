import type { NetlinkEventsPort, NetlinkHandle, RouteInfo, Subscription } from '../datapath/ports.ts';
import type { Logger } from '../observe/logger.ts';
import type { RouteReconciler } from '../routes/reconciler.ts';
import type { VxlanOverlay } from '../vxlan/overlay.ts';
import { type KernelWatchDeps, watchKernel } from './kernel-watch.ts';
import { LinkCarrierWatch } from './link-carrier-watch.ts';
import { LinkMtuWatch } from './link-mtu-watch.ts';
import { OverlayEntryWatch } from './overlay-entry-watch.ts';

export interface KernelTriggerDeps {
  events: NetlinkEventsPort;
  masq: KernelWatchDeps['masq'];
  host: NetlinkHandle;
  overlay: VxlanOverlay;
  routes: RouteReconciler;
  /** Asks the controller for a full pass, saying why; `endsBackoff` as NodeController.markDirty's. */
  markDirty(why: string, endsBackoff?: boolean): void;
  /** A route of ours without a gateway was deleted (kernel-watch.ts): a pod's host route, maybe. */
  podRouteDeleted(route: RouteInfo): void;
  /** A pod host veth was deleted or set down (kernel-watch.ts). */
  podVethLost(name: string): void;
  /** The pod MTU is detected (no --mtu): a change of the uplinks' MTU asks for a pass too. */
  followUplinkMtu: boolean;
  log: Logger;
}

/** The watches a pass follows (`follow`) to learn what to watch next; all closed with `subscriptions`. */
export interface KernelTriggers {
  carriers: LinkCarrierWatch;
  overlayEntries: OverlayEntryWatch;
  /** The VXLAN devices' MTU, which a pass sets (from the underlay's, or --mtu). */
  overlayMtu: LinkMtuWatch;
  uplinkMtu: LinkMtuWatch | undefined;
  subscriptions: Subscription[];
}

/**
 * The kernel notifications that wake a pass, each with the log line that says why: our routes and
 * the masquerade table changed behind our back (kernel-watch.ts), a link routes leave by went down,
 * came back or went away, a VXLAN neighbour or FDB entry was deleted or a VXLAN device's MTU changed,
 * the MTU the pod MTU comes from changed. Level-triggered like every other change: they only mark the state dirty.
 */
export function startKernelTriggers(d: KernelTriggerDeps): KernelTriggers {
  const { log, markDirty } = d;
  const subscriptions: Subscription[] = watchKernel({
    events: d.events,
    masq: d.masq,
    routesNexthop: (id) => d.host.routesNexthop?.(id) === true,
    isOwnDeletion: (route) => d.routes.isOwnDeletion(route),
    deletedItself: (index) => d.overlay.deletedItself(index),
    concernsPrefix: (route) => d.routes.concernsPrefix(route),
    markDirty,
    podRouteDeleted: d.podRouteDeleted,
    podVethLost: d.podVethLost,
    log,
  });
  // Down: the kernel drops the routes through it (IPv4 silently) and refuses new ones until the
  // carrier is back ("Carrier for nexthop device is down"), so the pass that puts them back is the
  // one when it is up again.
  const carriers = new LinkCarrierWatch(
    d.events,
    (change) => {
      // A VXLAN device this agent recreated or removed: its own doing, logged as such by the overlay.
      const index =
        'link' in change ? change.link.index : 'deleted' in change ? change.deleted.index : undefined;
      if (index !== undefined && d.overlay.deletedItself(index)) {
        markDirty('a VXLAN device was recreated');
        return;
      }
      if ('link' in change) {
        // Our own VXLAN device set down by someone else (`ip link set trellis.v4 down`): nothing brings
        // it back but a pass, so one runs now instead of at the resync, and sets it up again.
        if (!change.link.up && d.overlay.devices().some((dev) => dev.ifindex === change.link.index)) {
          markDirty('a VXLAN device was set down', true);
          // Deleting a device that is up announces it down first: said only of one still there (a
          // deleted one is said as deleted, next).
          const { index, name } = change.link;
          void d.host.getLinkByIndex(index).then(
            (now) => {
              if (now?.name === name)
                log.warn({ link: name }, 'a VXLAN device of trellis was set down; setting it up again');
            },
            () => undefined,
          );
          return;
        }
        if (!change.running) {
          log.warn(
            { link: change.link.name, up: change.link.up, carrier: change.link.lowerUp === true },
            'a link routes to peers leave by is down; its routes are put back when it is up again',
          );
          return;
        }
        log.info({ link: change.link.name }, 'a link routes to peers leave by is up; reconciling now');
      } else if ('deleted' in change) {
        log.warn(
          { link: change.deleted.name },
          'a link routes to peers leave by was deleted; reconciling now',
        );
      }
      // Routes refused while the carrier was down go in now, not after the failed pass's backoff.
      markDirty('a link routes to peers leave by changed', true);
    },
    (index) => d.host.getLinkByIndex(index),
  );
  // The agent's own removals, and entries it does not keep (learned by the kernel), wake nothing.
  const overlayEntries = new OverlayEntryWatch(
    d.events,
    markDirty,
    (entry) => d.routes.isOwnEntryDeletion(entry) || !d.routes.keepsEntry(entry),
  );
  /** A watch of some links' MTU that asks for a pass, saying which: `ours` tells a pass's own change. */
  const mtuWatch = (
    what: string,
    ours: (index: number, mtu: number) => boolean = () => false,
    opts: { passReadsToo?: boolean } = {},
  ) =>
    new LinkMtuWatch(
      d.events,
      (change) => {
        if ('link' in change) {
          if (ours(change.link.index, change.link.mtu)) return;
          log.info(
            { link: change.link.name, mtu: change.link.mtu, was: change.was },
            `MTU of ${what} changed; reconciling now`,
          );
        }
        markDirty(`the MTU of ${what} changed`);
      },
      opts,
    );
  // Someone else's MTU on a VXLAN device (`ip link set trellis.v4 mtu 9000`) drops or fragments
  // tunnelled frames until a pass puts the pass's MTU back: that pass comes at once. A pass resizing
  // the device to the underlay's new MTU is its own doing.
  const overlayMtu = mtuWatch('a VXLAN device', (index, mtu) => d.overlay.setMtuItself(index, mtu));
  subscriptions.push(carriers, overlayEntries, overlayMtu);
  // A pass started for another reason may read the new MTU before the notification comes: said (and
  // one more pass asked for, which finds nothing left to do) rather than swallowed.
  const uplinkMtu = d.followUplinkMtu
    ? mtuWatch('the link the pod MTU comes from', undefined, { passReadsToo: true })
    : undefined;
  if (uplinkMtu !== undefined) subscriptions.push(uplinkMtu);
  return { carriers, overlayEntries, overlayMtu, uplinkMtu, subscriptions };
}
