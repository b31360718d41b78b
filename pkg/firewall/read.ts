/**
 * Reads the forward-hook part of the host's ruleset through the nft command: `nft -j list chains`
 * (hooks and policies only, small even beside kube-proxy's thousands of rules), then the rules of each
 * forward base chain and of the chains they certainly jump to, one `nft -j list chain` each, at most
 * MAX_CHAINS of them. Chains that vanish meanwhile are left out (their walk is undecided).
 */
import { deleteArgs, ownAccepts } from './accept.ts';
import { packetKinds, ruleMatches } from './forward-analysis.ts';
import {
  type ChainRef,
  chainKey,
  type ForwardRuleset,
  jumpTarget,
  parseChainRules,
  parseForwardBaseChains,
  parseRulesetRules,
  type Rule,
} from './ruleset.ts';

/** Runs nft with these arguments and resolves with its stdout (NftRunner.run). */
export type NftRun = (args: string[]) => Promise<string>;

const MAX_CHAINS = 32;

export async function readForwardRuleset(
  run: NftRun,
  podCIDRs: readonly string[],
  ownTable: string,
): Promise<ForwardRuleset> {
  const baseChains = parseForwardBaseChains(await run(['-j', 'list', 'chains']), ownTable);
  const kinds = packetKinds(podCIDRs);
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
      if (!kinds.some((k) => ruleMatches(rule, k) === 'always')) continue;
      queued.add(chainKey(next));
      queue.push(next);
    }
  }
  return { baseChains, rules };
}

/**
 * `uninstall`: deletes every accept rule the agent inserted into other programs' chains (found by
 * comment in one `nft -j list ruleset`); resolves with how many.
 */
export async function deleteOwnAccepts(run: NftRun): Promise<number> {
  const accepts = ownAccepts(parseRulesetRules(await run(['-j', 'list', 'ruleset'])));
  for (const at of accepts) await run(deleteArgs(at));
  return accepts.length;
}
