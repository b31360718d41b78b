/**
 * Executes a RouteDiff on a NetlinkHandle. Order: replace, add, remove. Replaces are atomic in the kernel
 * and fix routes that point the wrong way right now; adding before removing means a prefix that moves (say
 * a node's CIDR shrinks from /23 to /24) always has a route during the change. Every operation is tried even
 * when an earlier one failed; failures are returned, not thrown, because the reconciler retries them on the
 * next pass anyway.
 */

import type { KeyHolder, NetlinkHandle, RouteInfo } from '../datapath/ports.ts';
import { MAIN_TABLE, type RouteDiff } from './diff.ts';

export interface RouteError {
  op: 'replace' | 'add' | 'remove';
  route: RouteInfo;
  error: Error;
}

export interface ApplyResult {
  added: number;
  replaced: number;
  removed: number;
  errors: RouteError[];
  /**
   * New routes refused because another route holds their key: one the diff could not see (the dump
   * parser skips multipath, unreachable, prohibit and throw routes). A conflict, not a failure.
   */
  taken: RouteInfo[];
}

/** Below this many routes, one request at a time is fast enough and the error is per route already. */
const BATCH_MIN = 16;

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/**
 * The netlink adapter's burst with per-route outcomes (pkg/netlink ExtendedNetlinkHandle). Optional: not
 * part of the NetlinkHandle port, so it is detected at run time.
 */
interface SettledBurst {
  replaceRoutesSettled(routes: readonly RouteInfo[]): Promise<(Error | undefined)[]>;
}

function hasSettledBurst(h: NetlinkHandle): h is NetlinkHandle & SettledBurst {
  return typeof (h as Partial<SettledBurst>).replaceRoutesSettled === 'function';
}

/** The adapter's exclusive burst (NLM_F_EXCL per route), also detected at run time. */
interface ExclusiveBurst {
  addRoutesSettled(routes: readonly RouteInfo[]): Promise<(Error | undefined)[]>;
}

function hasExclusiveBurst(h: NetlinkHandle): h is NetlinkHandle & ExclusiveBurst {
  return typeof (h as Partial<ExclusiveBurst>).addRoutesSettled === 'function';
}

/**
 * The adapter's mark on an exclusive add refused with EEXIST (pkg/netlink RouteKeyTakenError), read by
 * shape so that this package does not depend on the adapter.
 */
function isKeyTaken(e: Error): boolean {
  return (e as { routeKeyTaken?: unknown }).routeKeyTaken === true;
}

function collectSettled(
  routes: readonly RouteInfo[],
  results: readonly (Error | undefined)[],
  op: 'replace' | 'add',
  out: Pick<ApplyResult, 'errors' | 'taken'>,
): number {
  let ok = 0;
  // An index loop, not forEach: the adapter may return a sparse array (holes are successes).
  for (let i = 0; i < routes.length; i++) {
    const error = results[i];
    if (error === undefined) ok++;
    else if (op === 'add' && isKeyTaken(error)) out.taken.push(routes[i]!);
    else out.errors.push({ op, route: routes[i]!, error });
  }
  return ok;
}

async function writeAll(
  handle: NetlinkHandle,
  routes: RouteInfo[],
  op: 'replace' | 'add',
  out: Pick<ApplyResult, 'errors' | 'taken'>,
): Promise<number> {
  const { errors } = out;
  if (routes.length === 0) return 0;
  // New routes are created, never replaced: the diff found no route on their keys, but a route of a
  // kind the dump parser skips (unreachable, prohibit, multipath) may hold one, and it is not ours.
  // (A handle with only the port's replaceRoute, as in some tests, replaces.)
  if (op === 'add' && hasExclusiveBurst(handle)) {
    const ok = collectSettled(routes, await handle.addRoutesSettled(routes), op, out);
    return ok + (await rewriteOwnTaken(handle, out));
  }
  if (hasSettledBurst(handle) && routes.length >= BATCH_MIN) {
    return collectSettled(routes, await handle.replaceRoutesSettled(routes), op, out);
  }
  if (handle.replaceRoutes !== undefined && routes.length >= BATCH_MIN) {
    try {
      await handle.replaceRoutes(routes);
      return routes.length;
    } catch {
      // One bad route fails the burst; redo them one by one to learn which (replace is idempotent).
    }
  }
  let ok = 0;
  for (const route of routes) {
    try {
      await handle.replaceRoute(route);
      ok++;
    } catch (e) {
      errors.push({ op, route, error: asError(e) });
    }
  }
  return ok;
}

/** The adapter's single lookup of what holds a route key (ExtendedNetlinkHandle), detected at run time. */
export interface KeyLookup {
  keyHolder(dst: string, table?: number): Promise<KeyHolder>;
}

function hasKeyLookup(h: NetlinkHandle): h is NetlinkHandle & KeyLookup {
  return typeof (h as Partial<KeyLookup>).keyHolder === 'function';
}

/**
 * New routes refused for a key a route of ours holds: the diff's dump did not show it. An IPv6 route
 * dump the table changed under (pods added or deleted meanwhile) can leave a route out, unflagged,
 * so the key was taken by the route itself (in whatever shape): replaced, not reported as someone
 * else's. Whatever holds it otherwise stays `taken`. Returns how many were written.
 */
async function rewriteOwnTaken(
  handle: NetlinkHandle,
  out: Pick<ApplyResult, 'errors' | 'taken'>,
): Promise<number> {
  if (out.taken.length === 0 || !hasKeyLookup(handle)) return 0;
  const taken = out.taken.splice(0);
  let ok = 0;
  for (const route of taken) {
    let holder: KeyHolder;
    try {
      holder = await handle.keyHolder(route.dst, route.table);
    } catch {
      out.taken.push(route); // as the add found it: held, by what is not known
      continue;
    }
    const ours =
      holder.kind === 'route' &&
      holder.protocol === route.protocol &&
      holder.table === (route.table ?? MAIN_TABLE);
    if (!ours) {
      out.taken.push(route);
      continue;
    }
    try {
      await handle.replaceRoute(route);
      ok++;
    } catch (e) {
      out.errors.push({ op: 'add', route, error: asError(e) });
    }
  }
  return ok;
}

export async function applyRouteDiff(
  handle: NetlinkHandle,
  diff: Pick<RouteDiff, 'add' | 'replace' | 'remove'>,
): Promise<ApplyResult> {
  const errors: RouteError[] = [];
  const taken: RouteInfo[] = [];
  const replaced = await writeAll(handle, diff.replace, 'replace', { errors, taken });
  const added = await writeAll(handle, diff.add, 'add', { errors, taken });
  let removed = 0;
  for (const route of diff.remove) {
    try {
      await handle.deleteRoute(route);
      removed++;
    } catch (e) {
      errors.push({ op: 'remove', route, error: asError(e) });
    }
  }
  return { added, replaced, removed, errors, taken };
}
