/**
 * Does the host's own firewall let this node forward its pods' traffic? A packet the node routes to
 * or from a pod passes every base chain at the forward hook, and one drop in any of them is final: an
 * accept in trellis's table cannot undo Docker's `FORWARD` policy DROP, ufw's or firewalld's reject.
 * So each such chain is walked for the two kinds of packets that matter, from the node's pods (source
 * in a pod CIDR, in through a `trl*` veth) and to them (destination in a pod CIDR, out through one),
 * per family: the first rule that certainly applies and decides (accept, drop, reject, or a jump whose
 * chain decides) settles it; rules whose match this cannot judge (conntrack state, marks, sets) are
 * passed over, as if they did not match; falling off the end is the policy. A chain that drops either
 * kind is reported with the rule or policy that does it.
 *
 * Deliberately narrow: it recognises the matches an operator writes to let pods through (source or
 * destination prefix, `iifname`/`oifname "trl*"`, `meta nfproto`), never guesses at the others, and
 * calls a chain that hands packets to user space (`queue`) or jumps to a chain it did not read
 * undecided rather than blocking.
 */
import { cidrHolds, cidrsOverlap, parseCidr } from '../ip/index.ts';
import {
  type BaseChain,
  type ChainRef,
  chainKey,
  type ForwardRuleset,
  ipFamilyOf,
  jumpTarget,
  type Rule,
} from './ruleset.ts';

export type Direction = 'from-pods' | 'to-pods';

/** What one walk asks: packets of `family` from or to the node's pod CIDR `podCIDR`. */
export interface PacketKind {
  family: 4 | 6;
  podCIDR: string;
  direction: Direction;
}

export interface ForwardBlock extends PacketKind {
  /** The base chain, as `nft list chain` names it: "ip filter FORWARD". */
  chain: string;
  /** "policy drop", or the rule: "rule 12 in ip filter DOCKER-USER: reject". */
  by: string;
  /**
   * The rule that drops (a rule of the base chain or of a chain it jumps to); absent: the policy.
   * `spec`: a legacy iptables rule's options as saved.
   */
  rule?: { chain: ChainRef; handle: number; spec?: readonly string[] };
  /**
   * A policy drop only: the rule of the base chain (a goto or a return that certainly applies) after
   * which the policy decides without the rest of the chain. An accept appended at the end would never
   * be reached, and one put before it would come before the rules it leads to (the operator's): the
   * block is reported, not answered.
   */
  exit?: { chain: ChainRef; handle: number; spec?: readonly string[] };
  /**
   * The rule names the pods (their addresses or their veths): an operator's choice, which trellis
   * reports and never overrides. A catch-all drop or reject (no such match) is the firewall's default.
   */
  targeted?: true;
  /**
   * The chain's table is owned by another process (nftables' owner flag: firewalld 2.2+): only that
   * process may change it, so trellis inserts nothing there and says how to let the pods through its
   * own configuration.
   */
  owned?: true;
}

export type Match = 'always' | 'never' | 'maybe';

/** Whether one `match` expression (nft JSON) holds for the packets a walk asks about. */
export type Judge = (match: Record<string, unknown>) => Match;

/** Statements that neither filter nor decide. */
const NEUTRAL = new Set(['counter', 'log', 'mangle']);
const VERDICTS = new Set(['accept', 'drop', 'reject', 'jump', 'goto', 'return', 'continue', 'queue']);
/**
 * iptables-nft's extensions nft has no native form for (`{"xt": {"type", "name"}}`): `-m comment`
 * filters nothing; `-j REJECT` is a reject; the non-terminating targets below decide nothing.
 */
const XT_NEUTRAL_MATCHES = new Set(['comment']);
const XT_NEUTRAL_TARGETS = new Set(['LOG', 'NFLOG', 'MARK', 'CONNMARK', 'TRACE', 'TCPMSS', 'CLASSIFY']);

