/**
 * Route changes this agent made itself and whose kernel notifications must not count as "someone else
 * touched our routes". The agent runs a full pass soon after an owned route is deleted (an operator's
 * `ip route del`); a per-node step deletes routes too, and a full pass after each of those would undo the
 * point of the step. Each expected deletion is matched once, by key and gateway, and forgotten after a
 * short expiry, so a foreign deletion of the same route later is still seen.
 */

import type { RouteInfo } from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import { routeKey } from './diff.ts';

/** Notifications arrive within milliseconds; seconds leave room for a loaded machine. */
const DEFAULT_EXPIRY_MS = 5_000;

export class OwnRouteChanges {
  private readonly expected = new Map<string, number[]>();
  private readonly now: () => number;
  private readonly expiryMs: number;

  constructor(opts: { now?: () => number; expiryMs?: number } = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.expiryMs = opts.expiryMs ?? DEFAULT_EXPIRY_MS;
  }

  /** Call before the request: the notification may be read before the request's ack. */
  expectDelete(route: RouteInfo): void {
    const k = key(route);
    const list = this.expected.get(k) ?? [];
    list.push(this.now() + this.expiryMs);
    this.expected.set(k, list);
  }

  /** True (once) when a deletion notification matches a deletion we made. */
  consumeDelete(route: RouteInfo): boolean {
    const k = key(route);
    const list = this.expected.get(k);
    if (list === undefined) return false;
    const now = this.now();
    const live = list.filter((t) => t > now);
    const hit = live.length > 0;
    if (hit) live.shift();
    if (live.length === 0) this.expected.delete(k);
    else this.expected.set(k, live);
    return hit;
  }

  /** Drops expired entries (deletions whose notification never came, e.g. the route was gone already). */
  sweep(): void {
    const now = this.now();
    for (const [k, list] of this.expected) {
      const live = list.filter((t) => t > now);
      if (live.length === 0) this.expected.delete(k);
      else this.expected.set(k, live);
    }
  }

  get size(): number {
    return this.expected.size;
  }
}

function key(r: RouteInfo): string {
  const gw = r.gateway === undefined || r.gateway === '' ? '-' : (canonicalIp(r.gateway) ?? r.gateway);
  return `${routeKey(r)} ${r.type ?? 'unicast'} ${gw}`;
}
