/**
 * The part of the host's nftables ruleset that decides whether the node forwards pod traffic: the
 * base chains at the forward hook (other programs' tables: iptables-nft's `ip filter`, firewalld,
 * Docker) and the regular chains they jump to, as `nft -j` prints them. Plain data; parsing only.
 */

/** nftables address families whose forward hook sees routed IP packets. */
export type ForwardFamily = 'ip' | 'ip6' | 'inet';

/** Legacy iptables' filter tables (x_tables, invisible to nft), named by the tool that edits them. */
export type LegacyFamily = 'iptables-legacy' | 'ip6tables-legacy';

/** Where a chain lives: an nftables family, or a legacy iptables table (iptables-save.ts). */
export type ChainFamily = ForwardFamily | LegacyFamily;

export function isLegacy(family: ChainFamily): family is LegacyFamily {
  return family === 'iptables-legacy' || family === 'ip6tables-legacy';
}

/** The IP family a chain's packets are of; undefined for nftables' inet (both). */
export function ipFamilyOf(family: ChainFamily): 4 | 6 | undefined {
  if (family === 'ip' || family === 'iptables-legacy') return 4;
  if (family === 'ip6' || family === 'ip6tables-legacy') return 6;
  return undefined;
}

export interface ChainRef {
  family: ChainFamily;
  table: string;
  name: string;
}

export interface BaseChain extends ChainRef {
  /** The verdict for packets no rule decided. */
  policy: 'accept' | 'drop';
  prio: number;
  /** The netfilter hook: forward (routed packets, the default) or input (packets for the node itself). */
  hook?: 'forward' | 'input';
  /**
   * Its table has nftables' `owner` flag (firewalld 2.2+ sets it by default): the kernel refuses a
   * change to it from any netlink socket but its owner's (EPERM), so trellis never writes into it.
   */
  owned?: true;
}

/** One rule's expressions, as `nft -j` gives them (objects with one key each). */
export interface Rule {
  handle: number;
  expr: Record<string, unknown>[];
  /** The rule's comment (iptables' `-m comment` too), if any. */
  comment?: string;
  /** Legacy iptables: the rule's options as saved after `-A CHAIN` (it is deleted by them). */
  spec?: string[];
}

export interface ForwardRuleset {
  baseChains: BaseChain[];
  /** chainKey() -> its rules, for the base chains and every chain fetched for a jump. */
  rules: Map<string, Rule[]>;
  /**
   * `rules` with the iptables-nft extensions nft shows by name only translated from
   * iptables-nft-save (read.ts refineXt), for the input walk alone: the forward walk passes over what
   * it cannot judge, and iptables-nft-save leaves out what it cannot print (a set match), which would
   * make a rule it can judge look like another one.
   */
  inputRules?: Map<string, Rule[]>;
  /**
   * Legacy iptables filter tables that could not be read (their save tool failing, /proc/net's list
   * of tables unreadable), with why: what they do to pod traffic is unknown. Absent when every table
   * was read.
   */
  unread?: UnreadTable[];
}

export interface UnreadTable {
  family: LegacyFamily;
  error: string;
}

/** How an UnreadTable's error begins when the list of legacy tables itself could not be read. */
export const LEGACY_LIST_UNREADABLE = 'listing the legacy tables: ';

/** "iptables-legacy filter: spawn iptables-legacy-save ENOENT". */
export function describeUnread(t: UnreadTable): string {
  return `${t.family} filter: ${t.error}`;
}

export function chainKey(c: ChainRef): string {
  return `${c.family} ${c.table} ${c.name}`;
}

const FAMILIES = new Set<string>(['ip', 'ip6', 'inet']);

function items(json: string, what: string): Record<string, unknown>[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new Error(`${what}: nft printed no JSON (${(err as Error).message})`);
  }
  const list = (parsed as { nftables?: unknown }).nftables;
  if (!Array.isArray(list)) throw new Error(`${what}: nft's JSON has no "nftables" array`);
  return list.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null);
}

/**
 * The forward-hook base chains in `nft -j list chains` output (and the input hook's with `input`),
 * except those of `ownTable` (trellis's own, `inet trellis`: it accepts everything it does not drop
 * on purpose).
 */
export function parseForwardBaseChains(
  json: string,
  ownTable: ChainRef['table'],
  input = false,
): BaseChain[] {
  const out: BaseChain[] = [];
  for (const item of items(json, 'nft list chains')) {
    const c = item.chain as Record<string, unknown> | undefined;
    if (c === undefined || (c.hook !== 'forward' && !(input && c.hook === 'input'))) continue;
    const family = String(c.family);
    if (!FAMILIES.has(family)) continue;
    if (family === 'inet' && c.table === ownTable) continue;
    out.push({
      family: family as ForwardFamily,
      table: String(c.table),
      name: String(c.name),
      policy: c.policy === 'drop' ? 'drop' : 'accept',
      prio: typeof c.prio === 'number' ? c.prio : 0,
      ...(c.hook === 'input' ? { hook: 'input' as const } : {}),
    });
  }
  return out;
}

