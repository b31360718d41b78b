/**
 * Node objects -> the routes this node should have. Pure: same input, same output, same order.
 *
 * - Every other node's pod CIDRs are routed via that node's InternalIP of the same family, on the interface
 *   whose connected subnet contains that IP (host-gw). A node we cannot reach that way is a problem, not an
 *   error: the rest of the cluster still gets its routes.
 * - In auto mode a node is routed directly only when the connected subnet its InternalIP falls in (longest
 *   prefix, the one the kernel would use) holds this node's own InternalIP of the family too (Calico's
 *   CrossSubnet, Antrea's hybrid mode and Cilium's auto-direct-node-routes draw the same line), and,
 *   when the peer published the subnets it routes directly on (directSubnets, pkg/routes/direct-subnets.ts),
 *   one of them holds ours: the peer then routes directly back, so both directions take one path. Without
 *   the second check, subnets of different prefix lengths on one L2 (a /16 here, a /24 there) would route
 *   one way and tunnel the other, and strict reverse-path filtering (rp_filter=1, RHEL's default) drops the
 *   asymmetric packets. A peer reached over another leg of a multi-homed node (or a longer-prefix leg
 *   inside the home subnet) tunnels, as the peer tunnels back. One case stays one-way, as
 *   docs/overlay.md says: a peer with such a nested leg holding our InternalIP tunnels to us, while its
 *   published wide subnet holds our InternalIP and we route to it directly (the list tells containment,
 *   not which of its subnets the peer would pick). A node whose own InternalIP is on no
 *   connected subnet (a /32 on lo, from a range of its own) tunnels to every peer of the family, as they
 *   tunnel to it (it publishes no subnet); only without a VXLAN device of the family does it route over
 *   any connected subnet.
 * - In auto mode a node not routed directly is reached through our VXLAN device of that family; in vxlan mode every
 *   node is. A VXLAN route is `podCIDR via <peer VTEP address> dev trellis.vN onlink`, the VTEP address being
 *   the network address of the peer's first pod CIDR of the family (see vtepAddress). It needs the device
 *   (opts.overlay) and the peer's published VTEP MAC; without either the node is unreachable (a problem),
 *   except that in vxlan mode a directly reachable peer gets the direct route it uses back to us when it
 *   published no VTEP MAC (its agent runs host-gw, or has not set up its overlay yet) or when we have no
 *   device of the family (we publish no MAC then, so the peer routes to us directly).
 * - Our own pod CIDRs get a blackhole route, so a packet for a pod that no longer exists dies here instead of
 *   following the default route out of the node (the per-pod /32 and /128 routes are more specific and win);
 *   not one that holds a node's InternalIP (every peer skips it too, below) or is a connected subnet of
 *   ours (the blackhole would take the connected route's place); both are reported.
 * - Invalid or conflicting input (bad text, no InternalIP, no pod CIDR, overlapping CIDRs) is skipped and
 *   reported per node. Conflicting CIDRs are dropped on every node involved: we cannot tell which claim is
 *   right, and routing a pod's traffic to the wrong node is worse than not routing it.
 * - A peer's pod CIDR that holds a node's InternalIP (any node's: the same on every agent) or a whole
 *   subnet connected to this node is skipped and reported: routed, it would take the underlay's traffic
 *   (to a peer, to a control-plane node) off its path, and could cut the agent off from the API that
 *   would bring the fix.
 */