const UNKNOWN_XT = '';

/** The xt extension an expression is, if it is one: a match, or a target. */
function xtOf(e: Record<string, unknown>): { match: boolean; name: string } | undefined {
  const xt = e.xt as { type?: unknown; name?: unknown } | null | undefined;
  if (xt === undefined) return undefined;
  // nft before 1.0.6 prints every xt extension as `"xt": null`, match or target: judged as a match
  // that may hold, or in a rule with no verdict of its own as its target (ruleMatchesWith, verdictOf).
  if (xt === null || typeof xt.name !== 'string') return { match: true, name: UNKNOWN_XT };
  return { match: xt.type === 'match', name: xt.name };
}

/** An xt target as a verdict: 'reject', undefined (decides nothing), or 'other' (undecided). */
function xtVerdict(name: string): string | undefined {
  if (name === 'REJECT') return 'reject';
  return XT_NEUTRAL_TARGETS.has(name) ? undefined : 'other';
}

/**
 * nft's wildcard interface names end in `*`; "trl*" covers every trellis host veth, so every packet
 * of a kind `onNode` (all its addresses pods of this node); the pods of other nodes a wider prefix
 * holds come and go by the uplink or a tunnel (a NodePort DNATed to them), which it does not match.
 */
function ifnameMatch(pattern: unknown, onNode: boolean): Match {
  if (typeof pattern !== 'string') return 'maybe';
  if (pattern === '*') return 'always';
  const fixed = pattern.endsWith('*') ? pattern.slice(0, -1) : undefined;
  if (fixed !== undefined && 'trl'.startsWith(fixed)) return onNode ? 'always' : 'maybe';
  // One pod's veth, or some of them ("trl3*"): not every pod. Another device: none of this node's
  // pods' packets, but other nodes' pods' do cross the uplink or a tunnel.
  return (fixed ?? pattern).startsWith('trl') || !onNode ? 'maybe' : 'never';
}

/** A prefix match's right side as text: `10.0.0.0/8`, a host address as /32 or /128. */
export function prefixOf(right: unknown): string | undefined {
  if (typeof right === 'string')
    return right.includes('/') ? right : `${right}/${right.includes(':') ? 128 : 32}`;
  const p = (right as { prefix?: { addr?: unknown; len?: unknown } } | null)?.prefix;
  if (p !== undefined && typeof p.addr === 'string' && typeof p.len === 'number') return `${p.addr}/${p.len}`;
  return undefined;
}

/** `onNode`: every address of the kind's prefix is a pod of this node (see ifnameMatch). */
function matchExpr(m: Record<string, unknown>, kind: PacketKind, onNode = true): Match {
  const op = m.op;
  const left = m.left as Record<string, Record<string, unknown>> | undefined;
  if (left === undefined) return 'maybe';
  const positive = op === '==';
  const negative = op === '!=';
  if (!positive && !negative) return 'maybe';
  const invert = (x: Match): Match => (!negative || x === 'maybe' ? x : x === 'always' ? 'never' : 'always');
  if (left.payload !== undefined) {
    const { protocol, field } = left.payload;
    if (protocol !== 'ip' && protocol !== 'ip6') return 'maybe';
    if ((protocol === 'ip') !== (kind.family === 4)) return 'never';
    const ours = kind.direction === 'from-pods' ? 'saddr' : 'daddr';
    if (field !== ours) return 'maybe';
    const text = prefixOf(m.right);
    const cidr = text === undefined ? undefined : parseCidr(text, { strict: false });
    const pods = parseCidr(kind.podCIDR, { strict: false });
    if (cidr === undefined || pods === undefined) return 'maybe';
    if (cidrHolds(cidr, pods)) return invert('always');
    return cidrsOverlap(cidr, pods) ? 'maybe' : invert('never');
  }
  if (left.meta !== undefined) {
    const key = left.meta.key;
    if (key === 'nfproto') {
      const want = kind.family === 4 ? 'ipv4' : 'ipv6';
      return m.right === want ? invert('always') : typeof m.right === 'string' ? invert('never') : 'maybe';
    }
    const ours = kind.direction === 'from-pods' ? 'iifname' : 'oifname';
    if (key === ours) return invert(ifnameMatch(m.right, onNode));
  }
  return 'maybe';
}

