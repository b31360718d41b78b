/**
 * Does the host's own firewall let the VXLAN packets of the nodes this node tunnels to in? They are
 * UDP to the node's VXLAN port, for the node itself, so they pass the input hook, where ufw's default
 * `deny (incoming)`, firewalld's zone reject or an `INPUT` policy DROP ends them: every pod of the
 * peers this node tunnels to is then cut off from every pod here, both ways, while every route and
 * VXLAN entry is in place. flannel's documentation asks operators to open the port by hand; trellis
 * checks it and says so (log, status, doctor, metric). It never opens the port itself: that is the
 * node's own attack surface, the operator's call.
 *
 * The walk is forward-analysis.ts's, with a judge for these packets: UDP (`meta l4proto`, `ip
 * protocol`, `ip6 nexthdr`; a match on another transport's header cannot hold), to `port` (`udp` or
 * `th dport`, a set or range of ports), from the peers' InternalIPs (a source prefix holding all of
 * them holds, one holding none does not), in through the devices the node reaches those peers by
 * (`iifname` judged the same way), new to conntrack and not NATed, for the node's own address (`fib
 * daddr type local`). A rule it cannot judge (marks, sets, limits, an extension nft cannot show, such
 * as iptables-nft's `-m addrtype`) is passed over when it could only drop, and makes the verdict
 * undecided when it could let the packets through: a warning is given only for a certain drop.
 */
import { cidrContains, parseCidr, parseIp } from '../ip/index.ts';
import { acceptAtTop, ownedTableFix } from './advice.ts';
import { applies, type Judge, type Match, type Outcome, prefixOf, walk } from './forward-analysis.ts';
import { type ChainRef, chainKey, chainOfKey, type ForwardRuleset, ipFamilyOf } from './ruleset.ts';

/** The VXLAN packets of one family this node receives from the peers it tunnels to. */
export interface VxlanInKind {
  family: 4 | 6;
  port: number;
  /** The peers' underlay addresses (their InternalIPs of the family). */
  sources: readonly string[];
  /** The devices they come in on: those the node's routes to them leave by. */
  devices: readonly string[];
}

export interface VxlanInBlock {
  family: 4 | 6;
  port: number;
  /** The base chain at the input hook, as `nft list chain` names it: "ip filter INPUT". */
  chain: string;
  /** "policy drop", or the rule: "rule 12 in inet firewalld filter_INPUT: reject". */
  by: string;
  rule?: { chain: ChainRef; handle: number };
  /** The chain's table is owned by another process (nftables' owner flag): see ForwardBlock.owned. */
  owned?: true;
}

/** Transport headers other than UDP's: a match on one cannot hold for a UDP packet. */
const OTHER_TRANSPORTS = new Set(['tcp', 'icmp', 'icmpv6', 'sctp', 'dccp', 'udplite', 'esp', 'ah', 'igmp']);

type Tally = (holds: (x: string) => boolean | undefined) => Match;

/** always when `holds` is true for every one of `xs`, never when for none, else (or unknown) maybe. */
function tally(xs: readonly string[]): Tally {
  return (holds) => {
    if (xs.length === 0) return 'maybe';
    let yes = 0;
    for (const x of xs) {
      const h = holds(x);
      if (h === undefined) return 'maybe';
      if (h) yes++;
    }
    return yes === xs.length ? 'always' : yes === 0 ? 'never' : 'maybe';
  };
}