import { compareOrdinal } from '../compare.ts';
import { type Family, type RouteInfo, TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import {
  type Cidr,
  cidrContains,
  cidrHolds,
  cidrLast,
  cidrsOverlap,
  compareCidr,
  formatCidr,
  formatIp,
  type IpAddress,
  parseCidr,
  parseIp,
} from '../ip/index.ts';
import { VTEP_MAC_ANNOTATIONS } from '../vxlan/constants.ts';
import { parseVtepMac } from '../vxlan/mac.ts';
import {
  DIRECT_SUBNET_ANNOTATIONS,
  formatDirectSubnets,
  parseDirectSubnets,
  subnetsHoldAny,
} from './direct-subnets.ts';
import { isUnusableNodeIp } from './node-ip.ts';
import type {
  DesiredRoutes,
  DesiredRoutesOptions,
  LocalLink,
  OverlayDevice,
  PeerDecision,
  PeerNode,
  Problem,
  SelfNode,
} from './types.ts';
import { ROUTING_MODES } from './types.ts';

// The loops a plan runs per Node are indexed, not for…of: without V8's optimizing tiers (the agent's
// flags, scripts/build.ts) every for…of step allocates an iterator result; with buildPeerState's,
// ~10 MB of a cold pass's garbage at 5,000 nodes (bench/HISTORY.md, session 58).
const FAMILIES: readonly Family[] = [4, 6];

interface ParsedNode {
  name: string;
  cidrs: Cidr[];
  ips: IpAddress[];
  /** As published (checked where a plan uses it: usableVtepMac). */
  vtepMac: Partial<Record<Family, string>>;
  /** The published subnets' text per family (parsed only for a peer the local rule would route directly). */
  directSubnets: Partial<Record<Family, string>>;
}

// A list starts as a literal of its first element, not a push onto []: a push gives the array room
// for 16, and two per node were 1.5 MB of a 5,000-node plan.
function parseNode(node: PeerNode, problems: Problem[]): ParsedNode {
  let cidrs: Cidr[] = [];
  const cidrTexts = node.podCIDRs ?? [];
  for (let i = 0; i < cidrTexts.length; i++) {
    const text = cidrTexts[i]!;
    const c = parseCidr(text);
    if (c === undefined) {
      problems.push({ node: node.name, problem: `invalid pod CIDR ${JSON.stringify(text)}` });
    } else if (cidrs.length === 0) {
      cidrs = [c];
    } else if (!hasCidr(cidrs, c)) {
      cidrs.push(c);
    }
  }
  // A node's own CIDRs nested in each other all lead to that node: keep the widest, so no two emitted
  // routes overlap.
  for (let i = cidrs.length - 1; i >= 0 && cidrs.length > 1; i--) {
    const c = cidrs[i]!;
    const wider = cidrs.find((o) => o !== c && o.prefixLen < c.prefixLen && cidrsOverlap(o, c));
    if (wider !== undefined) {
      problems.push({
        node: node.name,
        problem: `pod CIDR ${formatCidr(c)} lies inside ${formatCidr(wider)}; ignored`,
        routed: true,
      });
      cidrs.splice(i, 1);
    }
  }
  let ips: IpAddress[] = [];
  const ipTexts = node.internalIPs ?? [];
  for (let i = 0; i < ipTexts.length; i++) {
    const text = ipTexts[i]!;
    const ip = parseIp(text);
    const unusable = ip === undefined ? 'not an IP address' : isUnusableNodeIp(ip);
    if (ip === undefined || unusable !== undefined) {
      problems.push({ node: node.name, problem: `invalid InternalIP ${JSON.stringify(text)}: ${unusable}` });
    } else if (ips.length === 0) {
      ips = [ip];
    } else if (!hasIp(ips, ip)) {
      ips.push(ip);
    }
  }
  return {
    name: node.name,
    cidrs,
    ips,
    vtepMac: node.vtepMacs ?? {},
    directSubnets: node.directSubnets ?? {},
  };
}

function hasCidr(list: readonly Cidr[], c: Cidr): boolean {
  for (let i = 0; i < list.length; i++) if (compareCidr(list[i]!, c) === 0) return true;
  return false;
}

function hasIp(list: readonly IpAddress[], ip: IpAddress): boolean {
  for (let i = 0; i < list.length; i++)
    if (list[i]!.family === ip.family && list[i]!.value === ip.value) return true;
  return false;
}

/** The addresses of one family; the list itself when they all are (never changed by the plan). */
function ofFamily(ips: readonly IpAddress[], family: Family): readonly IpAddress[] {
  let all = true;
  for (let i = 0; i < ips.length && all; i++) all = ips[i]!.family === family;
  if (all) return ips;
  const out: IpAddress[] = [];
  for (let i = 0; i < ips.length; i++) if (ips[i]!.family === family) out.push(ips[i]!);
  return out;
}

/**
 * The agent's addresses parsed once per plan: at 5,000 peers, parsing every local address again for
 * each peer was a third of an idle resync pass's planning time.
 */
interface LocalIndex {
  /**
   * `${family} ${value}` of every usable local address: a peer claiming one of them is not a peer. (A
   * peer's InternalIPs are usable ones only, parseNode drops the rest, so no other address could match.)
   */
  own: Set<string>;
  /** The same addresses' values per family: a peer's InternalIP is looked up without making a string. */
  ownValues: Record<Family, Set<bigint>>;
  /** Connected subnets that can reach other nodes, with their link. */
  subnets: { link: LocalLink; subnet: Cidr }[];
}

function indexLocalLinks(links: LocalLink[]): LocalIndex {
  const own = new Set<string>();
  const ownValues: LocalIndex['ownValues'] = { 4: new Set(), 6: new Set() };
  const subnets: LocalIndex['subnets'] = [];
  for (const link of links) {
    for (const a of link.addresses) {
      const local = parseIp(a.address);
      if (local === undefined || local.family !== a.family) continue;
      if (isUnusableNodeIp(local) !== undefined) continue;
      own.add(`${local.family} ${local.value}`);
      ownValues[local.family].add(local.value);
      // Host-only (/32, /128) and link-local addresses do not define a subnet that reaches other nodes.
      if (a.prefixLen >= (local.family === 4 ? 32 : 128)) continue;
      const subnet = parseCidr(`${a.address}/${a.prefixLen}`, { strict: false });
      if (subnet !== undefined) subnets.push({ link, subnet });
    }
  }
  return { own, ownValues, subnets };
}

/**
 * What a plan reads from the agent's links, as text: its own usable addresses (a peer's InternalIP is
 * compared with them; an unusable one never is) and the connected subnets that reach other nodes, with
 * their link. Two lists of links with the same key plan the same routes. Pod veths come and go without
 * changing it: they all hold the same host-only and link-local gateway addresses.
 */
export function localLinksKey(links: LocalLink[]): string {
  const { own, subnets } = indexLocalLinks(links);
  const nets = subnets.map(({ link, subnet }) => `${link.ifindex} ${link.name} ${formatCidr(subnet)}`);
  return `${[...own].sort().join(',')} | ${nets.sort().join(',')}`;
}

/**
 * The subnets connected to this node that reach other hosts (as the planner's underlay check reads
 * them): host-length and unusable (link-local, loopback) addresses left out.
 */
export function connectedSubnets(links: LocalLink[]): string[] {
  return [...new Set(indexLocalLinks(links).subnets.map(({ subnet }) => formatCidr(subnet)))];
}

/** The local interface whose connected subnet holds ip: longest prefix wins, then the lowest ifindex. */
const OWN_ADDRESS = Object.freeze({ ownAddress: true as const });

function findDirectLink(
  ip: IpAddress,
  local: LocalIndex,
): { link: LocalLink; subnet: Cidr } | { ownAddress: true } | undefined {
  if (local.ownValues[ip.family].has(ip.value)) return OWN_ADDRESS;
  let best: { link: LocalLink; subnet: Cidr } | undefined;
  for (let i = 0; i < local.subnets.length; i++) {
    const { link, subnet } = local.subnets[i]!;
    if (subnet.family !== ip.family || !cidrContains(subnet, ip)) continue;
    if (
      best === undefined ||
      subnet.prefixLen > best.subnet.prefixLen ||
      (subnet.prefixLen === best.subnet.prefixLen && link.ifindex < best.link.ifindex)
    ) {
      best = { link, subnet };
    }
  }
  return best;
}

/**
 * Which peers of one family may be routed directly (the rest go through VXLAN, in auto mode):
 *   any   every peer on a connected subnet (host-gw; and auto where there is nothing else, below)
 *   home  auto: a peer whose longest-prefix subnet is one holding this node's own InternalIP of the family
 *         (`subnets`, by identity), unless the subnets the peer published hold none of `ownIPs` and this
 *         node can tunnel (without a VXLAN device here, no peer tunnels to us: a vxlan-mode peer routes
 *         to a node without a VTEP directly). These subnets are what this node publishes for the family.
 *   none  auto: this node's InternalIP of the family is on no connected subnet (a /32 on lo): no peer
 *         finds it on a subnet of its own, so every peer tunnels to this node, and this node to them.
 * Auto falls back to `any` for a family without an own InternalIP (no peer can route to this node in it
 * anyway) or, in the `none` case, without a VXLAN device of the family: direct is then the only way.
 */
type DirectReach =
  | { kind: 'any' }
  | { kind: 'home'; subnets: ReadonlySet<Cidr>; ownIPs: readonly IpAddress[]; tunnel: boolean }
  | { kind: 'none'; ownIPs: readonly IpAddress[] };

function directReach(
  family: Family,
  opts: DesiredRoutesOptions,
  ownIPs: readonly IpAddress[],
  local: LocalIndex,
): DirectReach {
  if (opts.mode !== 'auto') return { kind: 'any' };
  const mine = ownIPs.filter((ip) => ip.family === family);
  if (mine.length === 0) return { kind: 'any' };
  const home = local.subnets
    .map(({ subnet }) => subnet)
    .filter((subnet) => subnet.family === family && mine.some((ip) => cidrContains(subnet, ip)));
  const tunnel = (opts.overlay ?? []).some((d) => d.family === family);
  if (home.length > 0) return { kind: 'home', subnets: new Set(home), ownIPs: mine, tunnel };
  if (!tunnel) return { kind: 'any' };
  return { kind: 'none', ownIPs: mine };
}

/**
 * The peer's InternalIP of the family it may be routed to directly, or undefined with the reasons why
 * none qualifies pushed onto `reasons`. In auto mode, of several, the one on the lowest subnet: the
 * peer, holding the same subnets, picks the same one back (the API's order of each node's own
 * addresses can differ, and a leg each way is as asymmetric as a tunnel one way). Otherwise the first
 * in the API's order.
 */
function directDecision(
  node: ParsedNode,
  family: Family,
  candidates: readonly IpAddress[],
  podCIDRs: string[],
  local: LocalIndex,
  reach: DirectReach,
  reasons: string[],
  problems: Problem[],
): PeerDecision | undefined {
  if (reach.kind === 'none') {
    reasons.push(
      `this node's IPv${family} InternalIP ${reach.ownIPs.map(formatIp).join(', ')} is on no connected subnet, so every node tunnels to it (and it to them)`,
    );
    return undefined;
  }
  let best: { decision: PeerDecision; subnet: Cidr } | undefined;
  // Read when a candidate gets that far, and once: a malformed entry is reported once.
  let published: { subnets: Cidr[] | undefined } | undefined;
  const routesBack = (ownIPs: readonly IpAddress[]): boolean => {
    published ??= { subnets: publishedDirectSubnets(node, family, problems) };
    return published.subnets === undefined || subnetsHoldAny(published.subnets, ownIPs);
  };
  for (let i = 0; i < candidates.length; i++) {
    const ip = candidates[i]!;
    const found = findDirectLink(ip, local);
    const nodeIP = formatIp(ip);
    if (found !== undefined && 'ownAddress' in found) {
      reasons.push(`InternalIP ${nodeIP} is one of this node's own addresses`);
    } else if (found === undefined) {
      reasons.push(`InternalIP ${nodeIP} is not on a subnet connected to this node`);
    } else if (reach.kind === 'home' && !reach.subnets.has(found.subnet)) {
      reasons.push(
        `InternalIP ${nodeIP} is on ${found.link.name}'s subnet ${formatCidr(found.subnet)} (its longest match here), which does not hold this node's InternalIP (the node would route back through VXLAN)`,
      );
    } else if (reach.kind === 'home' && reach.tunnel && !routesBack(reach.ownIPs)) {
      const subnets = published?.subnets ?? [];
      reasons.push(
        `the node routes directly only on ${subnets.length === 0 ? 'no subnet' : formatDirectSubnets(subnets)} (its ${DIRECT_SUBNET_ANNOTATIONS[family]}), which does not hold this node's InternalIP (it would route back through VXLAN)`,
      );
    } else {
      const decision: PeerDecision = {
        node: node.name,
        family,
        path: 'direct',
        nodeIP,
        ifindex: found.link.ifindex,
        linkName: found.link.name,
        podCIDRs,
      };
      if (reach.kind !== 'home') return decision;
      if (best === undefined || compareCidr(found.subnet, best.subnet) < 0)
        best = { decision, subnet: found.subnet };
    }
  }
  return best?.decision;
}

/**
 * For `explain`: the peer is tunnelled for a reason other than the plain one, its InternalIPs on no
 * subnet of ours (one is on a connected subnet, or ours is on none).
 */
function notPlainlyRemote(candidates: readonly IpAddress[], local: LocalIndex, reach: DirectReach): boolean {
  return reach.kind === 'none' || candidates.some((ip) => findDirectLink(ip, local) !== undefined);
}

/**
 * The subnets the peer published that it routes directly on in the family, undefined when it published
 * none (then only this node's rule decides). When none holds one of our InternalIPs it tunnels to us, so
 * we tunnel to it. An entry that is not a network of the family is reported and ignored: the rest still
 * say where the peer routes directly, and they decide. A list of nothing else says nothing, and counts
 * as none published.
 */
function publishedDirectSubnets(node: ParsedNode, family: Family, problems: Problem[]): Cidr[] | undefined {
  const text = node.directSubnets[family];
  if (text === undefined) return undefined;
  const { subnets, invalid } = parseDirectSubnets(text, family);
  if (invalid.length > 0) {
    problems.push({
      node: node.name,
      problem: `${DIRECT_SUBNET_ANNOTATIONS[family]} ${JSON.stringify(text)}: ${invalid.map((t) => JSON.stringify(t)).join(', ')} ${invalid.length === 1 ? `is not an IPv${family} network` : `are not IPv${family} networks`}; ignored`,
    });
  }
  return subnets.length === 0 && invalid.length > 0 ? undefined : subnets;
}

/**
 * The annotations' text this node publishes (DIRECT_SUBNET_ANNOTATIONS), per family: in auto mode
 * the connected subnets holding its own InternalIP, or none when that is on no connected subnet and a
 * VXLAN device of the family carries every peer; in vxlan mode none (it routes directly only to peers
 * that publish no VTEP, which have no tunnel to choose), so an auto node tunnels to it too while a
 * rolling change of mode has nodes of both. Nothing for a family where it routes directly to any peer
 * on a connected subnet (host-gw; vxlan without a VXLAN device of the family; auto without one, its
 * InternalIP on no connected subnet) or that it has no InternalIP in.
 */
export function ownDirectSubnets(
  self: SelfNode,
  localLinks: LocalLink[],
  opts: Pick<DesiredRoutesOptions, 'mode' | 'overlay'>,
): Partial<Record<Family, string>> {
  const out: Partial<Record<Family, string>> = {};
  if (opts.mode === 'host-gw') return out;
  const me = parseNode(self, []);
  if (opts.mode === 'vxlan') {
    for (const family of [4, 6] as Family[]) {
      const tunnel = (opts.overlay ?? []).some((d) => d.family === family);
      if (tunnel && me.ips.some((ip) => ip.family === family)) out[family] = '';
    }
    return out;
  }
  const local = indexLocalLinks(localLinks);
  for (const family of [4, 6] as Family[]) {
    const reach = directReach(family, opts, me.ips, local);
    if (reach.kind === 'home') out[family] = formatDirectSubnets(reach.subnets);
    else if (reach.kind === 'none') out[family] = '';
  }
  return out;
}

export function desiredRoutes(
  self: SelfNode,
  peers: PeerNode[],
  localLinks: LocalLink[],
  opts: DesiredRoutesOptions,
): DesiredRoutes {
  if (!ROUTING_MODES.includes(opts.mode)) {
    throw new Error(`unsupported routing mode ${JSON.stringify(opts.mode)}`);
  }
  const problems: Problem[] = [];
  const decisions: PeerDecision[] = [];
  const tableField = opts.table === undefined || opts.table === 254 ? {} : { table: opts.table };

  const me = parseNode(self, problems);
  const local = indexLocalLinks(localLinks);
  const reach = new Map(([4, 6] as Family[]).map((f) => [f, directReach(f, opts, me.ips, local)]));
  if (me.cidrs.length === 0) problems.push({ node: self.name, problem: 'this node has no valid pod CIDR' });

  const parsed: ParsedNode[] = [];
  // Every node's InternalIPs, the skipped nodes' too: their underlay is there all the same.
  const withIPs: Pick<ParsedNode, 'name' | 'ips'>[] = [me];
  const take = (peer: PeerNode): void => {
    const node = parseNode(peer, problems);
    withIPs.push(node);
    if (node.cidrs.length === 0) {
      problems.push({ node: node.name, problem: 'no valid pod CIDR; skipped' });
      return;
    }
    parsed.push(node);
  };
  // Peers in name order; a name seen twice is ambiguous, so both copies are dropped. The cache lists
  // them in that order already (the informer's snapshot): only a list that is not, or that repeats a
  // name, pays for a map and a sort (5,000 names sorted per pass, and the map's garbage).
  if (inNameOrder(peers, self.name)) {
    for (let i = 0; i < peers.length; i++) if (peers[i]!.name !== self.name) take(peers[i]!);
  } else {
    const byName = new Map<string, PeerNode[]>();
    for (let i = 0; i < peers.length; i++) {
      const p = peers[i]!;
      if (p.name === self.name) continue;
      const copies = byName.get(p.name);
      if (copies === undefined) byName.set(p.name, [p]);
      else copies.push(p);
    }
    for (const name of [...byName.keys()].sort()) {
      const copies = byName.get(name)!;
      if (copies.length === 1) {
        take(copies[0]!);
        continue;
      }
      problems.push({ node: name, problem: `node listed ${copies.length} times; skipped` });
      for (const copy of copies) withIPs.push(parseNode(copy, []));
    }
  }
  const nodeIPs = indexNodeIPs(withIPs);

  // Drop CIDRs that overlap ours, and a peer's CIDR that contains another peer's (or equals it): the
  // same CIDR on two nodes is ambiguous, so both go; a broader one (one Node given a /16 where the
  // others have /24s) goes alone, and the narrower ones inside it keep their routes, so one bad Node
  // object cannot cut every node off from every peer it overlaps. Every agent decides the same from
  // the same Node objects. Comparing every pair is quadratic (25 million comparisons at 5,000 nodes);
  // a sort finds the few CIDRs that overlap anything, and only those go through the pairwise search.
  const overlapping = overlappingCidrs(parsed);
  const conflicted = new Set<string>();
  for (let n = 0; n < parsed.length; n++) {
    const node = parsed[n]!;
    for (let i = 0; i < node.cidrs.length; i++) {
      const c = node.cidrs[i]!;
      const mine = overlapOf(me.cidrs, c);
      if (mine !== undefined) {
        conflicted.add(conflictKey(node.name, c));
        problems.push({
          node: node.name,
          problem: `pod CIDR ${formatCidr(c)} overlaps this node's pod CIDR ${formatCidr(mine)}; skipped`,
          refusedCidr: formatCidr(c),
        });
        continue;
      }
      const underlay = underlayConflict(c, node.name, self.name, nodeIPs, local);
      if (underlay !== undefined) {
        conflicted.add(conflictKey(node.name, c));
        problems.push({
          node: node.name,
          problem: `pod CIDR ${formatCidr(c)} ${underlay}; skipped`,
          refusedCidr: formatCidr(c),
        });
        continue;
      }
      if (!overlapping.has(c)) continue;
      for (let o = 0; o < parsed.length; o++) {
        const other = parsed[o]!;
        if (other === node) continue;
        // Overlapping CIDRs nest: c goes when it holds the other one (a prefix as long or longer).
        const held = other.cidrs.find((o) => cidrsOverlap(o, c) && o.prefixLen >= c.prefixLen);
        if (held !== undefined) {
          conflicted.add(conflictKey(node.name, c));
          problems.push({
            node: node.name,
            problem:
              held.prefixLen === c.prefixLen
                ? `pod CIDR ${formatCidr(c)} is also node ${other.name}'s; skipped on both`
                : `pod CIDR ${formatCidr(c)} contains ${formatCidr(held)} of node ${other.name}; skipped (the narrower keeps its route)`,
            refusedCidr: formatCidr(c),
          });
          break;
        }
      }
    }
  }

  // Without an InternalIP of a family (while it has others: not standalone), no peer routes that
  // family back to this node's pods (they skip it, below): routes of ours for it would only send
  // pods' packets whose answers take the default route with pod source addresses.
  const oneWay = ([4, 6] as Family[]).filter(
    (f) => me.ips.length > 0 && !me.ips.some((ip) => ip.family === f) && me.cidrs.some((c) => c.family === f),
  );
  for (const f of oneWay) {
    problems.push({
      node: self.name,
      problem: `this node has no usable IPv${f} InternalIP, so no peer routes IPv${f} back to its pods: IPv${f} routes to peers skipped`,
    });
  }
  // Each route with its destination parsed, for the sort at the end.
  const routes: { r: RouteInfo; c: Cidr }[] = [];
  for (let n = 0; n < parsed.length; n++) {
    const node = parsed[n]!;
    for (let f = 0; f < FAMILIES.length; f++) {
      const family = FAMILIES[f]!;
      if (oneWay.length > 0 && oneWay.includes(family)) continue;
      let cidrs: Cidr[] = [];
      for (let i = 0; i < node.cidrs.length; i++) {
        const c = node.cidrs[i]!;
        if (c.family !== family) continue;
        if (conflicted.size > 0 && conflicted.has(conflictKey(node.name, c))) continue;
        if (cidrs.length === 0) cidrs = [c];
        else cidrs.push(c);
      }
      if (cidrs.length === 0) continue;
      if (cidrs.length > 1) cidrs.sort(compareCidr);
      const podCIDRs = cidrs.map(formatCidr);
      const candidates = ofFamily(node.ips, family);
      if (candidates.length === 0) {
        problems.push({
          node: node.name,
          problem: `no IPv${family} InternalIP for pod CIDR ${podCIDRs.join(', ')}; skipped`,
        });
        continue;
      }
      const reasons: string[] = [];
      let decision =
        opts.mode === 'vxlan'
          ? undefined
          : directDecision(node, family, candidates, podCIDRs, local, reach.get(family)!, reasons, problems);
      if (decision === undefined && opts.mode !== 'host-gw') {
        const tunnel = vxlanDecision(node, family, candidates, podCIDRs, local, opts.overlay ?? []);
        if ('reason' in tunnel) reasons.push(`VXLAN: ${tunnel.reason}`);
        else if (
          opts.explain === true &&
          opts.mode === 'auto' &&
          notPlainlyRemote(candidates, local, reach.get(family)!)
        )
          decision = { ...tunnel, why: reasons.join('; ') };
        else decision = tunnel;
        // A peer that publishes no VTEP tunnels nothing to us: its agent runs host-gw (a rolling change
        // to vxlan mode, one node at a time) or has not started its overlay yet. On our subnet it routes
        // to us directly, so the way back is direct too, rather than no route at all. The same holds the
        // other way round: without a VXLAN device of the family (an underlay MTU too low for IPv6, no
        // local InternalIP) we publish no VTEP MAC, so every peer on our subnet routes to us directly.
        const noMac = decision === undefined && usableVtepMac(node, family) === undefined;
        const noDevice = decision === undefined && !(opts.overlay ?? []).some((d) => d.family === family);
        if (decision === undefined && opts.mode === 'vxlan' && (noMac || noDevice)) {
          const r = reach.get(family)!;
          decision = directDecision(node, family, candidates, podCIDRs, local, r, reasons, problems);
          // A malformed MAC counts as none, as ever, but is said: the node did publish one.
          const published = node.vtepMac[family];
          if (decision !== undefined && noMac && !noDevice && published !== undefined) {
            problems.push({
              node: node.name,
              problem: `${malformedVtepMac(family, published)}; routed directly, as a node that published none`,
              routed: true,
            });
          }
        }
      }
      if (decision === undefined) {
        const reason = reasons.join('; ');
        decisions.push({
          node: node.name,
          family,
          path: 'unreachable',
          nodeIP: formatIp(candidates[0]!),
          podCIDRs,
          reason,
        });
        problems.push({
          node: node.name,
          problem: opts.mode === 'host-gw' ? `unreachable with host-gw: ${reason}` : `unreachable: ${reason}`,
        });
        continue;
      }
      decisions.push(decision);
      if (decision.path === 'unreachable') continue;
      for (let i = 0; i < podCIDRs.length; i++) {
        const dst = podCIDRs[i]!;
        routes.push({
          c: cidrs[i]!,
          r:
            decision.path === 'direct'
              ? {
                  family,
                  dst,
                  gateway: decision.nodeIP,
                  ifindex: decision.ifindex,
                  ...tableField,
                  protocol: TRELLIS_ROUTE_PROTOCOL,
                  scope: 'universe',
                  type: 'unicast',
                }
              : {
                  family,
                  dst,
                  gateway: decision.vtepIP,
                  ifindex: decision.ifindex,
                  ...tableField,
                  protocol: TRELLIS_ROUTE_PROTOCOL,
                  scope: 'universe',
                  type: 'unicast',
                  onlink: true,
                },
        });
      }
    }
  }

  for (const c of [...me.cidrs].sort(compareCidr)) {
    // Every peer skips such a CIDR of ours (underlayConflict, above), and a blackhole over the underlay
    // would drop this node's own traffic to the nodes inside it (the API server's among them), or take
    // the place of the connected route of the same prefix.
    const held = nodeIPIn(nodeIPs, c);
    if (held !== undefined) {
      problems.push({
        node: self.name,
        problem: `this node's pod CIDR ${formatCidr(c)} ${underlayConflict(c, self.name, self.name, nodeIPs, local)}: no blackhole route for it, and every peer skips it`,
      });
      continue;
    }
    // A connected subnet inside it wins over the blackhole by its longer prefix; one of the same
    // prefix would be the blackhole's to replace.
    const same = local.subnets.find(
      ({ subnet }) =>
        subnet.family === c.family && subnet.prefixLen === c.prefixLen && cidrsOverlap(subnet, c),
    );
    if (same !== undefined) {
      problems.push({
        node: self.name,
        problem: `this node's pod CIDR ${formatCidr(c)} is a subnet connected to it (${same.link.name}): no blackhole route for it`,
      });
      continue;
    }
    routes.push({
      c,
      r: {
        family: c.family,
        dst: formatCidr(c),
        ...tableField,
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'blackhole',
      },
    });
  }

  // After the skips, so a skipped node's reasons come first: only nodes routed (or planned to be: this
  // one and every peer with a valid pod CIDR) are claims; a leftover Node without one routes nowhere.
  // Both sets made only when two nodes share an address (5,000 names each otherwise, for nothing).
  let claims: { claimants: ReadonlySet<string>; routedPeers: ReadonlySet<string> } | undefined;
  reportSharedInternalIPs(nodeIPs, self.name, problems, () => {
    claims ??= {
      routedPeers: new Set(decisions.filter((d) => d.path !== 'unreachable').map((d) => d.node)),
      claimants: new Set([me.name, ...parsed.map((n) => n.name)]),
    };
    return claims;
  });

  routes.sort((a, b) => compareCidr(a.c, b.c) || compareOrdinal(a.r.type ?? '', b.r.type ?? ''));
  return { routes: routes.map((k) => k.r), problems, decisions };
}

/** Names strictly ascending (so none repeats), this node's own entries aside. */
function inNameOrder(peers: readonly PeerNode[], selfName: string): boolean {
  let last: string | undefined;
  for (let i = 0; i < peers.length; i++) {
    const name = peers[i]!.name;
    if (name === selfName) continue;
    if (last !== undefined && !(last < name)) return false;
    last = name;
  }
  return true;
}

/** The key of a peer's pod CIDR in the conflicted set: made only where a conflict is recorded or looked up. */
function conflictKey(node: string, c: Cidr): string {
  return `${node} ${formatCidr(c)}`;
}

/** The first of `list` that overlaps c. */
function overlapOf(list: readonly Cidr[], c: Cidr): Cidr | undefined {
  for (let i = 0; i < list.length; i++) if (cidrsOverlap(list[i]!, c)) return list[i];
  return undefined;
}

interface NodeIP {
  value: bigint;
  node: string;
}

/** Every node's InternalIPs per family, sorted by address (then node name), for nodeIPIn's binary search. */
function indexNodeIPs(nodes: readonly Pick<ParsedNode, 'name' | 'ips'>[]): Record<Family, NodeIP[]> {
  const out: Record<Family, NodeIP[]> = { 4: [], 6: [] };
  for (let n = 0; n < nodes.length; n++) {
    const { name, ips } = nodes[n]!;
    for (let i = 0; i < ips.length; i++) out[ips[i]!.family].push({ value: ips[i]!.value, node: name });
  }
  for (const list of Object.values(out)) {
    list.sort((a, b) => (a.value < b.value ? -1 : a.value > b.value ? 1 : compareOrdinal(a.node, b.node)));
  }
  return out;
}

/**
 * Nodes that claim one InternalIP (a machine replaced under the same address while its old Node object
 * stayed, a kubelet's --node-ip copied to another): the routes to both lead to whichever machine holds
 * the address, so the other's pods are out of reach. Which claim is right cannot be told from the Node
 * objects, so the routes stay as planned and each node involved is reported. `claims` is asked for at the
 * first address two nodes share.
 */
function reportSharedInternalIPs(
  index: Record<Family, NodeIP[]>,
  selfName: string,
  problems: Problem[],
  claims: () => { claimants: ReadonlySet<string>; routedPeers: ReadonlySet<string> },
): void {
  for (const family of FAMILIES) {
    const list = index[family];
    for (let i = 0; i < list.length; ) {
      let j = i + 1;
      while (j < list.length && list[j]!.value === list[i]!.value) j++;
      if (j - i === 1) {
        i = j;
        continue;
      }
      // The index holds every Node's addresses; only this node and the peers with a valid pod CIDR claim.
      const { claimants, routedPeers } = claims();
      const names = list.slice(i, j).flatMap((e) => (claimants.has(e.node) ? [e.node] : []));
      if (names.length > 1) {
        const ip = formatIp({ family, value: list[i]!.value });
        for (const name of names) {
          const others = names
            .filter((n) => n !== name)
            .map((n) => (n === selfName ? 'this node' : `node ${n}`));
          // `routed` only for a node that is (this one, a peer with a route): a skipped one's own
          // reasons say why it is not.
          problems.push({
            node: name,
            problem: `InternalIP ${ip} is also ${others.join(' and ')}'s: traffic to the pods of each goes to whichever machine holds that address`,
            ...(name === selfName || routedPeers.has(name) ? { routed: true as const } : {}),
          });
        }
      }
      i = j;
    }
  }
}

/** The lowest node InternalIP inside c: a binary search, so 5,000 peers' CIDRs are not checked 5,000 times each. */
function nodeIPIn(index: Record<Family, NodeIP[]>, c: Cidr): NodeIP | undefined {
  const list = index[c.family];
  const start = c.network;
  const end = cidrLast(c);
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]!.value < start) lo = mid + 1;
    else hi = mid;
  }
  const hit = list[lo];
  return hit !== undefined && hit.value <= end ? hit : undefined;
}