/** Whether a rule's matches certainly hold for `kind` (statements and verdicts aside). */
export function ruleMatches(rule: Rule, kind: PacketKind): Match {
  return ruleMatchesWith(rule, (m) => matchExpr(m, kind));
}

/** Whether a rule's matches certainly hold for the packets `judge` knows (statements and verdicts aside). */
export function ruleMatchesWith(rule: Rule, judge: Judge): Match {
  let result: Match = 'always';
  // nft < 1.0.6's `xt: null` in a rule without a verdict of its own is taken as its target (an
  // iptables -j REJECT), not as a match: verdictOf makes it 'other', so the walk cannot call it clear.
  const unknownIsTarget = !rule.expr.some((e) => VERDICTS.has(Object.keys(e)[0] ?? ''));
  for (const e of rule.expr) {
    const [key] = Object.keys(e);
    if (key === undefined || NEUTRAL.has(key) || VERDICTS.has(key)) continue;
    const xt = xtOf(e);
    if (xt?.name === UNKNOWN_XT && unknownIsTarget) continue;
    if (xt !== undefined && (!xt.match || XT_NEUTRAL_MATCHES.has(xt.name))) continue;
    const m = key === 'match' ? judge(e.match as Record<string, unknown>) : 'maybe';
    if (m === 'never') return 'never';
    if (m === 'maybe') result = 'maybe';
  }
  return result;
}

/** A rule that matches on addresses or interface names: it picks its packets, as a catch-all does not. */
function namesPods(rule: Rule): boolean {
  return rule.expr.some((e) => {
    const left = (e.match as { left?: Record<string, { key?: unknown }> } | undefined)?.left;
    if (left === undefined) return false;
    return left.payload !== undefined || (left.meta !== undefined && left.meta.key !== 'nfproto');
  });
}

/** The rule's verdict (accept, drop, jump, ...; 'other' for an unknown extension's), if it has one. */
export function verdictOf(rule: Rule): string | undefined {
  let v: string | undefined;
  let unknownXt = false;
  for (const e of rule.expr) {
    const [key] = Object.keys(e);
    if (key !== undefined && VERDICTS.has(key)) v = key;
    const xt = xtOf(e);
    if (xt !== undefined && !xt.match) v = xtVerdict(xt.name) ?? v;
    if (xt?.name === UNKNOWN_XT) unknownXt = true;
  }
  // A rule of unknown extensions and no verdict of its own: one of them may be its target (REJECT).
  return v ?? (unknownXt ? 'other' : undefined);
}

export type Outcome =
  | { kind: 'accept' }
  | { kind: 'drop'; by: string; rule: NonNullable<ForwardBlock['rule']>; targeted: boolean }
  | { kind: 'undecided' }
  /** Fell off the end or returned: the caller goes on. */
  | { kind: 'next' };

const MAX_DEPTH = 16;

/** Verdicts by which a packet may leave the walk before a later drop: accept, return, a jump... */
const ESCAPES = new Set(['accept', 'return', 'jump', 'goto', 'queue', 'other']);

/**
 * The fate of the packets `judge` knows in `chain`: the first rule that certainly applies and decides
 * (a jump's chain walked in turn), or 'next' when none does (the caller goes on, or the policy decides).
 * A rule the judge cannot decide is passed over; `strict` instead makes the walk undecided when such a
 * rule could let the packets escape (accept, return, jump): a drop after it is then not certain.
 */
