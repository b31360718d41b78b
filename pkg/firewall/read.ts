/**
 * Reads the forward-hook part of the host's ruleset through the nft command: `nft -j list chains`
 * (hooks and policies only, small even beside kube-proxy's thousands of rules), then the rules of each
 * forward base chain and of the chains they certainly jump to, one `nft -j list chain` each, at most
 * MAX_CHAINS of them. Chains that vanish meanwhile are left out (their walk is undecided). Where the
 * kernel holds a legacy iptables filter table (x_tables, which nft cannot list), its FORWARD chain is
 * read too, through `iptables-legacy-save` (iptables-save.ts). With VXLAN packets to judge
 * (vxlan-input.ts), the input hook's chains are read the same way.
 */
import { errorText } from '../error-text.ts';
import { acceptTarget, deleteCommand, type FirewallCommand, ownAccepts, type RuleAt } from './accept.ts';
import { packetKinds, ruleMatches, ruleMatchesWith, verdictOf } from './forward-analysis.ts';
import { parseIptablesSave } from './iptables-save.ts';
import {
  type ChainRef,
  chainKey,
  describeUnread,
  type ForwardRuleset,
  jumpTarget,
  LEGACY_LIST_UNREADABLE,
  type LegacyFamily,
  parseChainRules,
  parseForwardBaseChains,
  parseRulesetRules,
  parseTableFlags,
  parseTableFlagsText,
  type Rule,
  rulesWithChains,
  tableKey,
  type UnreadTable,
} from './ruleset.ts';
import { type VxlanInKind, vxlanJudge } from './vxlan-input.ts';

/** Runs nft with these arguments and resolves with its stdout (NftRunner.run). */
export type NftRun = (args: string[]) => Promise<string>;

/** Legacy iptables, where the host has it: which filter tables exist, and their save output. */
export interface LegacyIptables {
  /** The families whose legacy filter table exists (/proc/net/ip_tables_names, ip6_tables_names). */
  tables: () => LegacyFamily[];
  /** `iptables-legacy-save -t filter` (or ip6tables-legacy-save)'s output. */
  save: (family: LegacyFamily) => Promise<string>;
}

/**
 * The nft reader's ruleset and the legacy tables' in one: their chains' keys never collide. A legacy
 * table that cannot be read (its save tool missing or failing) is named in `unread` and the rest is
 * read all the same: one unreadable table must not hide what the others drop.
 */
async function withLegacy(
  rs: ForwardRuleset,
  legacy: LegacyIptables | undefined,
  input = false,
): Promise<ForwardRuleset> {
  if (legacy === undefined) return rs;
  let families: LegacyFamily[];
  try {
    families = legacy.tables();
  } catch (err) {
    // Which tables exist is unknown: either may, and neither could be read.
    const error = `${LEGACY_LIST_UNREADABLE}${errorText(err)}`;
    return { ...rs, unread: LEGACY_FAMILIES.map((family) => ({ family, error })) };
  }
  const unread: UnreadTable[] = [];
  for (const family of families) {
    let more: ReturnType<typeof parseIptablesSave>;
    try {
      more = parseIptablesSave(await legacy.save(family), family === 'iptables-legacy' ? 4 : 6, input);
    } catch (err) {
      unread.push({ family, error: errorText(err) });
      continue;
    }
    rs.baseChains.push(...more.baseChains);
    for (const [key, rules] of more.rules) rs.rules.set(key, rules);
  }
  return unread.length === 0 ? rs : { ...rs, unread };
}

const MAX_CHAINS = 32;

const LEGACY_FAMILIES: readonly LegacyFamily[] = ['iptables-legacy', 'ip6tables-legacy'];

/** What the reader may ask besides nft. */
export interface ReadOptions {
  legacy?: LegacyIptables;
  /** The VXLAN packets to judge too: the input hook's chains are read as well. */
  vxlan?: readonly VxlanInKind[];
  /**
   * `iptables-nft-save -t filter` (ip6tables-nft-save for 6): what iptables-nft's extensions in its
   * tables match, which nft shows only by name (refineXt).
   */
  iptablesNftSave?: (family: 4 | 6) => Promise<string>;
}

