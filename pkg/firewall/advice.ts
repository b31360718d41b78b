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
  if (block.targeted === true && block.rule !== undefined) {
    return `the rule names the pods' addresses or veths; if they should pass, delete it: ${commandText(deleteCommand(block.rule))}`;
  }
  const from = block.direction === 'from-pods';
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

/** One line per block, for a log field or a doctor finding. */
export function describeBlock(block: ForwardBlock): string {
  const what =
    block.direction === 'from-pods' ? `from pods (${block.podCIDR})` : `to pods (${block.podCIDR})`;
  return `${block.chain} drops IPv${block.family} packets ${what}: ${block.by}`;
}

export const DOCKER_NOTE =
  'on a Docker host insert into DOCKER-USER instead of FORWARD (Docker rewrites FORWARD when it restarts); make the rule permanent where the firewall keeps its rules (iptables-persistent, firewalld --permanent, ufw before.rules)';
