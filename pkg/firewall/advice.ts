/** What an operator runs to let pods through a chain that drops them (doctor and the agent's log). */
import { commandText, deleteCommand } from './accept.ts';
import type { ForwardBlock } from './forward-analysis.ts';
import { chainOfKey, isLegacy } from './ruleset.ts';

/**
 * A rule that names the pods is the operator's: the fix is deleting it, if they should pass. Otherwise
 * an accept at the top of the chain: iptables-nft's tables (`ip filter`, `ip6 filter`) take iptables
 * commands, which keep them readable by iptables; legacy iptables' tables take iptables-legacy (ip6tables-legacy) commands;
 * any other table takes an nft rule.
 */
export function fixCommand(block: ForwardBlock): string {
  const from = block.direction === 'from-pods';
  if (block.owned === true) {
    const field = from ? 'source' : 'destination';
    const rich = `rule family="ipv${block.family}" ${field} address="${block.podCIDR}" accept`;
    return ownedTableFix(
      block.chain,
      `once, a policy for forwarded traffic: firewall-cmd --permanent --new-policy ${FIREWALLD_POLICY} && firewall-cmd --permanent --policy ${FIREWALLD_POLICY} --add-ingress-zone ANY && firewall-cmd --permanent --policy ${FIREWALLD_POLICY} --add-egress-zone ANY; then firewall-cmd --permanent --policy ${FIREWALLD_POLICY} --add-rich-rule='${rich}' && firewall-cmd --reload`,
      `IPv${block.family} packets ${from ? 'from' : 'to'} ${block.podCIDR}`,
    );
  }
  if (block.targeted === true && block.rule !== undefined) {
    return `the rule names the pods' addresses or veths; if they should pass, delete it: ${commandText(deleteCommand(block.rule))}`;
  }
  const addr = block.family === 4 ? 'ip' : 'ip6';
  return acceptAtTop(
    block.chain,
    `${from ? '-s' : '-d'} ${block.podCIDR}`,
    `${addr} ${from ? 'saddr' : 'daddr'} ${block.podCIDR}`,
  );
}

/**
 * The command that accepts what `iptablesMatch` (or, in an nft table, `nftMatch`) matches at the top
 * of `chain` (a chainKey): iptables (ip6tables, or their -legacy) for the tables iptables keeps, so
 * they stay readable by it; nft for any other table.
 */
export function acceptAtTop(chain: string, iptablesMatch: string, nftMatch: string): string {
  const { family, table, name } = chainOfKey(chain);
  if (isLegacy(family)) return `${family} -I ${name} ${iptablesMatch} -j ACCEPT`;
  if ((family === 'ip' || family === 'ip6') && table === 'filter') {
    return `${family === 'ip' ? 'iptables' : 'ip6tables'} -I ${name} ${iptablesMatch} -j ACCEPT`;
  }
  return `nft insert rule ${family} ${table} ${name} ${nftMatch} accept`;
}

/** The firewalld policy the advice for firewalld's owned table creates (ANY zone to ANY zone: forwarded packets only). */
export const FIREWALLD_POLICY = 'trellis-pods';

/**
 * The advice for a chain in a table another process owns (nftables' owner flag), which no `nft` or
 * `iptables` command of anyone else may change: firewalld's (`inet firewalld`, firewalld 2.2+ with
 * NftablesTableOwner=yes, its default) takes `firewall-cmd --permanent` (which keeps the change
 * across its reloads); any other owner's, its own configuration, for `what`.
 */
export function ownedTableFix(chain: string, firewalld: string, what: string): string {
  const { family, table } = chainOfKey(chain);
  const owned = `${family} ${table} is owned by the process that created it (nftables' owner flag): the kernel refuses changes to it from anyone else, trellis included`;
  if (family === 'inet' && table === 'firewalld')
    return `${owned}; accept the pods in firewalld itself: ${firewalld}`;
  return `${owned}; accept ${what} through that program's own configuration`;
}

/** One line per block, for a log field or a doctor finding. */
export function describeBlock(block: ForwardBlock): string {
  const what =
    block.direction === 'from-pods' ? `from pods (${block.podCIDR})` : `to pods (${block.podCIDR})`;
  return `${block.chain} drops IPv${block.family} packets ${what}: ${block.by}`;
}

export const DOCKER_NOTE =
  'on a Docker host insert into DOCKER-USER instead of FORWARD (Docker rewrites FORWARD when it restarts); make the rule permanent where the firewall keeps its rules (iptables-persistent, firewalld --permanent, ufw before.rules)';
