/**
 * The agent's nftables table as text. Pure: options in, `nft -f -` input out.
 *
 * Masquerade: traffic from this node's pods to anything outside the cluster's pod CIDRs (and outside the
 * operator's no-masquerade CIDRs) leaves with the node's address; pod-to-pod traffic keeps the pod's
 * address. One table `inet trellis`, one nat chain at the srcnat hook, one rule per family matching named
 * interval sets, so a cluster of thousands of nodes is still two rules (sets are hash/interval lookups,
 * not rule walks); with tunnels, a second rule per family masquerades the node's own addresses into
 * them (masqueradeBlock).
 *
 * MSS clamp: pods keep their interface's full MTU on every route (auto mode), so a TCP connection into a
 * VXLAN device would pick segments too large for it. A filter chain at the forward hook lowers the MSS
 * of SYNs the node forwards into those devices to the route's MTU (what `iptables -j TCPMSS
 * --clamp-mss-to-pmtu` does; the kernel only ever lowers it), both ways, since each end's node clamps
 * the SYN it tunnels. A filter chain needs no connection tracking, so it costs nothing where
 * masquerading is off. Other protocols meet the node as the first hop: "fragmentation needed" / "packet
 * too big" from the node itself, or IPv4 fragmentation without DF.
 *
 * The text replaces the whole table in ONE transaction: `table` (creates it if missing, so the delete cannot
 * fail), `delete table`, then the full definition. nft applies a file atomically, so packets see either the
 * old rules or the new ones, never an empty table.
 *
 * Every CIDR is parsed and re-rendered from numbers: no text from a Node object or a config file reaches
 * nft unchecked. Invalid entries from Node objects (podCIDRs, clusterCIDRs) are skipped and reported by
 * planMasq; invalid operator config (noMasqueradeCIDRs, tableName) throws MasqConfigError.
 */

import type { Family } from '../datapath/ports.ts';
import { type Cidr, formatCidr, formatIp, parseCidr } from '../ip/index.ts';
import { mergeRanges } from './ranges.ts';

export interface MasqOptions {
  /** This node's pod CIDRs: the sources that get masqueraded. */
  podCIDRs: { v4: readonly string[]; v6: readonly string[] };
  /** Every node's pod CIDRs (ours included): destinations that keep the pod source address. */
  clusterCIDRs: readonly string[];
  /** Extra destinations that keep the pod source address (e.g. a VPC range with routes to pods). */
  noMasqueradeCIDRs: readonly string[];
  /** nftables table name; 'trellis' by default. */
  tableName?: string;
  /** Render the masquerade sets and nat chain; true by default (--no-masquerade: false). */
  masquerade?: boolean;
  /** Devices whose forwarded TCP SYNs get their MSS clamped to the route MTU (the VXLAN devices). */
  clampMssInto?: readonly string[];
  /**
   * The tunnels (the VXLAN devices): what leaves through them to the pod network from an address that
   * is not one of this node's pods (the node's InternalIP, a forwarded client) is masqueraded to the
   * device's VTEP address (with the masquerade sets only).
   */
  tunnels?: readonly string[];
  /** Drop what a pod sends from an address that is not its own (sourceCheckBlock); off by default here. */
  sourceCheck?: boolean;
}

export class MasqConfigError extends Error {
  readonly setting: string;
  readonly value: unknown;

  constructor(setting: string, value: unknown, reason: string) {
    super(`invalid ${setting} ${JSON.stringify(value)}: ${reason}`);
    this.name = 'MasqConfigError';
    this.setting = setting;
    this.value = value;
  }
}

export const DEFAULT_TABLE = 'trellis';
const TABLE_NAME = /^[a-z][a-z0-9_]{0,31}$/;
/** A Linux interface name (IFNAMSIZ - 1), restricted to characters nft takes inside quotes as is. */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function validateTableName(name: string | undefined): string {
  const t = name ?? DEFAULT_TABLE;
  if (typeof t !== 'string' || !TABLE_NAME.test(t)) {
    throw new MasqConfigError('tableName', t, 'expected [a-z][a-z0-9_]{0,31}');
  }
  return t;
}

