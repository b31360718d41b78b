/**
 * The prefixes trellis accepts in a forward chain that drops pod traffic: per family, the smallest
 * one prefix that covers every pod CIDR the route planner accepted (this node's and its peers'),
 * normally the controller manager's --cluster-cidr or inside it. This node's own pod CIDRs are not
 * enough: a NodePort or LoadBalancer connection (externalTrafficPolicy Cluster) that kube-proxy DNATs
 * here to a pod on another node is forwarded with the client's source and that pod's destination, and
 * its replies with that pod's source (flannel accepts its cluster network, Calico its IP pools, for
 * this; kubernetes/kubernetes#59656).
 *
 * Guard: a cover that holds a node's InternalIP, overlaps a subnet this node is connected to, or is
 * mostly not pod CIDRs (less than 1/16 of it: two pools far apart, which one prefix joins with the
 * address space between them) would let the host firewall's forward chains pass ordinary hosts'
 * traffic too; that family falls back to this node's own pod CIDRs (as before), and says why. Pure.
 */
import {
  type Cidr,
  cidrContains,
  cidrHolds,
  cidrSize,
  cidrsOverlap,
  type Family,
  familyBits,
  familyOfText,
  formatCidr,
  parseCidr,
  parseIp,
} from '../ip/index.ts';

export interface PodNetworkInput {
  /** This node's pod CIDRs: the families looked at, and the fallback. */
  own: readonly string[];
  /** The pod CIDRs the route planner accepted, this node's and every peer's (its refusals left out). */
  accepted: readonly string[];
  /** Every node's InternalIPs, this node's too. */
  nodeIPs: readonly string[];
  /** The subnets this node is directly connected to (host-length and link-local addresses left out). */
  connected: readonly string[];
}

export interface FamilyCover {
  family: Family;
  /** The smallest prefix holding every accepted pod CIDR of the family (this node's included). */
  cover: string;
  /** Why the cover is not used: it holds a node or a subnet, or mostly no pods. */
  narrowed?: string;
  /**
   * With `narrowed`: the pod CIDRs themselves, merged where they are siblings, when they are few
   * enough (MAX_EXACT) to be accepted one by one; absent, this node's own pod CIDRs are accepted.
   */
  exact?: string[];
}

/** At most this many accepts per family and direction for the pod CIDRs one by one. */
export const MAX_EXACT = 8;

export interface PodNetwork {
  /** What the forward check accepts: per family the cover, or this node's pod CIDRs. */
  prefixes: string[];
  families: FamilyCover[];
}

export function podNetwork(input: PodNetworkInput): PodNetwork {
  const prefixes: string[] = [];
  const families: FamilyCover[] = [];
  for (const family of [4, 6] as const) {
    const own = input.own.filter((c) => familyOfText(c) === family);
    const cidrs = [...own, ...input.accepted]
      .map((c) => parseCidr(c, { strict: false }))
      .filter((c): c is Cidr => c !== undefined && c.family === family);
    if (own.length === 0 || cidrs.length === 0) {
      prefixes.push(...own);
      continue;
    }
    const cover = coverOf(cidrs);
    const narrowed = underlayIn(cover, input) ?? sparse(cover, cidrs);
    if (narrowed === undefined) {
      families.push({ family, cover: formatCidr(cover) });
      prefixes.push(formatCidr(cover));
      continue;
    }
    // The pod CIDRs themselves hold only pods (the planner refuses one holding a node or the
    // underlay): accepted one by one when few, as two pools or a pod network inside the node's subnet
    // give. Many scattered ones would be a rule each: this node's own then.
    const exact = aggregate(cidrs).map(formatCidr);
    if (exact.length <= MAX_EXACT) {
      families.push({ family, cover: formatCidr(cover), narrowed, exact });
      prefixes.push(...exact);
    } else {
      families.push({ family, cover: formatCidr(cover), narrowed });
      prefixes.push(...own);
    }
  }
  return { prefixes, families };
}