export function walk(rs: ForwardRuleset, chain: ChainRef, judge: Judge, depth = 0, strict = false): Outcome {
  const rules = rs.rules.get(chainKey(chain));
  if (rules === undefined || depth > MAX_DEPTH) return { kind: 'undecided' };
  for (const rule of rules) {
    const m = ruleMatchesWith(rule, judge);
    if (m === 'maybe' && strict && ESCAPES.has(verdictOf(rule) ?? '')) return { kind: 'undecided' };
    if (m !== 'always') continue;
    const v = verdictOf(rule);
    switch (v) {
      case undefined:
      case 'continue':
        continue;
      case 'accept':
        return { kind: 'accept' };
      case 'drop':
      case 'reject':
        return {
          kind: 'drop',
          by: `rule ${rule.handle} in ${chainKey(chain)}: ${v}`,
          rule: {
            chain: { family: chain.family, table: chain.table, name: chain.name },
            handle: rule.handle,
            ...(rule.spec === undefined ? {} : { spec: rule.spec }),
          },
          targeted: namesPods(rule),
        };
      case 'return':
        return { kind: 'next' };
      case 'queue':
        return { kind: 'undecided' };
      case 'jump':
      case 'goto': {
        const target = jumpTarget(rule);
        if (target === undefined) return { kind: 'undecided' };
        const r = walk(rs, { ...chain, name: target }, judge, depth + 1, strict);
        if (r.kind !== 'next') return r;
        if (v === 'goto') return { kind: 'next' };
        continue;
      }
      default:
        return { kind: 'undecided' };
    }
  }
  return { kind: 'next' };
}

/**
 * The first goto or return of a base chain that certainly applies to the packets: after it the policy
 * decides without the rest of the chain (a goto's chain falls through to it, a return goes straight
 * to it). One that may apply is passed over, as the walk passes over every rule it cannot judge.
 */
function firstExit(rs: ForwardRuleset, chain: ChainRef, judge: Judge): ForwardBlock['exit'] {
  for (const rule of rs.rules.get(chainKey(chain)) ?? []) {
    const v = verdictOf(rule);
    if ((v === 'goto' || v === 'return') && ruleMatchesWith(rule, judge) === 'always') {
      const ref = { family: chain.family, table: chain.table, name: chain.name };
      return { chain: ref, handle: rule.handle, ...(rule.spec === undefined ? {} : { spec: rule.spec }) };
    }
  }
  return undefined;
}

/** The chain is at `hook` and sees packets of `family`. */
export function applies(chain: BaseChain, family: 4 | 6, hook: BaseChain['hook'] = 'forward'): boolean {
  if ((chain.hook ?? 'forward') !== hook) return false;
  const only = ipFamilyOf(chain.family);
  return only === undefined || only === family;
}

/**
 * Every (base chain, packet kind) the host's firewall drops, for the prefixes the accepts match.
 * `own`: this node's pod CIDRs, when the prefixes may be wider (the cluster's pod network): only a
 * kind inside them passes this node's veths alone. Absent or []: every kind is taken as this node's.
 */
export function forwardBlocks(
  rs: ForwardRuleset,
  podCIDRs: readonly string[],
  own?: readonly string[],
): ForwardBlock[] {
  const blocks: ForwardBlock[] = [];
  for (const { kind, onNode, targetedOnly } of walkedKinds(podCIDRs, own)) {
    for (const chain of rs.baseChains) {
      if (!applies(chain, kind.family)) continue;
      const r = walk(rs, chain, (m) => matchExpr(m, kind, onNode));
      if (targetedOnly && !(r.kind === 'drop' && r.targeted)) continue;
      // The wide kind's walk may have met the same rule (`ip daddr 10.244.0.0/16 drop`): said once.
      if (
        targetedOnly &&
        r.kind === 'drop' &&
        blocks.some(
          (b) =>
            b.family === kind.family &&
            b.direction === kind.direction &&
            b.chain === chainKey(chain) &&
            b.rule?.handle === r.rule.handle &&
            chainKey(b.rule.chain) === chainKey(r.rule.chain),
        )
      )
        continue;
      const owned = chain.owned === true ? { owned: true as const } : {};
      if (r.kind === 'drop') {
        const { by, rule, targeted } = r;
        blocks.push({
          ...kind,
          chain: chainKey(chain),
          by,
          rule,
          ...(targeted ? { targeted: true } : {}),
          ...owned,
        });
      } else if (r.kind === 'next' && chain.policy === 'drop') {
        const exit = firstExit(rs, chain, (m) => matchExpr(m, kind, onNode));
        blocks.push({
          ...kind,
          chain: chainKey(chain),
          by: 'policy drop',
          ...(exit ? { exit } : {}),
          ...owned,
        });
      }
    }
  }
  return blocks;
}