/**
 * Why a peer's pod CIDR would take traffic off the underlay, if it would: it holds a node's InternalIP
 * (anyone's, the peer's own too: every agent judges it the same), so this node would send that node's
 * traffic, its VXLAN frames among it, to the peer; or it holds a whole subnet connected here (this
 * node's view alone: its peers may route the CIDR). A pod CIDR inside a connected subnet is routed: a
 * node on 10.0.0.0/8 with pods in 10.244.0.0/16 works with every pod network, and only the addresses
 * of that part of the segment, which the cluster gave to pods, go to the peer.
 */
function underlayConflict(
  c: Cidr,
  owner: string,
  selfName: string,
  nodeIPs: Record<Family, NodeIP[]>,
  local: LocalIndex,
): string | undefined {
  const ip = nodeIPIn(nodeIPs, c);
  if (ip !== undefined) {
    const whose =
      ip.node === owner ? "the node's own" : ip.node === selfName ? "this node's" : `node ${ip.node}'s`;
    return `contains ${whose} InternalIP ${formatIp({ family: c.family, value: ip.value })}`;
  }
  for (let i = 0; i < local.subnets.length; i++) {
    const { link, subnet } = local.subnets[i]!;
    if (cidrHolds(c, subnet)) {
      return `contains ${formatCidr(subnet)}, a subnet connected to this node (${link.name})`;
    }
  }
  return undefined;
}

