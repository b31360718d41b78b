/**
 * The rules trellis inserts into another program's forward chain when that chain drops its pods'
 * traffic by default (flannel's and Calico's answer to Docker's FORWARD policy DROP): one accept per
 * blocked (pod CIDR, direction), matching the node's own pod CIDR only, placed right before the
 * catch-all rule that drops (or at the end of a chain whose policy drops), so the operator's earlier
 * rules (DOCKER-USER's among them) still come first. A drop that names the pods is never lifted. Each carries ACCEPT_COMMENT, by which the agent finds them again to drop
 * those of a pod CIDR the node no longer has, and `uninstall` removes them. Pure: nft argv out.
 */
import type { ForwardBlock } from './forward-analysis.ts';
import { type ChainRef, chainKey, chainOfKey, type Rule } from './ruleset.ts';

export const ACCEPT_COMMENT = 'trellis: the pods of this node';

/** nft's argv (it joins and parses them) for the rule that lets `block`'s packets through. */
export function acceptArgs(block: ForwardBlock): string[] {
  const where =
    block.rule === undefined
      ? ['add', 'rule', ...chainArgs(chainOfKey(block.chain))]
      : ['insert', 'rule', ...chainArgs(block.rule.chain), 'position', String(block.rule.handle)];
  const addr = block.family === 4 ? 'ip' : 'ip6';
  const field = block.direction === 'from-pods' ? 'saddr' : 'daddr';
  return [...where, addr, field, block.podCIDR, 'counter', 'accept', 'comment', `"${ACCEPT_COMMENT}"`];
}

/**
 * The rules for the blocks trellis may lift: one per (where it goes, family, direction, pod CIDR); a
 * rule that names the pods (`targeted`) is the operator's, and is left alone.
 */
export function distinctAccepts(blocks: readonly ForwardBlock[]): string[][] {
  const seen = new Map<string, string[]>();
  for (const b of blocks) {
    if (b.targeted === true) continue;
    const args = acceptArgs(b);
    seen.set(args.join(' '), args);
  }
  return [...seen.values()];
}

/** The prefix an accept rule of ours matches ("10.244.1.0/24"), read back from its expressions. */
function acceptedPrefix(rule: Rule): string | undefined {
  for (const e of rule.expr) {
    const m = e.match as { right?: unknown } | undefined;
    const p = (m?.right as { prefix?: { addr?: unknown; len?: unknown } } | undefined)?.prefix;
    if (p !== undefined && typeof p.addr === 'string' && typeof p.len === 'number')
      return `${p.addr}/${p.len}`;
  }
  return undefined;
}

/** Our accept rules (by comment) among `rules`; `keep` tells those still wanted by their prefix. */
export function ownAccepts(
  rules: Iterable<{ chain: ChainRef; rule: Rule }>,
  keep: (prefix: string | undefined) => boolean = () => false,
): { chain: ChainRef; handle: number }[] {
  const out: { chain: ChainRef; handle: number }[] = [];
  for (const { chain, rule } of rules) {
    if (rule.comment !== ACCEPT_COMMENT || keep(acceptedPrefix(rule))) continue;
    out.push({ chain, handle: rule.handle });
  }
  return out;
}

export function deleteArgs(at: { chain: ChainRef; handle: number }): string[] {
  return ['delete', 'rule', ...chainArgs(at.chain), 'handle', String(at.handle)];
}

function chainArgs(c: ChainRef): string[] {
  return [c.family, c.table, c.name];
}

/** "ip filter FORWARD handle 7", for log lines. */
export function describeRule(at: { chain: ChainRef; handle: number }): string {
  return `${chainKey(at.chain)} handle ${at.handle}`;
}