export async function readForwardRuleset(
  run: NftRun,
  podCIDRs: readonly string[],
  ownTable: string,
  opts: ReadOptions = {},
): Promise<ForwardRuleset> {
  const { legacy, vxlan = [] } = opts;
  // Read once per family and read: the refinement and the comments both want it.
  const iptablesNftSave = opts.iptablesNftSave === undefined ? undefined : onceEach(opts.iptablesNftSave);
  const input = vxlan.length > 0;
  const baseChains = parseForwardBaseChains(await run(['-j', 'list', 'chains']), ownTable, input);
  const owned = await ownedTables(run, new Set(baseChains.map(tableKey)));
  for (const c of baseChains) if (owned.has(tableKey(c))) c.owned = true;
  const kinds = packetKinds(podCIDRs);
  const judges = vxlan.map(vxlanJudge);
  const rules = new Map<string, Rule[]>();
  const queue: ChainRef[] = baseChains.map(({ family, table, name }) => ({ family, table, name }));
  const queued = new Set(queue.map(chainKey));
  while (queue.length > 0 && rules.size < MAX_CHAINS) {
    const chain = queue.shift()!;
    let list: Rule[];
    try {
      list = parseChainRules(
        await run(['-j', 'list', 'chain', chain.family, chain.table, chain.name]),
        chain,
      );
    } catch {
      continue;
    }
    rules.set(chainKey(chain), list);
    for (const rule of list) {
      const target = jumpTarget(rule);
      if (target === undefined) continue;
      const next = { ...chain, name: target };
      if (queued.has(chainKey(next))) continue;
      // Only jumps the walk will take: one whose matches it cannot judge is passed over anyway.
      const taken =
        kinds.some((k) => ruleMatches(rule, k) === 'always') ||
        judges.some((j) => ruleMatchesWith(rule, j) === 'always');
      if (!taken) continue;
      queued.add(chainKey(next));
      queue.push(next);
    }
  }
  // Comments first, while nft's expressions still show which rules carry one as an xt match.
  if (iptablesNftSave !== undefined) await recoverXtComments(rules, iptablesNftSave);
  const rs = await withLegacy({ baseChains, rules }, legacy, input);
  // The input walk, strict, would be undecided at every `-m conntrack` iptables-nft writes: it gets
  // the refinement, in a copy. The forward walk keeps nft's view: what it cannot judge it passes over,
  // while iptables-nft-save prints `ip saddr @blocklist drop` as a bare `-j DROP`.
  if (input && iptablesNftSave !== undefined) {
    const refined = new Map(rs.rules);
    await refineXt(refined, iptablesNftSave);
    rs.inputRules = refined;
  }
  return rs;
}

/**
 * Which of `tables` ("inet firewalld") carry nftables' owner flag: `nft -j list tables`, and for a
 * table whose lone flag nft's JSON may misprint (parseTableFlags), its terse text listing. A table
 * that cannot be read so is taken as not owned (a write into it then fails as it always could).
 */
async function ownedTables(run: NftRun, tables: ReadonlySet<string>): Promise<Set<string>> {
  const owned = new Set<string>();
  if (tables.size === 0) return owned;
  let flags: ReturnType<typeof parseTableFlags>;
  try {
    flags = parseTableFlags(await run(['-j', 'list', 'tables']));
  } catch {
    return owned;
  }
  for (const t of flags.owned) if (tables.has(t)) owned.add(t);
  for (const t of flags.unsure) {
    if (!tables.has(t)) continue;
    const family = t.slice(0, t.indexOf(' '));
    const name = t.slice(family.length + 1);
    try {
      if (parseTableFlagsText(await run(['-t', 'list', 'table', family, name])).includes('owner'))
        owned.add(t);
    } catch {
      // gone meanwhile, or unreadable: not known to be owned
    }
  }
  return owned;
}

/** The rule ends in a plain accept. */
function isAccept(rule: Rule): boolean {
  return rule.expr.some((e) => 'accept' in e);
}

/** A rule whose comment iptables-nft wrote as an xt match: nft -j shows the match, not the text. */
function hasXtComment(rule: Rule): boolean {
  return (
    rule.comment === undefined &&
    rule.expr.some((e) => (e.xt as { name?: unknown } | undefined)?.name === 'comment')
  );
}