export interface SkippedCidr {
  setting: string;
  value: unknown;
  reason: string;
}

/**
 * Strict parsing (operator config): the first bad entry throws. Lenient parsing (Node objects): bad entries
 * are skipped and returned, so one broken Node cannot take masquerade away from every pod on this node.
 */
function parseAll(
  setting: string,
  values: unknown,
  family: Family | undefined,
  skipped: SkippedCidr[] | undefined,
): Cidr[] {
  if (!Array.isArray(values)) throw new MasqConfigError(setting, values, 'expected an array of CIDRs');
  const out: Cidr[] = [];
  values.forEach((v, i) => {
    const c = typeof v === 'string' ? parseCidr(v) : undefined;
    let reason: string | undefined;
    if (c === undefined) reason = 'expected a CIDR with no host bits, e.g. 10.244.0.0/16';
    else if (family !== undefined && c.family !== family) reason = `expected an IPv${family} CIDR`;
    if (reason === undefined) {
      out.push(c!);
    } else if (skipped !== undefined) {
      skipped.push({ setting: `${setting}[${i}]`, value: v, reason });
    } else {
      throw new MasqConfigError(`${setting}[${i}]`, v, reason);
    }
  });
  return out;
}

/** Throws MasqConfigError naming the first entry that is not a CIDR without host bits (operator config). */
export function validateNoMasqueradeCIDRs(cidrs: readonly string[]): void {
  parseAll('noMasqueradeCIDRs', cidrs, undefined, undefined);
}

/** Set elements for an interval set: merged ranges, written as a prefix when they are one. */
function elements(ranges: readonly (readonly [bigint, bigint])[], family: Family): string[] {
  const bits = family === 4 ? 32 : 128;
  return ranges.map(([lo, hi]) => {
    const size = hi - lo + 1n;
    const isPow2 = (size & (size - 1n)) === 0n;
    if (isPow2 && lo % size === 0n) {
      const prefixLen = bits - (size.toString(2).length - 1);
      return formatCidr({ family, network: lo, prefixLen });
    }
    return `${formatIp({ family, value: lo })}-${formatIp({ family, value: hi })}`;
  });
}

/** A set's block; without `elems`, its shape (what a change of elements alone leaves as it is). */
function setBlock(set: MasqSet, elems: string[] | undefined): string[] {
  const lines = [
    `\tset ${set.name} {`,
    `\t\ttype ${set.family === 4 ? 'ipv4_addr' : 'ipv6_addr'}`,
    '\t\tflags interval',
  ];
  if (elems !== undefined && elems.length > 0) lines.push(`\t\telements = { ${elems.join(', ')} }`);
  lines.push('\t}');
  return lines;
}

/** Removes the table in one idempotent transaction (the uninstall path). */
export function renderDeleteTable(tableName?: string): string {
  const t = validateTableName(tableName);
  return `table inet ${t} {}\ndelete table inet ${t}\n`;
}

/** One interval set of the table and what it holds: merged, sorted, disjoint inclusive ranges. */
export interface MasqSet {
  name: string;
  family: Family;
  ranges: [bigint, bigint][];
}

export interface MasqPlan {
  /** The table's name (validated). */
  table: string;
  ruleset: string;
  /** The same table without the MSS clamp, when the ruleset has one (MasqSyncer's fallback). */
  withoutClamp?: string;
  /**
   * The ruleset and withoutClamp with every set left empty: two plans of equal shape differ in set
   * elements only, which MasqSyncer can change in place.
   */
  shapes: { ruleset: string; withoutClamp?: string };
  /** The table's sets with their elements. */
  sets: MasqSet[];
  /** The blocks the nomasq sets merge (our pod CIDRs, the cluster's, the no-masquerade CIDRs), parsed. */
  nomasqBlocks: Cidr[];
  /** Entries of podCIDRs / clusterCIDRs (they come from Node objects) that were not valid and were left out. */
  skipped: SkippedCidr[];
}