function toRule(r: Record<string, unknown>, expr: unknown[]): Rule {
  return {
    handle: typeof r.handle === 'number' ? r.handle : 0,
    expr: expr.filter((e): e is Record<string, unknown> => typeof e === 'object' && e !== null),
    ...(typeof r.comment === 'string' ? { comment: r.comment } : {}),
  };
}

/** "inet firewalld": a table as `nft list tables` names it. */
export function tableKey(c: Pick<ChainRef, 'family' | 'table'>): string {
  return `${c.family} ${c.table}`;
}

/** nftables' table flags (NFT_TABLE_F_*), by the names nft prints. */
const TABLE_FLAGS = new Set(['dormant', 'owner', 'persist']);

/**
 * The tables in `nft -j list tables` output that carry the owner flag (`owned`), and those whose
 * flags nft printed but this cannot trust (`unsure`): nft prints one flag as a string and several as
 * an array, and nft 1.0.6 (Debian 12's, the image's) prints a lone flag from freed memory: another
 * table's name, or its own release name, where "owner" belongs (seen on this kernel; its arrays are
 * right). An array is trusted; a lone string is confirmed from the table's text listing
 * (parseTableFlagsText).
 */
export function parseTableFlags(json: string): { owned: string[]; unsure: string[] } {
  const owned: string[] = [];
  const unsure: string[] = [];
  for (const item of items(json, 'nft list tables')) {
    const t = item.table as Record<string, unknown> | undefined;
    if (t === undefined || !FAMILIES.has(String(t.family)) || t.flags === undefined) continue;
    const key = tableKey({ family: t.family as ForwardFamily, table: String(t.name) });
    if (Array.isArray(t.flags)) {
      if (t.flags.includes('owner')) owned.push(key);
    } else unsure.push(key);
  }
  return { owned, unsure };
}

/** The flags of `nft -t list table FAMILY NAME` text output: its `flags owner,persist` line, if any. */
export function parseTableFlagsText(text: string): string[] {
  const lines = text.split('\n');
  for (const line of lines.slice(1)) {
    // The table's own statements come before its first chain, set, map or other block.
    if (line.includes('{')) break;
    const m = /^\s*flags\s+(.+?)\s*$/.exec(line);
    if (m !== null) return m[1]!.split(/[\s,]+/).filter((f) => TABLE_FLAGS.has(f));
  }
  return [];
}

/** The rules in `nft -j list chain FAMILY TABLE NAME` output. */
export function parseChainRules(json: string, chain: ChainRef): Rule[] {
  const out: Rule[] = [];
  for (const item of items(json, `nft list chain ${chainKey(chain)}`)) {
    const r = item.rule as Record<string, unknown> | undefined;
    if (r === undefined || !Array.isArray(r.expr)) continue;
    out.push(toRule(r, r.expr));
  }
  return out;
}

/** Every rule of ip, ip6 and inet tables in `nft -j list ruleset` output, with the chain it is in. */
export function parseRulesetRules(json: string): { chain: ChainRef; rule: Rule }[] {
  const out: { chain: ChainRef; rule: Rule }[] = [];
  for (const item of items(json, 'nft list ruleset')) {
    const r = item.rule as Record<string, unknown> | undefined;
    if (r === undefined || !FAMILIES.has(String(r.family)) || !Array.isArray(r.expr)) continue;
    out.push({
      chain: { family: r.family as ForwardFamily, table: String(r.table), name: String(r.chain) },
      rule: toRule(r, r.expr),
    });
  }
  return out;
}

/** The chains a rule jumps or goes to (the target is in the rule's own table). */
export function jumpTarget(rule: Rule): string | undefined {
  for (const e of rule.expr) {
    const j = (e.jump ?? e.goto) as { target?: unknown } | undefined;
    if (j !== undefined && typeof j.target === 'string') return j.target;
  }
  return undefined;
}

/** The chain a chainKey() names (the name is the rest: nft allows spaces in quoted names). */
export function chainOfKey(key: string): ChainRef {
  const [family, table, ...name] = key.split(' ');
  return { family: family as ChainFamily, table: table ?? '', name: name.join(' ') };
}

/** Every rule read, with its chain. */
export function* rulesWithChains(rs: ForwardRuleset): Generator<{ chain: ChainRef; rule: Rule }> {
  for (const [key, rules] of rs.rules) {
    const chain = chainOfKey(key);
    for (const rule of rules) yield { chain, rule };
  }
}
