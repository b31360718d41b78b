/**
 * The host's legacy iptables, as read.ts asks for it. The kernel lists the x_tables tables that exist
 * in the reader's network namespace in /proc/net/ip_tables_names (ip6_tables_names); the files are
 * missing when the module was never loaded, and on hosts that use iptables-nft they hold no `filter`,
 * so there nothing is run. A plain file read each check; the save tool only where a table exists.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LegacyIptables } from './read.ts';
import type { LegacyFamily } from './ruleset.ts';

const NAMES: Readonly<Record<LegacyFamily, string>> = {
  'iptables-legacy': 'ip_tables_names',
  'ip6tables-legacy': 'ip6_tables_names',
};

/** Whether /proc/net's `file` lists a filter table; a file that is not there lists none. */
function listsFilter(procNet: string, file: string): boolean {
  let text: string;
  try {
    text = readFileSync(join(procNet, file), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return text.split('\n').includes('filter');
}

/** `run(tool, args)` resolves with the tool's stdout (an NftRunner for that binary). */
export function hostLegacyIptables(
  run: (tool: string, args: string[]) => Promise<string>,
  procNet = '/proc/net',
): LegacyIptables {
  return {
    tables: () => (Object.keys(NAMES) as LegacyFamily[]).filter((f) => listsFilter(procNet, NAMES[f])),
    save: (family) => run(`${family}-save`, ['-t', 'filter']),
  };
}