/** The ruleset text; throws MasqConfigError only for a bad tableName or noMasqueradeCIDRs (config). */
export function renderMasqRuleset(opts: MasqOptions): string {
  return planMasq(opts).ruleset;
}

export function planMasq(opts: MasqOptions): MasqPlan {
  const table = validateTableName(opts.tableName);
  if (typeof opts.podCIDRs !== 'object' || opts.podCIDRs === null) {
    throw new MasqConfigError('podCIDRs', opts.podCIDRs, 'expected { v4: string[], v6: string[] }');
  }
  const skipped: SkippedCidr[] = [];
  const pods = [
    ...parseAll('podCIDRs.v4', opts.podCIDRs.v4, 4, skipped),
    ...parseAll('podCIDRs.v6', opts.podCIDRs.v6, 6, skipped),
  ];
  // Our own pods are cluster destinations too, whether or not the caller listed them.
  const keep = [
    ...pods,
    ...parseAll('clusterCIDRs', opts.clusterCIDRs, undefined, skipped),
    ...parseAll('noMasqueradeCIDRs', opts.noMasqueradeCIDRs, undefined, undefined),
  ];

  const sets = opts.masquerade === false ? [] : masqueradeSets(pods, keep);
  const clamp = clampBlock(opts.clampMssInto ?? []);
  const head = [
    ...renderDeleteTable(table).trimEnd().split('\n'),
    `table inet ${table} {`,
    ...(opts.sourceCheck === true ? sourceCheckBlock() : []),
  ];
  const tunnels = deviceNames('tunnels', opts.tunnels ?? []);
  const masq = opts.masquerade === false ? [] : masqueradeBlock(sets, tunnels, true);
  const masqShape = opts.masquerade === false ? [] : masqueradeBlock(sets, tunnels, false);
  const text = (block: string[], extra: string[]): string =>
    `${[...head, ...block, ...extra, '}'].join('\n')}\n`;
  return {
    table,
    ruleset: text(masq, clamp),
    ...(clamp.length === 0 ? {} : { withoutClamp: text(masq, []) }),
    shapes: {
      ruleset: text(masqShape, clamp),
      ...(clamp.length === 0 ? {} : { withoutClamp: text(masqShape, []) }),
    },
    sets,
    nomasqBlocks: keep,
    skipped,
  };
}

/** pods_vN (the sources) and nomasq_vN (destinations kept) for each family with pods here. */
function masqueradeSets(pods: Cidr[], keep: Cidr[]): MasqSet[] {
  const sets: MasqSet[] = [];
  for (const family of [4, 6] as Family[]) {
    const src = mergeRanges(pods.filter((b) => b.family === family));
    if (src.length === 0) continue; // No pods of this family here: nothing to masquerade.
    sets.push(
      { name: `pods_v${family}`, family, ranges: src },
      { name: `nomasq_v${family}`, family, ranges: mergeRanges(keep.filter((b) => b.family === family)) },
    );
  }
  return sets;
}

