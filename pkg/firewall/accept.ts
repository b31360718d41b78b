/**
 * The rules trellis inserts into another program's forward chain when that chain drops its pods'
 * traffic by default (flannel's and Calico's answer to Docker's FORWARD policy DROP): one accept per
 * blocked (prefix, direction), matching the cluster's pod network (pod-network.ts: every node's pod
 * CIDRs under one prefix, or this node's own), placed right before the
 * catch-all rule that drops (or at the end of a chain whose policy drops), so the operator's earlier
 * rules (DOCKER-USER's among them) still come first. A drop that names the pods is never lifted, nor
 * a policy reached through a goto or return (no place there is both reached and after the operator's
 * rules). Each carries ACCEPT_COMMENT, by which the agent finds them again (planAccepts: never a
 * second in one place), drops those of a prefix no longer wanted, and `uninstall` removes
 * them. Pure: commands out (nft's argv, or legacy iptables' for a chain nft cannot see).
 */
import { canonicalCidr } from '../ip/index.ts';
import type { ForwardBlock } from './forward-analysis.ts';
import {
  type ChainRef,
  chainKey,
  chainOfKey,
  type ForwardRuleset,
  isLegacy,
  type LegacyFamily,
  type Rule,
} from './ruleset.ts';

/** A program that edits the host's firewall, and its arguments (never a shell). */
export interface FirewallCommand {
  tool: 'nft' | LegacyFamily;
  args: string[];
}

/** Legacy iptables waits up to 5 s for the xtables lock other iptables users hold (kube-proxy's). */
const XT_WAIT = ['-w', '5'];

export const ACCEPT_COMMENT = 'trellis: pod traffic';
/**
 * The comment of earlier versions (which accepted this node's pod CIDRs only): still ours, so an
 * upgrade replaces those rules and `uninstall` removes them.
 */
const OLD_ACCEPT_COMMENTS: readonly string[] = ['trellis: the pods of this node'];

/** The rule is one of our accepts, by its comment (this version's or an earlier one's). */
export function isOwnAccept(rule: Rule): boolean {
  return rule.comment === ACCEPT_COMMENT || OLD_ACCEPT_COMMENTS.includes(rule.comment ?? '');
}

/**
 * The command for the rule that lets `block`'s packets through: nft's argv (it joins and parses
 * them), or for legacy iptables `-I CHAIN N` (before rule N) or `-A CHAIN` (the policy drops).
 */
export function acceptCommand(block: ForwardBlock): FirewallCommand {
  const chain = acceptChain(block);
  const from = block.direction === 'from-pods';
  const before = block.rule;
  if (isLegacy(chain.family)) {
    const where = before === undefined ? ['-A', chain.name] : ['-I', chain.name, String(before.handle)];
    return {
      tool: chain.family,
      args: [
        ...XT_WAIT,
        ...where,
        from ? '-s' : '-d',
        block.podCIDR,
        '-m',
        'comment',
        '--comment',
        ACCEPT_COMMENT,
        '-j',
        'ACCEPT',
      ],
    };
  }
  const where =
    before === undefined
      ? ['add', 'rule', ...chainArgs(chain)]
      : ['insert', 'rule', ...chainArgs(chain), 'position', String(before.handle)];
  const addr = block.family === 4 ? 'ip' : 'ip6';
  const field = from ? 'saddr' : 'daddr';
  return {
    tool: 'nft',
    args: [...where, addr, field, block.podCIDR, 'counter', 'accept', 'comment', `"${ACCEPT_COMMENT}"`],
  };
}

/**
 * The rules for the blocks trellis may lift: one per (where it goes, family, direction, pod CIDR); a
 * rule that names the pods (`targeted`) is the operator's, and is left alone.
 */
export function distinctAccepts(blocks: readonly ForwardBlock[]): FirewallCommand[] {
  const seen = new Map<string, FirewallCommand>();
  // Later rules first: a legacy insert shifts the positions of the rules after it, never before.
  const at = (b: ForwardBlock): number => b.rule?.handle ?? 0;
  const ordered = [...blocks].sort((a, b) => at(b) - at(a));
  for (const b of ordered) {
    if (b.targeted === true || b.owned === true) continue;
    const cmd = acceptCommand(b);
    seen.set(commandText(cmd), cmd);
  }
  return [...seen.values()];
}

/** The chain an accept for `block` goes into: the dropping rule's, or the base chain's. */
function acceptChain(block: ForwardBlock): ChainRef {
  return block.rule?.chain ?? chainOfKey(block.chain);
}

/** What each block still dropping needs, given the accepts of ours already in the chains. */
export interface AcceptPlan {
  /** Blocks with no accept of ours for them yet: insert one. */
  insert: ForwardBlock[];
  /**
   * Accepts of ours after the rule they must precede (the firewall gained a drop, a goto or a return
   * above them since): delete them; their blocks are in `insert` again, to go in the right place.
   */
  misplaced: RuleAt[];
  /**
   * Blocks an accept of ours already precedes the rule for, and the packets are dropped all the same:
   * another accept would not be reached either. Reported, never inserted again (the checks that follow
   * every change of the table would stack them up without end).
   */
  ineffective: ForwardBlock[];
  /**
   * Policy drops reached through a goto or return (ForwardBlock.exit): no place for an accept that is
   * reached and still comes after the operator's rules. Reported with where to accept them instead.
   */
  unanswerable: ForwardBlock[];
  /**
   * Blocks in a table another process owns (ForwardBlock.owned: firewalld 2.2+'s): the kernel refuses
   * an insert there (EPERM). Reported with the owner's own way to let the pods through.
   */
  owned: ForwardBlock[];
}