/** The fewest prefixes holding exactly the addresses of `cidrs` (one family): nested ones dropped, siblings merged. */
export function aggregate(cidrs: readonly Cidr[]): Cidr[] {
  const bits = familyBits(cidrs[0]!.family);
  let list = [...cidrs].sort((a, b) =>
    a.network < b.network ? -1 : a.network > b.network ? 1 : a.prefixLen - b.prefixLen,
  );
  for (let changed = true; changed; ) {
    changed = false;
    const next: Cidr[] = [];
    for (const c of list) {
      const last = next.at(-1);
      if (last !== undefined && cidrHolds(last, c)) {
        changed ||= last.prefixLen !== c.prefixLen || last.network !== c.network;
        continue;
      }
      // Two halves of one prefix: that prefix.
      if (last !== undefined && last.prefixLen === c.prefixLen && last.prefixLen > 0) {
        const parentLen = last.prefixLen - 1;
        const shift = BigInt(bits - parentLen);
        if (last.network >> shift === c.network >> shift && last.network !== c.network) {
          next[next.length - 1] = {
            family: last.family,
            network: (last.network >> shift) << shift,
            prefixLen: parentLen,
          };
          changed = true;
          continue;
        }
      }
      next.push(c);
    }
    list = next;
  }
  return list;
}

/**
 * Whether a peer's change would change the pod network: a pod CIDR outside its family's cover (or,
 * accepted one by one, outside those), or an InternalIP inside a cover still in use. A few prefix
 * tests, for per-node steps.
 */
export function changesPodNetwork(
  net: PodNetwork,
  accepted: readonly string[],
  nodeIPs: readonly string[],
): boolean {
  const covers = net.families.map((f) => ({
    ...f,
    cidr: parseCidr(f.cover)!,
    exactCidrs: f.exact?.map((e) => parseCidr(e)!),
  }));
  for (const text of accepted) {
    const c = parseCidr(text, { strict: false });
    const f = c === undefined ? undefined : covers.find((x) => x.family === c.family);
    if (c === undefined || f === undefined) continue;
    if (!cidrHolds(f.cidr, c)) return true;
    if (f.exactCidrs !== undefined && !f.exactCidrs.some((e) => cidrHolds(e, c))) return true;
  }
  for (const text of nodeIPs) {
    const ip = parseIp(text);
    if (ip === undefined) continue;
    if (covers.some((f) => f.narrowed === undefined && cidrContains(f.cidr, ip))) return true;
  }
  return false;
}

/** The smallest prefix holding all of `cidrs` (one family, at least one). */
function coverOf(cidrs: readonly Cidr[]): Cidr {
  const first = cidrs[0]!;
  const bits = familyBits(first.family);
  let len = first.prefixLen;
  for (const c of cidrs) {
    len = Math.min(len, c.prefixLen);
    const differ = first.network ^ c.network;
    // The bits both share from the top: the position of the highest differing bit.
    if (differ !== 0n) len = Math.min(len, bits - differ.toString(2).length);
  }
  const shift = BigInt(bits - len);
  return { family: first.family, network: (first.network >> shift) << shift, prefixLen: len };
}

/** Why accepting `cover` would open the underlay, if it would. */
function underlayIn(cover: Cidr, input: PodNetworkInput): string | undefined {
  for (const text of input.nodeIPs) {
    const ip = parseIp(text);
    if (ip !== undefined && cidrContains(cover, ip))
      return `${formatCidr(cover)} holds the InternalIP ${text} of a node`;
  }
  for (const text of input.connected) {
    const subnet = parseCidr(text, { strict: false });
    // Overlapping either way: a cover inside the subnet would accept its hosts' forwarded traffic.
    if (subnet !== undefined && cidrsOverlap(cover, subnet))
      return `${formatCidr(cover)} overlaps ${formatCidr(subnet)}, a subnet this node is connected to`;
  }
  return undefined;
}

/** Why `cover` is mostly address space no pod CIDR holds, if it is (the pod CIDRs do not overlap). */
function sparse(cover: Cidr, cidrs: readonly Cidr[]): string | undefined {
  // Each address once: repeated and nested CIDRs merged away.
  const held = aggregate(cidrs).reduce((sum, c) => sum + cidrSize(c), 0n);
  if (held * 16n >= cidrSize(cover)) return undefined;
  return `${formatCidr(cover)} is mostly not pod CIDRs (they hold less than 1/16 of it)`;
}