/** The sets and the nat chain: one rule per family with pods here, two with tunnels. */
function masqueradeBlock(
  sets: readonly MasqSet[],
  tunnels: readonly string[],
  withElements: boolean,
): string[] {
  const lines: string[] = [];
  const rules: string[] = [];
  for (const set of sets) {
    lines.push(...setBlock(set, withElements ? elements(set.ranges, set.family) : undefined));
    if (!set.name.startsWith('pods_')) continue;
    const v = `v${set.family}`;
    const ipKw = set.family === 4 ? 'ip' : 'ip6';
    rules.push(
      `\t\t${ipKw} saddr @pods_${v} ${ipKw} daddr != @nomasq_${v} counter masquerade fully-random comment "trellis: pods to outside the cluster"`,
    );
    if (tunnels.length === 0) continue;
    // The node into a tunnel from an address of its own (a socket bound to its InternalIP, a
    // ClusterIP kube-proxy did not masquerade) or a client it forwards: the peer's route back to that
    // address is the underlay, not the tunnel, so strict reverse-path filtering there (RHEL's default)
    // drops it, and the answer likewise on the way back. From the device's VTEP address (what an
    // unbound socket picks already) it comes back through the tunnel. flannel's rule, kept to the
    // tunnels: direct routes carry such traffic with the node's address both ways.
    rules.push(
      `\t\toifname { ${tunnels.join(', ')} } ${ipKw} saddr != @pods_${v} ${ipKw} daddr @nomasq_${v} counter masquerade fully-random comment "trellis: the node into the tunnels, from its VTEP address"`,
    );
  }
  // After every other source NAT (kube-proxy's, iptables' nat table, an operator's SNAT for some
  // egress: all at srcnat): the first chain that binds a connection's NAT wins, and at equal
  // priority the chain registered last runs first, so trellis's table (made again at every start)
  // would take their connections. fully-random: source ports picked at random, as kube-proxy and
  // flannel do, so two pods' connections to one destination do not race for the same port.
  lines.push(
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority srcnat + 10; policy accept;',
    ...rules,
    '\t}',
  );
  return lines;
}

/**
 * Pods send with their own addresses only. A packet that comes in on a pod's host veth (trl...) from
 * an address whose route does not lead back out of that same veth (the kernel's FIB, as strict
 * reverse-path filtering asks it) is dropped before connection tracking sees it: one pod cannot pass
 * itself off as another, or as a node, to pods, nodes or anything the node forwards to. IPv4's
 * rp_filter cannot be relied on for it (the kernel takes the looser of `all` and the interface's, and
 * distributions set `all` to loose), and IPv6 has none. The unspecified address (IPv6 duplicate
 * address detection, MLD before a link-local address) has no route and stays allowed; link-local
 * sources route back through the veth they came in on. The first test is the interface name, so a
 * packet from anywhere else costs one comparison.
 */
function sourceCheckBlock(): string[] {
  const comment = 'comment "trellis: a pod sends from its own addresses"';
  return [
    '\tchain prerouting {',
    '\t\ttype filter hook prerouting priority raw; policy accept;',
    `\t\tiifname "trl*" ip saddr != 0.0.0.0 fib saddr . iif oif missing counter drop ${comment}`,
    `\t\tiifname "trl*" ip6 saddr != :: fib saddr . iif oif missing counter drop ${comment}`,
    '\t}',
  ];
}

/** Interface names checked, deduplicated, sorted and quoted for nft. */
function deviceNames(setting: string, devices: readonly string[]): string[] {
  if (!Array.isArray(devices)) throw new MasqConfigError(setting, devices, 'expected device names');
  for (const [i, d] of devices.entries()) {
    if (typeof d !== 'string' || !IFNAME.test(d)) {
      throw new MasqConfigError(`${setting}[${i}]`, d, 'expected an interface name of [A-Za-z0-9_.-]{1,15}');
    }
  }
  return [...new Set(devices)].sort().map((d) => `"${d}"`);
}

/**
 * The forward chain clamping TCP SYNs into `devices`. The SYN test comes first: almost every forwarded
 * packet fails it, so the chain costs one header check per packet (and GSO packets carry up to 64 KB).
 */
function clampBlock(devices: readonly string[]): string[] {
  const names = deviceNames('clampMssInto', devices);
  if (names.length === 0) return [];
  const rule = `tcp flags syn / syn,rst oifname { ${names.join(', ')} } counter tcp option maxseg size set rt mtu`;
  return [
    '\tchain forward {',
    '\t\ttype filter hook forward priority mangle; policy accept;',
    `\t\t${rule} comment "trellis: TCP into the tunnels fits their MTU"`,
    '\t}',
  ];
}