/**
 * The CIDRs (by identity) that overlap a CIDR of another node. Two CIDRs are nested or disjoint, so after
 * sorting by (start, end descending) a block overlaps an earlier one exactly when it starts before the
 * largest end seen so far, and a later one exactly when the next block starts before its own end.
 * parseNode already removed duplicates and nesting within one node, so every overlap is between nodes.
 */
function overlappingCidrs(nodes: readonly ParsedNode[]): Set<Cidr> {
  const out = new Set<Cidr>();
  for (const family of [4, 6] as Family[]) {
    const blocks: { c: Cidr; start: bigint; end: bigint }[] = [];
    for (let n = 0; n < nodes.length; n++) {
      const cidrs = nodes[n]!.cidrs;
      for (let i = 0; i < cidrs.length; i++) {
        const c = cidrs[i]!;
        if (c.family === family) blocks.push({ c, start: c.network, end: cidrLast(c) });
      }
    }
    blocks.sort((a, b) =>
      a.start < b.start ? -1 : a.start > b.start ? 1 : a.end > b.end ? -1 : a.end < b.end ? 1 : 0,
    );
    let maxEnd = -1n;
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]!;
      const next = blocks[i + 1];
      if (b.start <= maxEnd || (next !== undefined && next.start <= b.end)) out.add(b.c);
      if (b.end > maxEnd) maxEnd = b.end;
    }
  }
  return out;
}

