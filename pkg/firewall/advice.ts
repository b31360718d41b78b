/** What an operator runs to let pods through a chain that drops them (doctor and the agent's log). */
import type { ForwardBlock } from './forward-analysis.ts';

/**
 * iptables-nft's tables (`ip filter`, `ip6 filter`) take iptables commands, which keep them readable
 * by iptables; any other table takes an nft rule inserted at the top of the chain.
 */
export function acceptCommand(block: ForwardBlock): string {
  if (block.targeted === true && block.rule !== undefined) {
    const { chain, handle } = block.rule;
    return `the rule names the pods' addresses or veths; if they should pass, delete it: nft delete rule ${chain.family} ${chain.table} ${chain.name} handle ${handle}`;
  }
  const [family, table, chain] = block.chain.split(' ') as [string, string, string];
  const from = block.direction === 'from-pods';
  if ((family === 'ip' || family === 'ip6') && table === 'filter') {
    const tool = family === 'ip' ? 'iptables' : 'ip6tables';
    return `${tool} -I ${chain} ${from ? '-s' : '-d'} ${block.podCIDR} -j ACCEPT`;
  }
  const addr = block.family === 4 ? 'ip' : 'ip6';
  return `nft insert rule ${family} ${table} ${chain} ${addr} ${from ? 'saddr' : 'daddr'} ${block.podCIDR} accept`;
}

/** One line per block, for a log field or a doctor finding. */
export function describeBlock(block: ForwardBlock): string {
  const what =
    block.direction === 'from-pods' ? `from pods (${block.podCIDR})` : `to pods (${block.podCIDR})`;
  return `${block.chain} drops IPv${block.family} packets ${what}: ${block.by}`;
}

export const DOCKER_NOTE =
  'on a Docker host insert into DOCKER-USER instead of FORWARD (Docker rewrites FORWARD when it restarts); make the rule permanent where the firewall keeps its rules (iptables-persistent, firewalld --permanent, ufw before.rules)';
