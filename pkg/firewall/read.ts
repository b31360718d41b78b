/**
 * Reads the forward-hook part of the host's ruleset through the nft command: `nft -j list chains`
 * (hooks and policies only, small even beside kube-proxy's thousands of rules), then the rules of each
 * forward base chain and of the chains they certainly jump to, one `nft -j list chain` each, at most
 * MAX_CHAINS of them. Chains that vanish meanwhile are left out (their walk is undecided). Where the
 * kernel holds a legacy iptables filter table (x_tables, which nft cannot list), its FORWARD chain is
 * read too, through `iptables-legacy-save` (iptables-save.ts). With VXLAN packets to judge
 * (vxlan-input.ts), the input hook's chains are read the same way.
 */
import { deleteCommand, type FirewallCommand, ownAccepts } from './accept.ts';
import { packetKinds, ruleMatches, ruleMatchesWith } from './forward-analysis.ts';
import { parseIptablesSave } from './iptables-save.ts';
import {
  type ChainRef,
  chainKey,
  type ForwardRuleset,
  jumpTarget,
  type LegacyFamily,
  parseChainRules,
  parseForwardBaseChains,
  parseRulesetRules,
  type Rule,
  rulesWithChains,
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

/** The nft reader's ruleset and the legacy tables' in one: their chains' keys never collide. */
async function withLegacy(
  rs: ForwardRuleset,
  legacy: LegacyIptables | undefined,
  input = false,
): Promise<ForwardRuleset> {
  for (const family of legacy?.tables() ?? []) {
    const more = parseIptablesSave(await legacy!.save(family), family === 'iptables-legacy' ? 4 : 6, input);
    rs.baseChains.push(...more.baseChains);
    for (const [key, rules] of more.rules) rs.rules.set(key, rules);
  }
  return rs;
}

const MAX_CHAINS = 32;

export async function readForwardRuleset(
  run: NftRun,
  podCIDRs: readonly string[],
  ownTable: string,
  legacy?: LegacyIptables,
  vxlan: readonly VxlanInKind[] = [],
): Promise<ForwardRuleset> {
  const input = vxlan.length > 0;
  const baseChains = parseForwardBaseChains(await run(['-j', 'list', 'chains']), ownTable, input);
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
  return withLegacy({ baseChains, rules }, legacy, input);
}

/**
 * `uninstall`: deletes every accept rule the agent inserted into other programs' chains (found by
 * comment in one `nft -j list ruleset`, and in the legacy filter tables); resolves with how many.
 */
export async function deleteOwnAccepts(
  run: (cmd: FirewallCommand) => Promise<string>,
  legacy?: LegacyIptables,
): Promise<number> {
  const nft = ownAccepts(parseRulesetRules(await run({ tool: 'nft', args: ['-j', 'list', 'ruleset'] })));
  const old = ownAccepts(rulesWithChains(await withLegacy({ baseChains: [], rules: new Map() }, legacy)));
  const accepts = [...nft, ...old];
  for (const at of accepts) await run(deleteCommand(at));
  return accepts.length;
}
