/**
 * Route changes this agent made itself and whose kernel notifications must not count as "someone else
 * touched our routes". The agent runs a full pass soon after an owned route is deleted (an operator's
 * `ip route del`); a per-node step deletes routes too, and a full pass after each of those would undo the
 * point of the step. Each expected deletion is matched once, by key and gateway, and forgotten after a
 * short expiry, so a foreign deletion of the same route later is still seen. A notification without a
 * gateway (nexthop_compat_mode=0: the route names its nexthop object, nothing more) matches by key.
 *
 * The same for the VXLAN neighbour and FDB entries a pass or a step deletes (a peer gone): their
 * deletion notifications carry no sender (the kernel sends them with port 0), so they are matched by
 * device and address (neighbours) or device, MAC and remote (FDB entries).
 */

import type { DeletedEntry, RouteInfo } from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import { routeKey } from './diff.ts';

/** Notifications arrive within milliseconds; seconds leave room for a loaded machine. */
const DEFAULT_EXPIRY_MS = 5_000;

interface Expected {
  /** Canonical gateway, '' for a route without one. */
  gateway: string;
  until: number;
}

export class OwnRouteChanges {
  /** key (routeKey + type) -> deletions expected, oldest first. */
  private readonly expected = new Map<string, Expected[]>();
  private readonly now: () => number;
  private readonly expiryMs: number;

  constructor(opts: { now?: () => number; expiryMs?: number } = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.expiryMs = opts.expiryMs ?? DEFAULT_EXPIRY_MS;
  }

  /** Call before the request: the notification may be read before the request's ack. */
  expectDelete(route: RouteInfo): void {
    this.expect(key(route), gatewayOf(route));
  }

  /** True (once) when a deletion notification matches a deletion we made. */
  consumeDelete(route: RouteInfo): boolean {
    return this.consume(key(route), gatewayOf(route));
  }

  /** expectDelete for a VXLAN neighbour or FDB entry. */
  expectEntryDelete(entry: DeletedEntry): void {
    this.expect(entryKey(entry), '');
  }

  /** consumeDelete for a VXLAN neighbour or FDB entry's deletion notification. */
  consumeEntryDelete(entry: DeletedEntry): boolean {
    return this.consume(entryKey(entry), '');
  }

  private expect(k: string, gateway: string): void {
    const list = this.expected.get(k) ?? [];
    list.push({ gateway, until: this.now() + this.expiryMs });
    this.expected.set(k, list);
  }

  private consume(k: string, gateway: string): boolean {
    const list = this.expected.get(k);
    if (list === undefined) return false;
    const now = this.now();
    const live = list.filter((e) => e.until > now);
    const at = gateway === '' ? (live.length > 0 ? 0 : -1) : live.findIndex((e) => e.gateway === gateway);
    if (at >= 0) live.splice(at, 1);
    if (live.length === 0) this.expected.delete(k);
    else this.expected.set(k, live);
    return at >= 0;
  }

  /** Drops expired entries (deletions whose notification never came, e.g. the route was gone already). */
  sweep(): void {
    const now = this.now();
    for (const [k, list] of this.expected) {
      const live = list.filter((e) => e.until > now);
      if (live.length === 0) this.expected.delete(k);
      else this.expected.set(k, live);
    }
  }

  get size(): number {
    return this.expected.size;
  }
}

function key(r: RouteInfo): string {
  return `${routeKey(r)} ${r.type ?? 'unicast'}`;
}

function entryKey(e: DeletedEntry): string {
  // By `dst`: a neighbour entry has a MAC too.
  return 'dst' in e
    ? `fdb ${e.ifindex} ${e.mac.toLowerCase()} ${canonicalIp(e.dst) ?? e.dst}`
    : `neighbour ${e.ifindex} ${canonicalIp(e.address) ?? e.address}`;
}

function gatewayOf(r: RouteInfo): string {
  return r.gateway === undefined || r.gateway === '' ? '' : (canonicalIp(r.gateway) ?? r.gateway);
}
