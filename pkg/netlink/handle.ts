import type {
  AddAddress,
  AddressInfo,
  CreateVeth,
  CreateVxlan,
  Family,
  FdbEntry,
  KeyHolder,
  LinkInfo,
  NeighbourEntry,
  NetlinkHandle,
  RouteFilter,
  RouteInfo,
  RouteLookup,
  SetUpOutcome,
  SetUpStep,
  VxlanParams,
} from '../datapath/ports.ts';
import { TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { AF, NLM_F, RT_TABLE_LOCAL, RT_TABLE_MAIN, RTM } from './constants.ts';
import { ExistsError, LinkNotFoundError, NetlinkError } from './errors.ts';
import {
  type Body,
  createVethBody,
  createVxlanBody,
  dumpAddressesBody,
  dumpNeighboursBody,
  dumpRoutesBody,
  fdbBody,
  getLinkByNameBody,
  ifinfomsg,
  neighbourBody,
  parseAddress,
  parseFdb,
  parseLink,
  parseNeighbour,
  parseRoute,
  parseVxlanParams,
  routeNexthopId,
  setLinkMacBody,
  setLinkMtuBody,
} from './messages.ts';
import { NexthopBook, usesNexthop } from './nexthop-book.ts';
import {
  dumpNexthopsBody,
  type NexthopInfo,
  nexthopIdAndProtocol,
  parseNexthop,
} from './nexthop-messages.ts';
import {
  addAddressRequest,
  CREATE_EXCL,
  CREATE_REPLACE,
  deleteNexthopRequest,
  deleteRouteRequest,
  keyTaken,
  nexthopRequest,
  routeKeyOnly,
  routeRequest,
  setLinkUpRequest,
  setUpOutcomes,
  setUpRequest,
} from './requests.ts';
import { answersFor, keyHolder, routeTo } from './route-lookup.ts';
import { RtnlSocket, type SocketProbe } from './socket.ts';
import { type RawMessage, u8 } from './wire.ts';

/** NetlinkHandle plus what only the VXLAN backend needs. */
export interface ExtendedNetlinkHandle extends NetlinkHandle {
  /** Creates a VXLAN device (down) and returns it as the kernel reports it. */
  createVxlan(spec: CreateVxlan): Promise<LinkInfo>;
  /** Always present here (optional in the port). */
  vxlanParams(name: string): Promise<VxlanParams | undefined | null>;
  /** Always present here (optional in the port). */
  setLinkMac(index: number, mac: string): Promise<void>;
  /** Always present here (optional in the port). */
  answersFor(route: RouteInfo): Promise<boolean>;
  /** Always present here (optional in the port). Throws the first failure after all were tried. */
  replaceRoutes(routes: RouteInfo[]): Promise<void>;
  /** replaceRoutes with the per-route outcome instead of throwing the first failure. */
  replaceRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]>;
  /** addRoute for a burst, with the per-route outcome (RouteKeyTakenError where a route holds the key). */
  addRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]>;
  /**
   * NLM_F_CREATE|NLM_F_EXCL: creates the route or throws RouteKeyTakenError (an ExistsError) when a
   * route with the same kernel key (family, prefix, table, metric) exists, whoever owns it. The
   * per-node route step uses it so that it never overwrites a route it did not know about.
   */
  addRoute(route: RouteInfo): Promise<void>;
  /** Every nexthop object in the namespace (empty on kernels without them). */
  listNexthops(): Promise<NexthopInfo[]>;
  /**
   * Deletes our nexthop objects (protocol 126) that no route points at any more: left by a route
   * deleted or replaced behind our back, or by a crash between writing an object and its route.
   * Returns how many were deleted.
   */
  pruneNexthops(): Promise<number>;
  /** Always present here (optional in the port). */
  routesNexthop(id: number): boolean;
  /** listRoutes one route at a time as the dump arrives (nothing kept); restart: it starts over. */
  scanRoutes(filter: RouteFilter, visit: (r: RouteInfo) => void, restart?: () => void): Promise<void>;
}