/**
 * The forward base chains whose fate for some of the pods' packets the walk cannot tell (a rule it
 * cannot read: a queue, a chain it did not fetch, a target it does not know), each once: not a
 * block, but not known to let the packets through either.
 */
export function undecidedChains(
  rs: ForwardRuleset,
  podCIDRs: readonly string[],
  own?: readonly string[],
): string[] {
  const out = new Set<string>();
  for (const { kind, onNode } of walkedKinds(podCIDRs, own)) {
    for (const chain of rs.baseChains) {
      if (!applies(chain, kind.family)) continue;
      if (walk(rs, chain, (m) => matchExpr(m, kind, onNode)).kind === 'undecided') out.add(chainKey(chain));
    }
  }
  return [...out].sort();
}

/**
 * The kinds a check walks: those of the prefixes, and where one is wider than this node's pod CIDRs,
 * also this node's own, whose packets alone pass its veths: an operator's drop of them (`iifname
 * "trl*" drop`) is only a maybe for the wide kind, and would go unreported (`targetedOnly`: only such
 * drops are taken from them; the accepts and policy drops are the prefixes').
 */
function walkedKinds(
  podCIDRs: readonly string[],
  own: readonly string[] | undefined,
): { kind: PacketKind; onNode: boolean; targetedOnly: boolean }[] {
  const out = packetKinds(podCIDRs).map((kind) => ({
    kind,
    onNode: isOnNode(kind, own),
    targetedOnly: false,
  }));
  if (own === undefined) return out;
  // Only own CIDRs a wide kind holds: one walked as itself already (dual-stack, where one family's
  // cover falls back to this node's CIDR; exact mode) would report its drops twice.
  const wide = out.filter((k) => !k.onNode).map((k) => parseCidr(k.kind.podCIDR, { strict: false }));
  const heldByWide = own.filter((o) => {
    const c = parseCidr(o, { strict: false });
    return c !== undefined && wide.some((w) => w !== undefined && cidrHolds(w, c));
  });
  for (const kind of packetKinds(heldByWide)) out.push({ kind, onNode: true, targetedOnly: true });
  return out;
}

/** Whether every address of the kind's prefix is in `own` (absent or []: taken as so). */
function isOnNode(kind: PacketKind, own: readonly string[] | undefined): boolean {
  if (own === undefined || own.length === 0) return true;
  const prefix = parseCidr(kind.podCIDR, { strict: false });
  if (prefix === undefined) return false;
  return own.some((o) => {
    const c = parseCidr(o, { strict: false });
    return c !== undefined && cidrHolds(c, prefix);
  });
}

/** The packets each walk asks about: per pod CIDR, from the pods and to them (the reader follows a jump that certainly applies to one). */
export function packetKinds(podCIDRs: readonly string[]): PacketKind[] {
  return podCIDRs.flatMap((podCIDR) =>
    (['from-pods', 'to-pods'] as const).map((direction) => ({
      family: podCIDR.includes(':') ? (6 as const) : (4 as const),
      podCIDR,
      direction,
    })),
  );
}