/**
 * Sorts the blocks (the operator's targeted drops left out) by the accepts of ours already in the
 * chain the accept goes into, for the same direction and pod CIDR: none, one that sits after the rule
 * it must precede (misplaced), or one in place that does not help (ineffective); those in a table
 * another process owns, and policy drops after a goto or return, apart.
 */
export function planAccepts(rs: ForwardRuleset, blocks: readonly ForwardBlock[]): AcceptPlan {
  const plan: AcceptPlan = { insert: [], misplaced: [], ineffective: [], unanswerable: [], owned: [] };
  for (const b of blocks) {
    if (b.targeted === true) continue;
    if (b.owned === true) {
      plan.owned.push(b);
      continue;
    }
    if (b.exit !== undefined) {
      plan.unanswerable.push(b);
      continue;
    }
    const chain = acceptChain(b);
    const rules = rs.rules.get(chainKey(chain)) ?? [];
    const field = b.direction === 'from-pods' ? 'saddr' : 'daddr';
    const cidr = canonicalCidr(b.podCIDR) ?? b.podCIDR;
    const mine = rules
      .map((rule, index) => ({ rule, index }))
      .filter(({ rule }) => isOwnAccept(rule) && acceptTarget(rule) === `${field} ${cidr}`);
    if (mine.length === 0) {
      plan.insert.push(b);
      continue;
    }
    const target = b.rule;
    const targetIndex = target === undefined ? -1 : rules.findIndex((r) => r.handle === target.handle);
    // Only when every one of ours is late: deleting legacy rules by their options removes the first
    // that matches, which could be an earlier one of ours.
    if (targetIndex < 0 || mine.some(({ index }) => index < targetIndex)) {
      plan.ineffective.push(b);
      continue;
    }
    for (const { rule } of mine) {
      plan.misplaced.push({
        chain,
        handle: rule.handle,
        ...(rule.spec === undefined ? {} : { spec: rule.spec }),
      });
    }
    plan.insert.push(b);
  }
  return plan;
}

/** "saddr 10.244.1.0/24": the address field and prefix an accept of ours matches, read back. */
export function acceptTarget(rule: Rule): string | undefined {
  for (const e of rule.expr) {
    const m = e.match as { left?: { payload?: { field?: unknown } }; right?: unknown } | undefined;
    const field = m?.left?.payload?.field;
    const prefix = acceptedPrefixOf(m?.right);
    if (typeof field === 'string' && prefix !== undefined)
      return `${field} ${canonicalCidr(prefix) ?? prefix}`;
  }
  return undefined;
}

function acceptedPrefixOf(right: unknown): string | undefined {
  const p = (right as { prefix?: { addr?: unknown; len?: unknown } } | undefined)?.prefix;
  return p !== undefined && typeof p.addr === 'string' && typeof p.len === 'number'
    ? `${p.addr}/${p.len}`
    : undefined;
}

/** The prefix an accept rule of ours matches ("10.244.1.0/24"), read back from its expressions. */
function acceptedPrefix(rule: Rule): string | undefined {
  for (const e of rule.expr) {
    const prefix = acceptedPrefixOf((e.match as { right?: unknown } | undefined)?.right);
    if (prefix !== undefined) return prefix;
  }
  return undefined;
}

/** Our accept rules (by comment) among `rules`; `keep` tells those still wanted by their prefix. */
export function ownAccepts(
  rules: Iterable<{ chain: ChainRef; rule: Rule }>,
  keep: (prefix: string | undefined) => boolean = () => false,
): RuleAt[] {
  const out: RuleAt[] = [];
  for (const { chain, rule } of rules) {
    if (!isOwnAccept(rule) || keep(acceptedPrefix(rule))) continue;
    const target = acceptTarget(rule);
    out.push({
      chain,
      handle: rule.handle,
      ...(rule.spec === undefined ? {} : { spec: rule.spec }),
      ...(target === undefined ? {} : { target }),
    });
  }
  return out;
}

/** A rule in a chain: nft's handle, or legacy iptables' position and its options as saved. */
export interface RuleAt {
  chain: ChainRef;
  handle: number;
  spec?: readonly string[];
  /** What an accept of ours lets through ("saddr 10.244.0.0/16"), where ownAccepts found it. */
  target?: string;
}

/**
 * The command that deletes one rule: nft's by its handle; legacy iptables' by what the rule is
 * (`-D CHAIN spec`), as a position may have moved since the chain was read.
 */
export function deleteCommand(at: RuleAt): FirewallCommand {
  if (isLegacy(at.chain.family)) {
    const where = at.spec === undefined ? [String(at.handle)] : at.spec;
    return { tool: at.chain.family, args: [...XT_WAIT, '-D', at.chain.name, ...where] };
  }
  return { tool: 'nft', args: ['delete', 'rule', ...chainArgs(at.chain), 'handle', String(at.handle)] };
}

function chainArgs(c: ChainRef): string[] {
  return [c.family, c.table, c.name];
}

/** "ip filter FORWARD handle 7" or "iptables-legacy filter FORWARD rule 3", for log lines. */
export function describeRule(at: RuleAt): string {
  return `${chainKey(at.chain)} ${isLegacy(at.chain.family) ? 'rule' : 'handle'} ${at.handle}`;
}

/**
 * A command as one line to read or paste: nft's words as nft joins them (its comment already
 * quoted); legacy iptables' quoted for a shell where they need it.
 */
export function commandText(c: FirewallCommand): string {
  const words = c.tool === 'nft' ? c.args : c.args.map(shellWord);
  return [c.tool, ...words].join(' ');
}

function shellWord(w: string): string {
  return /^[A-Za-z0-9_./:,=+@%-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`;
}