/** errnos that mean "the thing to delete is already gone". */
const GONE = new Set(['ESRCH', 'ENOENT', 'EADDRNOTAVAIL', 'ENODEV']);

async function ignoreGone(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!GONE.has((e as NetlinkError).errno)) throw e;
  }
}

function collect<T>(msgs: RawMessage[], type: number, parse: (payload: Buffer) => T | undefined): T[] {
  const out: T[] = [];
  for (const m of msgs) {
    if (m.type !== type) continue;
    const v = parse(m.payload);
    if (v !== undefined) out.push(v);
  }
  return out;
}

export interface OpenNetlinkOptions {
  /** See SocketOptions.prepareFd (pkg/netns forces a larger receive buffer and NETLINK_CAP_ACK). */
  prepareFd?: (fd: number) => SocketProbe | undefined;
}

const P = TRELLIS_ROUTE_PROTOCOL;

/** Fresh ids an exclusive add tries when each is found taken since the last dump (EEXIST). */
const ADD_ID_ATTEMPTS = 3;

class Handle implements ExtendedNetlinkHandle {
  private readonly sock: RtnlSocket;
  /** Our gateway routes' nexthop objects (nexthop-book.ts says why they have them). */
  private readonly book = new NexthopBook(P);
  /** Settles once the kernel's nexthop ids are known; false where the kernel has no nexthop objects. */
  private nexthops: Promise<boolean> | undefined;
  /** The same, synchronously: dumps learn their routes' objects as they parse them once it is true. */
  private nexthopsKnown = false;

  constructor(opts: OpenNetlinkOptions) {
    this.sock = new RtnlSocket(opts.prepareFd !== undefined ? { prepareFd: opts.prepareFd } : {});
  }

  // ---------------------------------------------------------------------------------------- links

  async getLink(name: string): Promise<LinkInfo | undefined> {
    const payload = await this.linkMessage(name);
    return payload === undefined ? undefined : parseLink(payload);
  }

  /** The kernel's RTM_NEWLINK payload for the link called `name`; undefined when there is none. */
  private async linkMessage(name: string): Promise<Buffer | undefined> {
    try {
      const msgs = await this.sock.request({
        type: RTM.GETLINK,
        flags: 0,
        body: getLinkByNameBody(name),
        op: `RTM_GETLINK ${name}`,
      });
      return msgs.find((m) => m.type === RTM.NEWLINK)?.payload;
    } catch (e) {
      if (e instanceof LinkNotFoundError) return undefined;
      throw e;
    }
  }

  async getLinkByIndex(index: number): Promise<LinkInfo | undefined> {
    try {
      const msgs = await this.sock.request({
        type: RTM.GETLINK,
        flags: 0,
        body: [ifinfomsg(index)],
        op: `RTM_GETLINK #${index}`,
      });
      return collect(msgs, RTM.NEWLINK, parseLink)[0];
    } catch (e) {
      if (e instanceof LinkNotFoundError) return undefined;
      throw e;
    }
  }