function portMatches(right: unknown, port: number): boolean | undefined {
  if (typeof right === 'number') return right === port;
  const range = (right as { range?: unknown } | null)?.range;
  if (Array.isArray(range) && typeof range[0] === 'number' && typeof range[1] === 'number')
    return port >= range[0] && port <= range[1];
  const set = (right as { set?: unknown } | null)?.set;
  if (Array.isArray(set)) {
    let unknown = false;
    for (const el of set) {
      const m = portMatches(el, port);
      if (m === true) return true;
      if (m === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }
  return undefined;
}

/** A transport protocol match (`meta l4proto udp`, `ip protocol 17`) against UDP. */
function udpMatch(right: unknown): Match {
  if (right === 'udp' || right === 17) return 'always';
  return typeof right === 'string' || typeof right === 'number' ? 'never' : 'maybe';
}

/** A flag match (`ct state established,related`, `fib daddr type local`): one of them holds, or none. */
function flagsHold(right: unknown, holds: (flag: string) => boolean): Match {
  const flags = typeof right === 'string' ? [right] : Array.isArray(right) ? right : undefined;
  if (flags === undefined || !flags.every((f) => typeof f === 'string')) return 'maybe';
  return flags.some(holds) ? 'always' : 'never';
}

/** nft's wildcard interface names end in `*`. */
function ifnameHolds(pattern: unknown, name: string): boolean | undefined {
  if (typeof pattern !== 'string') return undefined;
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

function sourceIn(right: unknown): (ip: string) => boolean | undefined {
  const text = prefixOf(right);
  const prefix = text === undefined ? undefined : parseCidr(text, { strict: false });
  return (ip) => {
    const addr = parseIp(ip);
    return prefix === undefined || addr === undefined ? undefined : cidrContains(prefix, addr);
  };
}

/** The judge of the walk for `kind`'s packets. */
export function vxlanJudge(kind: VxlanInKind): Judge {
  const sources = tally(kind.sources);
  const devices = tally(kind.devices);
  return (m) => {
    const negative = m.op === '!=';
    if (m.op !== '==' && m.op !== 'in' && !negative) return 'maybe';
    const invert = (x: Match): Match =>
      !negative || x === 'maybe' ? x : x === 'always' ? 'never' : 'always';
    const left = m.left as Record<string, Record<string, unknown>> | undefined;
    if (left?.payload !== undefined) {
      const { protocol, field } = left.payload;
      if (protocol === 'ip' || protocol === 'ip6') {
        if ((protocol === 'ip') !== (kind.family === 4)) return 'never';
        if (field === 'saddr') return invert(sources(sourceIn(m.right)));
        if (field === 'protocol' || field === 'nexthdr') return invert(udpMatch(m.right));
        return 'maybe';
      }
      if (protocol === 'udp' || protocol === 'th') {
        if (field !== 'dport') return 'maybe';
        const hit = portMatches(m.right, kind.port);
        return hit === undefined ? 'maybe' : invert(hit ? 'always' : 'never');
      }
      // `tcp dport != 22` still needs a TCP header (nft adds the dependency): never a UDP packet.
      return typeof protocol === 'string' && OTHER_TRANSPORTS.has(protocol) ? 'never' : 'maybe';
    }
    const ct = left?.ct?.key;
    // Each VXLAN packet is new to conntrack: the source port hashes the inner flow, and the peer's
    // packets back go to the VXLAN port too, so no flow of them ever sees a reply. Nor is one NATed.
    if (ct === 'state') return invert(flagsHold(m.right, (f) => f === 'new'));
    if (ct === 'status') return invert(flagsHold(m.right, () => false));
    // fib daddr type: the node's own address, as every packet at the input hook.
    const fib = left?.fib as { result?: unknown; flags?: unknown } | undefined;
    if (
      fib?.result === 'type' &&
      Array.isArray(fib.flags) &&
      fib.flags.length === 1 &&
      fib.flags[0] === 'daddr'
    )
      return invert(flagsHold(m.right, (t) => t === 'local'));
    const key = left?.meta?.key;
    if (key === 'l4proto') return invert(udpMatch(m.right));
    if (key === 'nfproto') {
      const want = kind.family === 4 ? 'ipv4' : 'ipv6';
      return m.right === want ? invert('always') : typeof m.right === 'string' ? invert('never') : 'maybe';
    }
    if (key === 'iifname') return invert(devices((d) => ifnameHolds(m.right, d)));
    return 'maybe';
  };
}

/** Every input-hook base chain that drops `kinds`' packets, with the rule or policy that does. */
export function vxlanInputBlocks(rs: ForwardRuleset, kinds: readonly VxlanInKind[]): VxlanInBlock[] {
  const blocks: VxlanInBlock[] = [];
  // The chains with iptables-nft's extensions translated (read.ts), where they were read.
  const input: ForwardRuleset = rs.inputRules === undefined ? rs : { ...rs, rules: rs.inputRules };
  for (const kind of kinds) {
    const judge = vxlanJudge(kind);
    for (const chain of rs.baseChains) {
      if (!applies(chain, kind.family, 'input')) continue;
      // Strict: a warning is given only where the drop is certain.
      const r: Outcome = walk(input, chain, judge, 0, true);
      const base = {
        family: kind.family,
        port: kind.port,
        chain: chainKey(chain),
        ...(chain.owned === true ? { owned: true as const } : {}),
      };
      if (r.kind === 'drop')
        blocks.push({ ...base, by: r.by, rule: { chain: r.rule.chain, handle: r.rule.handle } });
      else if (r.kind === 'next' && chain.policy === 'drop') blocks.push({ ...base, by: 'policy drop' });
    }
  }
  return blocks;
}

/** One line per block, for a log field or a doctor finding. */
export function describeVxlanBlock(b: VxlanInBlock): string {
  return `${b.chain} drops IPv${b.family} VXLAN (UDP ${b.port}) from the nodes this node tunnels to: ${b.by}`;
}

/**
 * What lets the packets in: an accept for the port at the top of the chain (iptables for iptables-nft's
 * and legacy iptables' tables, nft otherwise); ufw and firewalld have their own, which survive reloads.
 */
export function vxlanFixCommand(b: VxlanInBlock): string {
  if (b.owned === true) {
    return ownedTableFix(
      b.chain,
      `firewall-cmd --permanent --add-port=${b.port}/udp && firewall-cmd --reload (the zone of the interface the tunnel comes in on, if not the default: --zone=<zone>)`,
      `UDP port ${b.port} from the nodes this node tunnels to`,
    );
  }
  const inet = ipFamilyOf(chainOfKey(b.chain).family) === undefined;
  const nft = `${inet ? `meta nfproto ipv${b.family} ` : ''}udp dport ${b.port}`;
  return acceptAtTop(b.chain, `-p udp --dport ${b.port}`, nft);
}

export const VXLAN_NOTE =
  "better, only from the nodes' own addresses (-s, or ip saddr); with ufw: ufw allow proto udp from <node subnet> to any port <port>; with firewalld: firewall-cmd --permanent --add-port=<port>/udp && firewall-cmd --reload";
