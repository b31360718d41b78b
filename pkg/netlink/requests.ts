import {
  type AddAddress,
  type RouteInfo,
  type SetUpOutcome,
  type SetUpStep,
  TRELLIS_ROUTE_PROTOCOL,
} from '../datapath/ports.ts';
import { NLM_F, RTM } from './constants.ts';
import { ExistsError, type NetlinkError, RouteKeyTakenError } from './errors.ts';
import { addAddressBody, describeRoute, routeBody, setLinkNameMtuBody, setLinkUpBody } from './messages.ts';
import { deleteNexthopBody, nexthopBody } from './nexthop-messages.ts';
import type { Request } from './socket.ts';

/** Requests built the same way whichever socket sends them (handle.ts, off-thread-requests.ts). */

export const CREATE_EXCL = NLM_F.CREATE | NLM_F.EXCL;
export const CREATE_REPLACE = NLM_F.CREATE | NLM_F.REPLACE;

export function setLinkUpRequest(index: number): Request {
  return { type: RTM.NEWLINK, flags: 0, body: setLinkUpBody(index, true), op: `RTM_NEWLINK #${index} up` };
}

export function setLinkDownRequest(index: number): Request {
  return { type: RTM.NEWLINK, flags: 0, body: setLinkUpBody(index, false), op: `RTM_NEWLINK #${index} down` };
}

export function setLinkRequest(
  index: number,
  change: { name?: string; mtu?: number; alias?: string; mac?: string },
): Request {
  const what = [
    change.name === undefined ? '' : ` name ${change.name}`,
    change.mtu === undefined ? '' : ` mtu ${change.mtu}`,
    change.mac === undefined ? '' : ` address ${change.mac}`,
    change.alias === undefined ? '' : ` alias "${change.alias}"`,
  ].join('');
  return {
    type: RTM.NEWLINK,
    flags: 0,
    body: setLinkNameMtuBody(index, change),
    op: `RTM_NEWLINK #${index}${what}`,
  };
}

export function addAddressRequest(spec: AddAddress): Request {
  return {
    type: RTM.NEWADDR,
    flags: CREATE_EXCL,
    body: addAddressBody(spec),
    op: `RTM_NEWADDR ${spec.address}/${spec.prefixLen} dev #${spec.ifindex}`,
  };
}

export function routeRequest(route: RouteInfo, flags: number, nhid?: number): Request {
  return {
    type: RTM.NEWROUTE,
    flags,
    body: routeBody(route, false, nhid),
    op: () => `RTM_NEWROUTE ${describeRoute(route)}${nhid === undefined ? '' : ` nhid ${nhid}`}`,
  };
}

/** `named`: the route its error names, when the request carries less of it (a key-only delete). */
export function deleteRouteRequest(route: RouteInfo, named: RouteInfo = route): Request {
  return {
    type: RTM.DELROUTE,
    flags: 0,
    body: routeBody(route, true),
    op: () => `RTM_DELROUTE ${describeRoute(named)}`,
  };
}

/** An exclusive route create's EEXIST: another route holds the key (pkg/routes reports a conflict). */
export function keyTaken(err: NetlinkError | undefined): NetlinkError | undefined {
  return err instanceof ExistsError ? new RouteKeyTakenError(err.op) : err;
}

export function nexthopRequest(id: number, route: RouteInfo, flags: number): Request {
  return {
    type: RTM.NEWNEXTHOP,
    flags,
    body: nexthopBody({
      id,
      family: route.family,
      gateway: route.gateway!,
      ifindex: route.ifindex!,
      protocol: TRELLIS_ROUTE_PROTOCOL,
      ...(route.onlink === true ? { onlink: true } : {}),
    }),
    op: () => `RTM_NEWNEXTHOP id ${id} via ${route.gateway} dev #${route.ifindex} for ${route.dst}`,
  };
}

export function deleteNexthopRequest(id: number): Request {
  return { type: RTM.DELNEXTHOP, flags: 0, body: deleteNexthopBody(id), op: () => `RTM_DELNEXTHOP id ${id}` };
}

/**
 * The route as a delete of ours names it: key, protocol and scope only, so that an IPv4 route which
 * names a nexthop object matches (a delete naming a gateway would not).
 */
export function routeKeyOnly(route: RouteInfo): RouteInfo {
  return {
    ...route,
    gateway: undefined,
    ifindex: undefined,
    onlink: undefined,
    scope: route.scope ?? 'universe',
  };
}

/**
 * One step of NetlinkHandle.setUp as its request: a route is created or replaced, or with
 * keepExisting created only where its destination is free (EEXIST otherwise, which setUp tolerates).
 */
export function setUpRequest(step: SetUpStep): Request {
  switch (step.kind) {
    case 'up':
      return setLinkUpRequest(step.index);
    case 'down':
      return setLinkDownRequest(step.index);
    case 'link':
      return setLinkRequest(step.index, step);
    case 'address':
      return addAddressRequest(step.address);
    case 'route':
      return routeRequest(step.route, step.keepExisting === true ? CREATE_EXCL : CREATE_REPLACE);
  }
}

/**
 * What NetlinkHandle.setUp throws, from each step's outcome (undefined: done): the first failure,
 * except that an address which exists already counts as added, and a keepExisting route whose
 * destination is taken as kept.
 */
export function firstSetUpFailure(
  steps: readonly SetUpStep[],
  results: readonly (NetlinkError | undefined)[],
): NetlinkError | undefined {
  for (let i = 0; i < results.length; i++) {
    const err = results[i];
    if (err === undefined || (err instanceof ExistsError && mayExist(steps[i]!))) continue;
    return err;
  }
  return undefined;
}

function mayExist(step: SetUpStep): boolean {
  return step.kind === 'address' || (step.kind === 'route' && step.keepExisting === true);
}

/** What NetlinkHandle.setUp resolves with, from each step's outcome; throws firstSetUpFailure's. */
export function setUpOutcomes(
  steps: readonly SetUpStep[],
  results: readonly (NetlinkError | undefined)[],
): SetUpOutcome[] {
  const failure = firstSetUpFailure(steps, results);
  if (failure !== undefined) throw failure;
  // Array.from: results may be sparse (a step without an answer succeeded).
  return Array.from(results, (err) => (err === undefined ? 'done' : 'kept'));
}