  async listLinks(): Promise<LinkInfo[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETLINK,
      flags: 0,
      body: [ifinfomsg()],
      op: 'RTM_GETLINK dump',
    });
    return collect(msgs, RTM.NEWLINK, parseLink);
  }

  async createVeth(spec: CreateVeth): Promise<void> {
    await this.sock.request({
      type: RTM.NEWLINK,
      flags: CREATE_EXCL,
      body: createVethBody(spec),
      op: `RTM_NEWLINK veth ${spec.name} peer ${spec.peerName}`,
    });
  }

  async createVxlan(spec: CreateVxlan): Promise<LinkInfo> {
    await this.sock.request({
      type: RTM.NEWLINK,
      flags: CREATE_EXCL,
      body: createVxlanBody(spec),
      op: `RTM_NEWLINK vxlan ${spec.name} vni ${spec.vni}`,
    });
    const link = await this.getLink(spec.name);
    if (link === undefined) throw new LinkNotFoundError(`RTM_GETLINK ${spec.name} after create`);
    return link;
  }

  async vxlanParams(name: string): Promise<VxlanParams | undefined | null> {
    const payload = await this.linkMessage(name);
    return payload === undefined ? undefined : parseVxlanParams(payload);
  }

  setLinkMac(index: number, mac: string): Promise<void> {
    return this.changeLink(index, setLinkMacBody(index, mac), `address ${mac}`);
  }

  async setLinkUp(index: number): Promise<void> {
    await this.sock.request(setLinkUpRequest(index));
  }

  async setUp(steps: readonly SetUpStep[]): Promise<SetUpOutcome[]> {
    return setUpOutcomes(steps, await this.sock.burst(steps.map(setUpRequest)));
  }

  setLinkMtu(index: number, mtu: number): Promise<void> {
    return this.changeLink(index, setLinkMtuBody(index, mtu), `mtu ${mtu}`);
  }

  /** RTM_NEWLINK without NLM_F_CREATE: sets the attributes in `body` on the existing link. */
  private async changeLink(index: number, body: Body, what: string): Promise<void> {
    await this.sock.request({ type: RTM.NEWLINK, flags: 0, body, op: `RTM_NEWLINK #${index} ${what}` });
  }

  async deleteLink(index: number): Promise<void> {
    await this.sock.request({
      type: RTM.DELLINK,
      flags: 0,
      body: [ifinfomsg(index)],
      op: `RTM_DELLINK #${index}`,
    });
  }

  // ------------------------------------------------------------------------------------ addresses

  async listAddresses(family?: Family, ifindex?: number): Promise<AddressInfo[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETADDR,
      flags: 0,
      body: dumpAddressesBody(family),
      op: 'RTM_GETADDR dump',
    });
    const all = collect(msgs, RTM.NEWADDR, parseAddress);
    return ifindex === undefined ? all : all.filter((a) => a.ifindex === ifindex);
  }

  async addAddress(spec: AddAddress): Promise<void> {
    try {
      await this.sock.request(addAddressRequest(spec));
    } catch (e) {
      if (!(e instanceof ExistsError)) throw e;
    }
  }

  // --------------------------------------------------------------------------------------- routes

  /**
   * Routes of one table (the main table unless filter.table says otherwise; 'routing': all but
   * the local table). The kernel ignores
   * most dump filters without NETLINK_GET_STRICT_CHK, so only the family is filtered in-kernel.
   */
  async listRoutes(filter: RouteFilter = {}): Promise<RouteInfo[]> {
    const out: RouteInfo[] = [];
    // A dump started over (interrupted) hands every route again: the first attempt's go.
    await this.scanRoutes(
      filter,
      (r) => out.push(r),
      () => {
        out.length = 0;
      },
    );
    return out;
  }

  /**
   * listRoutes' routes handed to visit one by one as the dump arrives, none kept here (see
   * RtnlSocket.streamDump), in the kernel's order except routes whose nexthop object has to be read
   * first (nexthop_compat_mode=0), which come last. restart: the dump is starting over (the table
   * changed meanwhile); forget what visit has seen.
   */
  async scanRoutes(filter: RouteFilter, visit: (r: RouteInfo) => void, restart?: () => void): Promise<void> {
    const table = filter.table ?? RT_TABLE_MAIN;
    const wanted = (t: number): boolean => (table === 'routing' ? t !== RT_TABLE_LOCAL : t === table);
    const emit = (r: RouteInfo): void => {
      if (filter.ifindex === undefined || r.ifindex === filter.ifindex) visit(r);
    };
    /** Routes naming an object the dump gave no gateway or device for: filled in, then visited. */
    const unfilled: [RouteInfo, number][] = [];
    /** Routes of ours on an object, seen before this handle knew the kernel's objects: learned after. */
    const unlearned: [RouteInfo, number][] = [];
    let failure: unknown;
    let nhid: number | undefined;
    const onNexthop = (id: number): void => {
      nhid = id;
    };
    await this.sock.streamDump(
      { type: RTM.GETROUTE, flags: 0, body: dumpRoutesBody(filter.family), op: 'RTM_GETROUTE dump' },
      (m) => {
        if (failure !== undefined || m.type !== RTM.NEWROUTE) return;
        if (filter.protocol !== undefined && u8(m.payload, 5) !== filter.protocol) return;
        // This runs inside the socket's native callback, where nothing may throw: failures wait.
        try {
          nhid = undefined;
          const r = parseRoute(m.payload, onNexthop, filter.unreadable === true);
          if (r === undefined || !wanted(r.table ?? RT_TABLE_MAIN)) return;
          if (nhid !== undefined) {
            if (r.gateway === undefined && r.ifindex === undefined) {
              unfilled.push([r, nhid]);
              return;
            }
            if (!this.nexthopsKnown) unlearned.push([r, nhid]);
            else if (r.protocol === P) this.book.learnRoute(r, nhid);
          }
          emit(r);
        } catch (e) {
          failure = e;
        }
      },
      () => {
        unfilled.length = 0;
        unlearned.length = 0;
        failure = undefined;
        restart?.();
      },
    );
    if (failure !== undefined) throw failure;
    if (unlearned.length === 0 && unfilled.length === 0) return;
    if (!(await this.nexthopsReady())) return;
    for (const [r, id] of unlearned) if (r.protocol === P) this.book.learnRoute(r, id);
    if (unfilled.length === 0) return;
    const objects = new Map((await this.listNexthops()).map((nh) => [nh.id, nh]));
    for (const [r, id] of unfilled) {
      if (r.protocol === P) this.book.learnRoute(r, id);
      const nh = objects.get(id);
      if (nh?.gateway !== undefined) r.gateway = nh.gateway;
      if (nh?.ifindex !== undefined) r.ifindex = nh.ifindex;
      if (nh?.onlink === true) r.onlink = true;
      emit(r);
    }
  }

  routeTo(address: string): Promise<RouteLookup | undefined> {
    return routeTo((req) => this.sock.request(req), address);
  }

  /** Whether the lookup of `route`'s address matches `route` itself (one lookup, see route-lookup.ts). */
  answersFor(route: RouteInfo): Promise<boolean> {
    return answersFor((req) => this.sock.request(req), route);
  }

  /** Who holds the key of `dst` in `table` (one lookup, see route-lookup.ts); for a per-node step's replaces. */
  keyHolder(dst: string, table?: number): Promise<KeyHolder> {
    return keyHolder((req) => this.sock.request(req), dst, table);
  }

  async replaceRoute(route: RouteInfo): Promise<void> {
    const [err] = await this.replaceRoutesSettled([route]);
    if (err !== undefined) throw err;
  }

  async addRoute(route: RouteInfo): Promise<void> {
    try {
      await this.addRouteOnce(route);
    } catch (e) {
      if (!this.isOnlink6Refusal(e as NetlinkError, route)) throw e;
      const err = await this.addOnlink6(route);
      if (err !== undefined) throw err;
    }
  }

  private async addRouteOnce(route: RouteInfo): Promise<void> {
    if (!usesNexthop(route, P) || !(await this.nexthopsReady())) {
      try {
        await this.sock.request(routeRequest(route, CREATE_EXCL));
      } catch (e) {
        throw keyTaken(e as NetlinkError);
      }
      return;
    }
    // A fresh object even if the book knows one for this key: exclusive means nothing already there
    // may change, and the object of a route we believe exists is that route's.
    for (let attempt = 1; ; attempt++) {
      const id = this.book.allocate();
      const [nhErr, routeErr] = await this.sock.burst([
        nexthopRequest(id, route, CREATE_EXCL),
        routeRequest(route, CREATE_EXCL, id),
      ]);
      if (nhErr === undefined && routeErr === undefined) {
        this.book.bind(route, id);
        return;
      }
      if (nhErr === undefined) {
        await ignoreGone(this.sock.request(deleteNexthopRequest(id)));
        this.book.dropped([id]);
        throw keyTaken(routeErr);
      }
      // The object refused, and the route, if the kernel took it, went in through whatever holds that
      // id (another program's object, an old one of ours a prune could not delete): out again, the key
      // left free as it was. An id taken since the last dump (EEXIST) stays taken; another one is tried.
      if (routeErr === undefined) {
        await ignoreGone(this.sock.request(deleteRouteRequest(routeKeyOnly(route), route)));
      }
      this.book.notOurs(id);
      if (nhErr.errno !== 'EEXIST' || attempt >= ADD_ID_ATTEMPTS) throw nhErr;
    }
  }

  /**
   * Already gone (ESRCH/ENOENT, or its device vanished: ENODEV) counts as success. A gateway route
   * of ours is matched by its key, protocol and scope only (an IPv4 route that names a nexthop
   * object does not match a delete naming a gateway), then its object is deleted.
   */
  async deleteRoute(route: RouteInfo): Promise<void> {
    if (!usesNexthop(route, P) || !(await this.nexthopsReady())) {
      await ignoreGone(this.sock.request(deleteRouteRequest(route)));
      return;
    }
    const id = this.book.unbind(route);
    const reqs = [deleteRouteRequest(routeKeyOnly(route), route)];
    if (id !== undefined) reqs.push(deleteNexthopRequest(id));
    const results = await this.sock.burst(reqs);
    if (id !== undefined && (results[1] === undefined || GONE.has(results[1].errno))) this.book.dropped([id]);
    for (const e of results) if (e !== undefined && !GONE.has(e.errno)) throw e;
  }

  async replaceRoutes(routes: RouteInfo[]): Promise<void> {
    const results = await this.replaceRoutesSettled(routes);
    const failed = results.filter((r) => r !== undefined);
    if (failed.length > 0) throw failed[0]!;
  }

  /**
   * One burst for all routes; a gateway route of ours is written as its nexthop object (the one it
   * has, or a fresh one) followed by the route naming it, in the same burst, in that order. A route's
   * outcome is the first failure among its requests.
   */
  async replaceRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]> {
    const out = await this.writeRoutesSettled(routes, CREATE_REPLACE);
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      if (this.isOnlink6Refusal(out[i], r)) out[i] = await this.rewriteOnlink6(r);
    }
    return out;
  }

  /** The kernel's refusal of an IPv6 onlink gateway of ours (rewriteOnlink6 says when). */
  private isOnlink6Refusal(err: NetlinkError | undefined, r: RouteInfo): boolean {
    return err?.errno === 'EINVAL' && r.family === 6 && r.onlink === true && r.protocol === P;
  }

  /**
   * IPv6 refuses an onlink gateway when the route to that gateway (other than a default route) leaves
   * through another device (ip6_route_check_nh_onlink: "Nexthop has invalid gateway or device
   * mismatch", EINVAL), for a route and a nexthop object alike. A peer whose path moves from direct
   * to VXLAN hits exactly that: its VTEP address lies in its own pod CIDR, whose route (the one being
   * replaced) still goes out through the underlay. So the key is first replaced, atomically, by the
   * same prefix on the VXLAN device without a gateway (no onlink check, no gap: a delete and add would
   * leave the pods' traffic to the default route meanwhile), after which the gateway is on that device
   * and the onlink route replaces it. The old object goes best-effort (prune collects a leftover).
   * Should the last write fail, the interim route is deleted too: without a gateway it would look like
   * no route of ours (diff.ts), and block the key; the next pass then adds the route afresh.
   */
  private async rewriteOnlink6(route: RouteInfo): Promise<NetlinkError | undefined> {
    const bridge: RouteInfo = { ...route, gateway: undefined, onlink: undefined };
    try {
      await this.sock.request(routeRequest(bridge, CREATE_REPLACE));
    } catch (e) {
      return e as NetlinkError; // The old route is still in place.
    }
    const id = this.book.unbind(route);
    if (id !== undefined) {
      const gone = await this.sock.request(deleteNexthopRequest(id)).then(
        () => true,
        (e: NetlinkError) => GONE.has(e.errno),
      );
      if (gone) this.book.dropped([id]);
    }
    const [err] = await this.writeRoutesSettled([route], CREATE_REPLACE);
    if (err !== undefined) await ignoreGone(this.sock.request(deleteRouteRequest(bridge)));
    return err;
  }

  /**
   * The same refusal for a key no route holds yet: a new tunnelled peer whose VTEP address an
   * underlay route other than the default one covers (the pod network's /48 or a ULA fc00::/7 via the
   * router: the kernel finds the gateway through the underlay device). The key is first created,
   * exclusively, as the prefix on the VXLAN device without a gateway (never over anyone's route),
   * then replaced by the onlink route; should that fail, the interim route is deleted again.
   */
  private async addOnlink6(route: RouteInfo): Promise<NetlinkError | undefined> {
    const bridge: RouteInfo = { ...route, gateway: undefined, onlink: undefined };
    try {
      await this.sock.request(routeRequest(bridge, CREATE_EXCL));
    } catch (e) {
      return keyTaken(e as NetlinkError);
    }
    const [err] = await this.writeRoutesSettled([route], CREATE_REPLACE);
    if (err !== undefined) await ignoreGone(this.sock.request(deleteRouteRequest(bridge)));
    return err;
  }

  /**
   * addRoute for a burst, with per-route outcomes: each route is created only where no route holds
   * its kernel key (EEXIST otherwise). A full pass writes its new routes this way, so a route it cannot
   * see in a dump (a type or shape the parser skips: unreachable, prohibit, multipath) is never
   * overwritten; its refusal is a RouteKeyTakenError, which pkg/routes reports as a conflict.
   */
  async addRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]> {
    const out = await this.writeRoutesSettled(routes, CREATE_EXCL);
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      if (this.isOnlink6Refusal(out[i], r)) out[i] = await this.addOnlink6(r);
    }
    return out;
  }

  private async writeRoutesSettled(
    routes: readonly RouteInfo[],
    routeFlags: number,
    attempt = 1,
  ): Promise<(NetlinkError | undefined)[]> {
    const exclusive = (routeFlags & NLM_F.EXCL) !== 0;
    const viaNexthops = routes.some((r) => usesNexthop(r, P)) && (await this.nexthopsReady());
    if (!viaNexthops) {
      const results = await this.sock.burst({
        length: routes.length,
        at: (i) => routeRequest(routes[i]!, routeFlags),
      });
      return exclusive ? results.map((e) => keyTaken(e)) : results; // map keeps the holes (successes)
    }
    /** Per route: index of its first request, and the object it is written through. */
    const firsts = new Array<number>(routes.length);
    const objects = new Array<number | undefined>(routes.length);
    /** Routes written through a fresh id (not one the book knew for them). */
    const fresh = new Array<boolean>(routes.length).fill(false);
    /** Per request: its route, and whether it writes the route's object (the route's own comes after). */
    const routeOf = new Int32Array(2 * routes.length);
    const objectFirst = new Uint8Array(2 * routes.length);
    let count = 0;
    // Indexed loops over the burst's routes: with V8's optimizing tiers off (scripts/build.ts), each
    // step of `for (const [i, r] of routes.entries())` allocates two objects, ~5x the time of an index.
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      firsts[i] = count;
      if (!usesNexthop(r, P)) {
        routeOf[count++] = i;
        continue;
      }
      const known = this.book.current(r);
      objects[i] = known ?? this.book.allocate();
      fresh[i] = known === undefined;
      objectFirst[count] = 1;
      routeOf[count++] = i;
      routeOf[count++] = i;
    }
    // Made as their datagram goes (Requests): only the requests in flight are alive at a time. A known
    // object is replaced in place (the route follows at once); a fresh id must be free. An object whose
    // route is then refused is left unbound, for the pass's prune.
    const results = await this.sock.burst({
      length: count,
      at: (j) => {
        const i = routeOf[j]!;
        const id = objects[i];
        if (objectFirst[j] === 1)
          return nexthopRequest(id!, routes[i]!, fresh[i] ? CREATE_EXCL : CREATE_REPLACE);
        return id === undefined
          ? routeRequest(routes[i]!, routeFlags)
          : routeRequest(routes[i]!, routeFlags, id);
      },
    });
    const out = new Array<NetlinkError | undefined>(routes.length);
    /** Routes created exclusively through an object whose replacement the kernel refused. */
    const stale: RouteInfo[] = [];
    /** Routes whose fresh id another program took since the last dump (EEXIST): written again. */
    const again: number[] = [];
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      const end = i + 1 < routes.length ? firsts[i + 1]! : count;
      // The route's own request comes last; a nexthop object's EEXIST (an id taken meanwhile) is not that.
      for (let j = firsts[i]!; j < end && out[i] === undefined; j++)
        out[i] = exclusive && j === end - 1 ? keyTaken(results[j]) : results[j];
      const id = objects[i];
      if (id !== undefined && out[i] === undefined) this.book.bind(r, id);
      // The object refused (an IPv6 onlink gateway an underlay route covers, say) but the route went in
      // through it as it was: take the route out again, so the failure is the whole outcome and the
      // caller's fallback (addOnlink6) finds the key free rather than calling our own route a conflict.
      // A replace through a fresh id whose object was refused went through whatever holds that id
      // (another program's object): out again too, never left pointing there.
      if (
        (exclusive || fresh[i]) &&
        id !== undefined &&
        out[i] !== undefined &&
        results[end - 1] === undefined
      )
        stale.push(r);
      // An id taken since the last dump: the route is written again through another.
      if (id !== undefined && fresh[i] && results[firsts[i]!]?.errno === 'EEXIST') {
        this.book.notOurs(id);
        again.push(i);
      }
    }
    if (stale.length > 0) {
      await this.sock.burst(stale.map((r) => deleteRouteRequest(routeKeyOnly(r), r)));
    }
    if (again.length > 0 && attempt < ADD_ID_ATTEMPTS) {
      const retried = await this.writeRoutesSettled(
        again.map((i) => routes[i]!),
        routeFlags,
        attempt + 1,
      );
      for (const [k, i] of again.entries()) out[i] = retried[k];
    }
    return out;
  }

  // ------------------------------------------------------------------------------------- nexthops

  routesNexthop(id: number): boolean {
    return this.book.routes(id);
  }

  async listNexthops(): Promise<NexthopInfo[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETNEXTHOP,
      flags: 0,
      body: dumpNexthopsBody(),
      op: 'RTM_GETNEXTHOP dump',
    });
    return collect(msgs, RTM.NEWNEXTHOP, parseNexthop);
  }

  async pruneNexthops(): Promise<number> {
    if (!(await this.nexthopsReady())) return 0;
    // Streamed, and only the ids and protocols read: a whole dump's messages and parsed objects (5,000
    // at 5,000 nodes) were alive at once, at the cold pass's end, for two numbers each.
    const objects: { id: number; protocol: number }[] = [];
    await this.sock.streamDump(
      { type: RTM.GETNEXTHOP, flags: 0, body: dumpNexthopsBody(), op: 'RTM_GETNEXTHOP dump' },
      (m) => {
        const nh = m.type === RTM.NEWNEXTHOP ? nexthopIdAndProtocol(m.payload) : undefined;
        if (nh !== undefined) objects.push(nh);
      },
      () => {
        objects.length = 0;
      },
    );
    this.book.learnNexthops(objects);
    let orphans = this.book.orphans(await this.referencedNexthops());
    // Deleting an object deletes the routes on it. An IPv6 route dump the table changed under (pods
    // added or deleted meanwhile) can leave out a live route, and the kernel does not flag it
    // (NLM_F_DUMP_INTR is for links, addresses and objects): an object is an orphan only when a
    // second dump names it no more than the first did.
    if (orphans.length > 0) {
      const again = await this.referencedNexthops();
      orphans = orphans.filter((id) => !again.has(id));
    }
    if (orphans.length === 0) return 0;
    // Forgotten first: their deletion notifications must not read as a live route's object going.
    this.book.dropped(orphans);
    const results = await this.sock.burst(orphans.map(deleteNexthopRequest));
    const deleted = orphans.filter((_, i) => results[i] === undefined || GONE.has(results[i].errno));
    // An object the kernel did not delete is still there, still ours: its id must not be handed out
    // again (an exclusive add would then collide with it), and the next prune tries it again.
    const kept = orphans.filter((_, i) => results[i] !== undefined && !GONE.has(results[i].errno));
    this.book.stillOurs(kept);
    const failed = results.find((e) => e !== undefined && !GONE.has(e.errno));
    if (failed !== undefined) throw failed;
    return deleted.length;
  }

  /** The nexthop objects routes name, in every table and family, from one route dump. */
  private async referencedNexthops(): Promise<Set<number>> {
    const referenced = new Set<number>();
    await this.sock.streamDump(
      { type: RTM.GETROUTE, flags: 0, body: dumpRoutesBody(), op: 'RTM_GETROUTE dump' },
      (m) => {
        const id = m.type === RTM.NEWROUTE ? routeNexthopId(m.payload) : undefined;
        if (id !== undefined) referenced.add(id);
      },
      () => referenced.clear(),
    );
    return referenced;
  }

  /** Probes once: a kernel before 5.3 answers EOPNOTSUPP, and gateway routes are written plainly. */
  private nexthopsReady(): Promise<boolean> {
    this.nexthops ??= this.listNexthops().then(
      (list) => {
        this.book.learnNexthops(list);
        this.nexthopsKnown = true;
        return true;
      },
      (e: unknown) => {
        if (e instanceof NetlinkError && e.errno === 'EOPNOTSUPP') return false;
        this.nexthops = undefined; // a transient failure: ask again next time
        throw e;
      },
    );
    return this.nexthops;
  }

  // ------------------------------------------------------------------------------------ neighbours

  async replaceNeighbour(entry: NeighbourEntry): Promise<void> {
    await this.sock.request({
      type: RTM.NEWNEIGH,
      flags: CREATE_REPLACE,
      body: neighbourBody(entry),
      op: `RTM_NEWNEIGH ${entry.address} lladdr ${entry.mac} dev #${entry.ifindex}`,
    });
  }

  async deleteNeighbour(entry: NeighbourEntry): Promise<void> {
    await ignoreGone(
      this.sock.request({
        type: RTM.DELNEIGH,
        flags: 0,
        body: neighbourBody(entry, true),
        op: `RTM_DELNEIGH ${entry.address} dev #${entry.ifindex}`,
      }),
    );
  }

  async listNeighbours(ifindex?: number): Promise<NeighbourEntry[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETNEIGH,
      flags: 0,
      body: dumpNeighboursBody(AF.UNSPEC),
      op: 'RTM_GETNEIGH dump',
    });
    const all = collect(msgs, RTM.NEWNEIGH, parseNeighbour);
    return ifindex === undefined ? all : all.filter((n) => n.ifindex === ifindex);
  }

  async replaceFdb(entry: FdbEntry): Promise<void> {
    await this.sock.request({
      type: RTM.NEWNEIGH,
      flags: NLM_F.CREATE | NLM_F.REPLACE,
      body: fdbBody(entry),
      op: `RTM_NEWNEIGH fdb ${entry.mac} dst ${entry.dst} dev #${entry.ifindex} (replace)`,
    });
  }

  async deleteFdb(entry: FdbEntry): Promise<void> {
    await ignoreGone(
      this.sock.request({
        type: RTM.DELNEIGH,
        flags: 0,
        body: fdbBody(entry),
        op: `RTM_DELNEIGH fdb ${entry.mac} dst ${entry.dst} dev #${entry.ifindex}`,
      }),
    );
  }

  async listFdb(ifindex?: number): Promise<FdbEntry[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETNEIGH,
      flags: 0,
      body: dumpNeighboursBody(AF.BRIDGE),
      op: 'RTM_GETNEIGH fdb dump',
    });
    const all = collect(msgs, RTM.NEWNEIGH, parseFdb);
    return ifindex === undefined ? all : all.filter((n) => n.ifindex === ifindex);
  }

  close(): void {
    this.sock.close();
  }
}

/**
 * Opens an rtnetlink handle bound to the network namespace of the calling thread, now and for the
 * handle's whole life. To bind one to a pod's namespace, call this inside pkg/netns withNetns.
 */
export function openNetlink(opts: OpenNetlinkOptions = {}): ExtendedNetlinkHandle {
  return new Handle(opts);
}