/**
 * iptables-nft-restore (netfilter-persistent at boot, after a save) writes back our accepts with their
 * comment as an xt match, which `nft -j` shows without its text: unrecognised, they would outlive a
 * pod CIDR change and `uninstall`. Their texts are read from `iptables-nft-save` (withSavedRules).
 */
export async function recoverXtComments(
  rules: Map<string, Rule[]>,
  save: (family: 4 | 6) => Promise<string>,
): Promise<void> {
  await withSavedRules(rules, save, hasXtComment, (list, translated) =>
    list.map((r, i) => {
      // By position, so only where both reads show the same accept of the same prefix: a chain
      // edited between the reads (same count, rules moved) must not lend our comment to another
      // program's rule, which the agent or uninstall would then delete.
      const saved = translated[i]!;
      const target = acceptTarget(r);
      const same = target !== undefined && target === acceptTarget(saved) && isAccept(r) && isAccept(saved);
      return hasXtComment(r) && same && saved.comment !== undefined ? { ...r, comment: saved.comment } : r;
    }),
  );
}

/** An xt match other than `-m comment`: nft shows its name and not what it matches. */
function hasOpaqueMatch(rule: Rule): boolean {
  return rule.expr.some((e) => {
    const xt = e.xt as { type?: unknown; name?: unknown } | undefined;
    return xt?.type === 'match' && xt.name !== 'comment';
  });
}

/**
 * iptables-nft stores what nft has no native form for (`-m conntrack --ctstate`, `-m addrtype`) as an
 * xt extension, which `nft -j` shows by name only: those rules take their expressions as
 * `iptables-nft-save` prints them, translated (iptables-save.ts). Only those, and only where both
 * reads give the rule the same verdict: the other rules keep nft's view, which is exact where the
 * save's may not be (a set match it cannot print), and a chain edited between the two reads must not
 * lend one rule another's matches.
 */
async function refineXt(rules: Map<string, Rule[]>, save: (family: 4 | 6) => Promise<string>): Promise<void> {
  await withSavedRules(rules, save, hasOpaqueMatch, (list, translated) =>
    list.map((r, i) => {
      const saved = translated[i]!;
      return hasOpaqueMatch(r) && verdictOf(saved) === verdictOf(r) ? { ...r, expr: saved.expr } : r;
    }),
  );
}

/**
 * For each `ip filter` and `ip6 filter` chain with a rule that `wanted` picks, its rules as
 * `iptables-nft-save` prints them (read once per family), handed to `merge` with nft's to make the
 * chain's list. A chain whose rule count differs (changed between the two reads) keeps nft's view.
 */
async function withSavedRules(
  rules: Map<string, Rule[]>,
  save: (family: 4 | 6) => Promise<string>,
  wanted: (rule: Rule) => boolean,
  merge: (list: Rule[], translated: Rule[]) => Rule[],
): Promise<void> {
  for (const [family, nftFamily] of [
    [4, 'ip'],
    [6, 'ip6'],
  ] as const) {
    const chains = [...rules].filter(
      ([key, list]) => key.startsWith(`${nftFamily} filter `) && list.some(wanted),
    );
    if (chains.length === 0) continue;
    let saved: ForwardRuleset;
    try {
      saved = parseIptablesSave(await save(family), family);
    } catch {
      continue; // no iptables-nft here, or a table it cannot print: nft's view stays
    }
    // The save format is legacy's: the parser names the chains so; only their rules are taken.
    const tool = family === 4 ? 'iptables-legacy' : 'ip6tables-legacy';
    for (const [key, list] of chains) {
      const translated = saved.rules.get(`${tool} filter ${key.slice(`${nftFamily} filter `.length)}`);
      if (translated === undefined || translated.length !== list.length) continue;
      rules.set(key, merge(list, translated));
    }
  }
}

/**
 * `uninstall`: deletes every accept rule the agent inserted into other programs' chains (found by
 * comment in one `nft -j list ruleset`, those iptables-nft wrote back with their comment as an xt
 * match through `iptables-nft-save`, and in the legacy filter tables); resolves with how many.
 */
