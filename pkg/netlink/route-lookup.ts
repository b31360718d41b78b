import type { KeyHolder, RouteInfo, RouteLookup } from '../datapath/ports.ts';
import { RT_TABLE_MAIN, RTM } from './constants.ts';
import { NetlinkError } from './errors.ts';
import { parsePrefix } from './ip.ts';
import { parseRouteAnswer, type RouteAnswer, routeLookupBody } from './messages.ts';
import { getNexthopBody, nexthopGroupMembers, parseNexthop } from './nexthop-messages.ts';
import type { Request } from './socket.ts';
import type { RawMessage } from './wire.ts';

type Send = (req: Request) => Promise<RawMessage[]>;

/**
 * NetlinkHandle.routeTo: a few single requests for one address, never a dump.
 *
 * First the FIB entry that matched (RTM_F_FIB_MATCH): its prefix, and every nexthop of a multipath
 * route, where the resolved answer would name only the one the flow hash picked for this address.
 * A route on a nexthop object the kernel shows by id only (nexthop_compat_mode=0) carries no device
 * there: the object is read (a group's members one by one), and failing that the resolved answer
 * gives the device a packet takes.
 */
export async function routeTo(send: Send, address: string): Promise<RouteLookup | undefined> {
  const matched = await lookup(send, address, true);
  if (matched === undefined || !matched.unicast) return undefined;
  let ifindexes = matched.ifindexes;
  if (ifindexes.length === 0 && matched.nexthopId !== undefined) {
    ifindexes = await nexthopDevices(send, matched.nexthopId);
  }
  if (ifindexes.length === 0) ifindexes = (await lookup(send, address, false))?.ifindexes ?? [];
  if (ifindexes.length === 0) return undefined;
  return { family: matched.family, dst: matched.dst, ifindexes, ...(matched.onLink ? { onLink: true } : {}) };
}

/**
 * What the kernel answers when it has no route to send by: none (ENETUNREACH), an unreachable route
 * (EHOSTUNREACH), a prohibit route (EACCES), a blackhole route (EINVAL).
 */
const NO_ROUTE = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EACCES', 'EINVAL']);

async function lookup(
  send: Send,
  address: string,
  fibMatch: boolean,
  reportTable = false,
): Promise<RouteAnswer | undefined> {
  try {
    const msgs = await send({
      type: RTM.GETROUTE,
      flags: 0,
      body: routeLookupBody(address, fibMatch, reportTable),
      op: `RTM_GETROUTE ${fibMatch ? 'fibmatch ' : ''}${address}`,
    });
    const answer = msgs.find((m) => m.type === RTM.NEWROUTE);
    return answer === undefined ? undefined : parseRouteAnswer(answer.payload);
  } catch (e) {
    if (e instanceof NetlinkError && NO_ROUTE.has(e.errno)) return undefined;
    throw e;
  }
}

/** The devices of a nexthop object: its own, or each member's of a group; empty when it is gone. */
async function nexthopDevices(send: Send, id: number): Promise<number[]> {
  const object = await getNexthop(send, id);
  if (object === undefined) return [];
  const members = nexthopGroupMembers(object);
  const singles =
    members === undefined ? [object] : await Promise.all(members.map((m) => getNexthop(send, m)));
  const out: number[] = [];
  for (const payload of singles) {
    const ifindex = payload === undefined ? undefined : parseNexthop(payload)?.ifindex;
    if (ifindex !== undefined && !out.includes(ifindex)) out.push(ifindex);
  }
  return out;
}

async function getNexthop(send: Send, id: number): Promise<Buffer | undefined> {
  try {
    const msgs = await send({
      type: RTM.GETNEXTHOP,
      flags: 0,
      body: getNexthopBody(id),
      op: `RTM_GETNEXTHOP id ${id}`,
    });
    return msgs.find((m) => m.type === RTM.NEWNEXTHOP)?.payload;
  } catch (e) {
    // Deleted since the lookup (ENOENT), or a kernel without nexthop objects.
    if (e instanceof NetlinkError && (e.errno === 'ENOENT' || e.errno === 'EOPNOTSUPP')) return undefined;
    throw e;
  }
}

/**
 * NetlinkHandle.answersFor: whether the FIB entry that matches `route`'s address is `route` itself, a
 * route straight out of its one device (no gateway, no nexthop object): the same prefix, protocol and
 * table (main when unset). False whenever the lookup shows anything else (another route in front of
 * it, an entry of a table a policy rule consulted first, none at all), which says only that this
 * lookup cannot vouch for it.
 */
export async function answersFor(send: Send, route: RouteInfo): Promise<boolean> {
  const matched = await lookup(send, parsePrefix(route.dst).address, true, true);
  return (
    matched?.unicast === true &&
    matched.onLink &&
    matched.dst === route.dst &&
    matched.protocol === (route.protocol ?? 0) &&
    matched.table === (route.table ?? RT_TABLE_MAIN) &&
    matched.ifindexes.length === 1 &&
    matched.ifindexes[0] === route.ifindex
  );
}

/**
 * NetlinkHandle.keyHolder: who holds the route key `dst` (a canonical prefix) in `table`, from one
 * FIB-match lookup of its first address. The entry that matches is the key's own route when one is
 * there and wins; a shorter prefix in that table means the key is free; anything the lookup cannot
 * show plainly (a longer prefix in front of it, an entry of another table, which a policy rule
 * consulted first, a blackhole, unreachable or prohibit route answering for the address) is
 * 'unknown', for the caller to treat as taken.
 */
export async function keyHolder(send: Send, dst: string, table = RT_TABLE_MAIN): Promise<KeyHolder> {
  const { address, prefixLen } = parsePrefix(dst);
  let matched: RouteAnswer | undefined;
  try {
    const msgs = await send({
      type: RTM.GETROUTE,
      flags: 0,
      body: routeLookupBody(address, true, true),
      op: `RTM_GETROUTE fibmatch ${address}`,
    });
    const answer = msgs.find((m) => m.type === RTM.NEWROUTE);
    matched = answer === undefined ? undefined : parseRouteAnswer(answer.payload);
  } catch (e) {
    // No route matches the address at all, so none holds the key.
    if (e instanceof NetlinkError && e.errno === 'ENETUNREACH') return { kind: 'free' };
    if (e instanceof NetlinkError && NO_ROUTE.has(e.errno))
      return { kind: 'unknown', why: `the lookup of ${address} answered ${e.errno}` };
    throw e;
  }
  if (matched === undefined) return { kind: 'unknown', why: `no answer to the lookup of ${address}` };
  if (matched.table !== table) {
    return { kind: 'unknown', why: `${matched.dst} of table ${matched.table} answers for ${address}` };
  }
  const matchedLen = parsePrefix(matched.dst).prefixLen;
  if (matchedLen < prefixLen) return { kind: 'free' };
  if (matchedLen > prefixLen) return { kind: 'unknown', why: `${matched.dst} answers for ${address}` };
  // Ours or not, a multipath route is never replaced by a step: the replace would take every nexthop
  // (one someone appended to ours among them); the full pass reports it.
  if (matched.multipath === true) return { kind: 'unknown', why: `a multipath route holds ${matched.dst}` };
  return { kind: 'route', protocol: matched.protocol, table: matched.table };
}