/**
 * A node's VTEP address in one family: the network address of its first pod CIDR of that family (CIDR
 * order), as flannel does. It lies inside the node's pod CIDR but IPAM never hands out a network address,
 * so no pod can hold it; the node assigns it to its own VXLAN device as a /32 (/128).
 */
export function vtepAddress(podCIDRs: readonly string[], family: Family): string | undefined {
  const first = podCIDRs
    .map((c) => parseCidr(c))
    .filter((c): c is Cidr => c !== undefined && c.family === family)
    .sort(compareCidr)[0];
  return first === undefined ? undefined : formatIp({ family, value: first.network });
}

/** The peer's usable VTEP MAC of the family (pkg/vxlan/annotations.ts passes a malformed one on as written). */
function usableVtepMac(node: ParsedNode, family: Family): string | undefined {
  const text = node.vtepMac[family];
  return text === undefined ? undefined : parseVtepMac(text);
}

function malformedVtepMac(family: Family, text: string): string {
  return `its ${VTEP_MAC_ANNOTATIONS[family]} ${JSON.stringify(text)} is not a usable VTEP MAC`;
}

function vxlanDecision(
  node: ParsedNode,
  family: Family,
  candidates: readonly IpAddress[],
  podCIDRs: string[],
  local: LocalIndex,
  overlay: readonly OverlayDevice[],
): Extract<PeerDecision, { path: 'vxlan' }> | { reason: string } {
  const device = overlay.find((d) => d.family === family);
  if (device === undefined) return { reason: `this node has no IPv${family} VXLAN device` };
  const published = node.vtepMac[family];
  if (published === undefined) return { reason: `the node has not published an IPv${family} VTEP MAC` };
  const mac = parseVtepMac(published);
  if (mac === undefined) return { reason: malformedVtepMac(family, published) };
  // Frames go to the peer's first InternalIP of the family that is not one of ours.
  const nodeIp = candidates.find((ip) => {
    const found = findDirectLink(ip, local);
    return found === undefined || !('ownAddress' in found);
  });
  if (nodeIp === undefined)
    return { reason: `no IPv${family} InternalIP that is not one of this node's own` };
  // The VTEP address comes from ALL the node's valid CIDRs (even one dropped here as conflicting), so it
  // is the address the node itself derives.
  const vtepIP = vtepAddress(node.cidrs.map(formatCidr), family)!;
  return {
    node: node.name,
    family,
    path: 'vxlan',
    nodeIP: formatIp(nodeIp),
    vtepIP,
    vtepMac: mac,
    ifindex: device.ifindex,
    linkName: device.name,
    podCIDRs,
  };
}
