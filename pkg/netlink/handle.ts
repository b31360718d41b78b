import type {
  AddAddress,
  AddressInfo,
  CreateVeth,
  CreateVxlan,
  Family,
  FdbEntry,
  LinkInfo,
  NeighbourEntry,
  NetlinkHandle,
  RouteFilter,
  RouteInfo,
  SetUpStep,
} from '../datapath/ports.ts';
import { AF, NLM_F, RT_TABLE_MAIN, RTM } from './constants.ts';
import { ExistsError, LinkNotFoundError, type NetlinkError } from './errors.ts';
import {
  addAddressBody,
  createVethBody,
  createVxlanBody,
  describeRoute,
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
  routeBody,
  routeTable,
  setLinkMtuBody,
  setLinkUpBody,
} from './messages.ts';
import { type Request, RtnlSocket, type SocketProbe } from './socket.ts';
import type { RawMessage } from './wire.ts';

/** NetlinkHandle plus what only the VXLAN backend needs. */
export interface ExtendedNetlinkHandle extends NetlinkHandle {
  /** Creates a VXLAN device (down) and returns it as the kernel reports it. */
  createVxlan(spec: CreateVxlan): Promise<LinkInfo>;
  /** Always present here (optional in the port). Throws the first failure after all were tried. */
  replaceRoutes(routes: RouteInfo[]): Promise<void>;
  /** replaceRoutes with the per-route outcome instead of throwing the first failure. */
  replaceRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]>;
  /**
   * NLM_F_CREATE|NLM_F_EXCL: creates the route or throws ExistsError when a route with the same kernel
   * key (family, prefix, table, metric) exists, whoever owns it. The per-node route step uses it so that
   * it never overwrites a route it did not know about.
   */
  addRoute(route: RouteInfo): Promise<void>;
}

const CREATE_EXCL = NLM_F.CREATE | NLM_F.EXCL;
const CREATE_REPLACE = NLM_F.CREATE | NLM_F.REPLACE;

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

class Handle implements ExtendedNetlinkHandle {
  private readonly sock: RtnlSocket;

  constructor(opts: OpenNetlinkOptions) {
    this.sock = new RtnlSocket(opts.prepareFd !== undefined ? { prepareFd: opts.prepareFd } : {});
  }

  // ---------------------------------------------------------------------------------------- links

  async getLink(name: string): Promise<LinkInfo | undefined> {
    try {
      const msgs = await this.sock.request({
        type: RTM.GETLINK,
        flags: 0,
        body: getLinkByNameBody(name),
        op: `RTM_GETLINK ${name}`,
      });
      return collect(msgs, RTM.NEWLINK, parseLink)[0];
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

  async setLinkUp(index: number): Promise<void> {
    await this.sock.request(setLinkUpRequest(index));
  }

  async setUp(steps: readonly SetUpStep[]): Promise<void> {
    const results = await this.sock.burst(steps.map(setUpRequest));
    for (const [i, err] of results.entries()) {
      if (err === undefined || (steps[i]!.kind === 'address' && err instanceof ExistsError)) continue;
      throw err;
    }
  }

  async setLinkMtu(index: number, mtu: number): Promise<void> {
    await this.sock.request({
      type: RTM.NEWLINK,
      flags: 0,
      body: setLinkMtuBody(index, mtu),
      op: `RTM_NEWLINK #${index} mtu ${mtu}`,
    });
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
   * Routes of one table (the main table unless filter.table says otherwise). The kernel ignores
   * most dump filters without NETLINK_GET_STRICT_CHK, so only the family is filtered in-kernel.
   */
  async listRoutes(filter: RouteFilter = {}): Promise<RouteInfo[]> {
    const msgs = await this.sock.dump({
      type: RTM.GETROUTE,
      flags: 0,
      body: dumpRoutesBody(filter.family),
      op: 'RTM_GETROUTE dump',
    });
    const table = filter.table ?? RT_TABLE_MAIN;
    const out: RouteInfo[] = [];
    for (const m of msgs) {
      if (m.type !== RTM.NEWROUTE) continue;
      if (filter.protocol !== undefined && m.payload.readUInt8(5) !== filter.protocol) continue;
      if (routeTable(m.payload) !== table) continue;
      const r = parseRoute(m.payload);
      if (r === undefined) continue;
      if (filter.ifindex !== undefined && r.ifindex !== filter.ifindex) continue;
      out.push(r);
    }
    return out;
  }

  async replaceRoute(route: RouteInfo): Promise<void> {
    await this.sock.request(replaceRouteRequest(route));
  }

  async addRoute(route: RouteInfo): Promise<void> {
    await this.sock.request({
      type: RTM.NEWROUTE,
      flags: CREATE_EXCL,
      body: routeBody(route),
      op: `RTM_NEWROUTE ${describeRoute(route)}`,
    });
  }

  /** Already gone (ESRCH/ENOENT, or its device vanished: ENODEV) counts as success. */
  async deleteRoute(route: RouteInfo): Promise<void> {
    await ignoreGone(
      this.sock.request({
        type: RTM.DELROUTE,
        flags: 0,
        body: routeBody(route, true),
        op: `RTM_DELROUTE ${describeRoute(route)}`,
      }),
    );
  }

  async replaceRoutes(routes: RouteInfo[]): Promise<void> {
    const results = await this.replaceRoutesSettled(routes);
    const failed = results.filter((r) => r !== undefined);
    if (failed.length > 0) throw failed[0]!;
  }

  replaceRoutesSettled(routes: readonly RouteInfo[]): Promise<(NetlinkError | undefined)[]> {
    return this.sock.burst(routes.map(replaceRouteRequest));
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

  /** NLM_F_APPEND adds one more remote for the MAC (all-zero MAC = flood list); EEXIST = present. */
  async appendFdb(entry: FdbEntry): Promise<void> {
    try {
      await this.sock.request({
        type: RTM.NEWNEIGH,
        flags: NLM_F.CREATE | NLM_F.APPEND,
        body: fdbBody(entry),
        op: `RTM_NEWNEIGH fdb ${entry.mac} dst ${entry.dst} dev #${entry.ifindex}`,
      });
    } catch (e) {
      if (!(e instanceof ExistsError)) throw e;
    }
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

function setLinkUpRequest(index: number): Request {
  return { type: RTM.NEWLINK, flags: 0, body: setLinkUpBody(index, true), op: `RTM_NEWLINK #${index} up` };
}

function addAddressRequest(spec: AddAddress): Request {
  return {
    type: RTM.NEWADDR,
    flags: CREATE_EXCL,
    body: addAddressBody(spec),
    op: `RTM_NEWADDR ${spec.address}/${spec.prefixLen} dev #${spec.ifindex}`,
  };
}

function setUpRequest(step: SetUpStep): Request {
  switch (step.kind) {
    case 'up':
      return setLinkUpRequest(step.index);
    case 'address':
      return addAddressRequest(step.address);
    case 'route':
      return replaceRouteRequest(step.route);
  }
}

function replaceRouteRequest(route: RouteInfo): Request {
  return {
    type: RTM.NEWROUTE,
    flags: CREATE_REPLACE,
    body: routeBody(route),
    op: `RTM_NEWROUTE ${describeRoute(route)}`,
  };
}

/**
 * Opens an rtnetlink handle bound to the network namespace of the calling thread, now and for the
 * handle's whole life. To bind one to a pod's namespace, call this inside pkg/netns withNetns.
 */
export function openNetlink(opts: OpenNetlinkOptions = {}): ExtendedNetlinkHandle {
  return new Handle(opts);
}