export async function deleteOwnAccepts(
  run: (cmd: FirewallCommand) => Promise<string>,
  legacy?: LegacyIptables,
  iptablesNftSave?: (family: 4 | 6) => Promise<string>,
): Promise<number> {
  let deleted = 0;
  /** Per accept, by what it is (its handle may change): the failures of its deletes. */
  const failed = new Map<string, string[]>();
  let readFailures: string[] = [];
  let untried = 0;
  // A failed delete may mean the firewall was reloaded meanwhile (a table re-created numbers its
  // rules from 1 again): the handles listed before may now name its own rules. So after a failure
  // the accepts are listed again, by their comment, and only those deleted. One that failed twice,
  // in two listings, is left out of the later rounds: it cannot keep the ones after it in place.
  for (let round = 0; round < MAX_DELETE_ROUNDS; round++) {
    const listed = await listOwnAccepts(run, legacy, iptablesNftSave);
    readFailures = listed.failures;
    // By what it is: chain, what it lets through (from the pods or to them), and which of identical
    // ones (a duplicate an earlier run left) it is.
    const seen = new Map<string, number>();
    const ids = listed.accepts.map((at) => {
      const base = `${chainKey(at.chain)} ${at.target ?? at.spec?.join(' ') ?? at.handle}`;
      const n = (seen.get(base) ?? 0) + 1;
      seen.set(base, n);
      return n === 1 ? base : `${base} #${n}`;
    });
    // One whose delete failed and that is not listed now went some other way: nothing left of it.
    const now = new Set(ids);
    for (const gone of [...failed.keys()].filter((k) => !now.has(k))) failed.delete(gone);
    let again = false;
    untried = 0;
    for (const [i, at] of listed.accepts.entries()) {
      const key = ids[i]!;
      const before = failed.get(key) ?? [];
      if (before.length >= 2) continue;
      try {
        await run(deleteCommand(at));
        deleted++;
        failed.delete(key);
      } catch (err) {
        failed.set(key, [...before, errorText(err)]);
        again = true;
        untried = listed.accepts.length - i - 1;
        break;
      }
    }
    if (!again) {
      untried = 0;
      break;
    }
  }
  const left = [...failed].map(([id, errors]) => `${id}: ${errors.at(-1)}`);
  // Rounds used up with accepts still to try (many failing ones ahead of them): said, not hidden.
  const failures = [...left, ...readFailures, ...(untried > 0 ? [`${untried} more not tried`] : [])];
  if (failures.length > 0) {
    throw new Error(`deleted ${deleted} accepts; what is left could not be: ${failures.join('; ')}`);
  }
  return deleted;
}

/** How many times uninstall lists the accepts again after a failed delete. */
const MAX_DELETE_ROUNDS = 12;

/** Our accepts as listed now (nft's, iptables-nft's written back, legacy's), and what could not be read. */
async function listOwnAccepts(
  run: (cmd: FirewallCommand) => Promise<string>,
  legacy: LegacyIptables | undefined,
  iptablesNftSave: ((family: 4 | 6) => Promise<string>) | undefined,
): Promise<{ accepts: RuleAt[]; failures: string[] }> {
  const listed = parseRulesetRules(await run({ tool: 'nft', args: ['-j', 'list', 'ruleset'] }));
  const byChain = new Map<string, Rule[]>();
  const chains = new Map<string, ChainRef>();
  for (const { chain, rule } of listed) {
    const key = chainKey(chain);
    chains.set(key, chain);
    const list = byChain.get(key);
    if (list === undefined) byChain.set(key, [rule]);
    else list.push(rule);
  }
  if (iptablesNftSave !== undefined) await recoverXtComments(byChain, iptablesNftSave);
  const nft = ownAccepts(
    [...byChain].flatMap(([key, list]) => list.map((rule) => ({ chain: chains.get(key)!, rule }))),
  );
  // A legacy table failing to read must not keep the nft side's accepts, or another table's, in place.
  const rs = await withLegacy({ baseChains: [], rules: new Map() }, legacy);
  const failures = (rs.unread ?? []).map((t) => `reading ${describeUnread(t)}`);
  return { accepts: [...nft, ...ownAccepts(rulesWithChains(rs))], failures };
}

/** `save`, called at most once per family (its later calls share the first one's answer). */
function onceEach(save: (family: 4 | 6) => Promise<string>): (family: 4 | 6) => Promise<string> {
  const answers = new Map<4 | 6, Promise<string>>();
  return (family) => {
    let answer = answers.get(family);
    if (answer === undefined) {
      answer = save(family);
      answers.set(family, answer);
    }
    return answer;
  };
}
