/**
 * The hostPort rules the chained `portmap` plugin made for trellis's pods, removed at uninstall.
 * portmap (containernetworking/plugins, iptables backend) gives each pod with host ports a chain
 * CNI-DN-<hash> of DNAT rules in the nat table, jumped to from CNI-HOSTPORT-DNAT by a rule commented
 * `dnat name: "<network>" id: "<container>"`, and removes them at the pod's DEL, which it finds by
 * the network's name. Once trellis is uninstalled the pods still running get their DEL under the next
 * network's name, so their rules would stay: the node's host ports would keep sending traffic to
 * addresses the next network may give to other pods. The shared chains (CNI-HOSTPORT-DNAT, -MASQ,
 * -SETMARK) and other networks' rules stay.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** One family and backend of iptables: the save and restore tools, and whether it waits for the xtables lock. */
interface Backend {
  save: string;
  restore: string;
  /** Legacy tools take the xtables lock (kube-proxy holds it): -w waits for it. */
  legacy: boolean;
  /** The /proc/net file that lists the legacy x_tables tables of this family. */
  procNames?: string;
}

const BACKENDS: readonly Backend[] = [
  { save: 'iptables-nft-save', restore: 'iptables-nft-restore', legacy: false },
  { save: 'ip6tables-nft-save', restore: 'ip6tables-nft-restore', legacy: false },
  {
    save: 'iptables-legacy-save',
    restore: 'iptables-legacy-restore',
    legacy: true,
    procNames: 'ip_tables_names',
  },
  {
    save: 'ip6tables-legacy-save',
    restore: 'ip6tables-legacy-restore',
    legacy: true,
    procNames: 'ip6_tables_names',
  },
];

/**
 * From one `iptables-save -t nat`: the restore input that deletes portmap's rules for `network`'s pods
 * (their jumps, then their chains), and how many pods' chains; undefined when there are none.
 */
export function portmapCleanup(save: string, network: string): { input: string; pods: number } | undefined {
  // As portmap writes it (Go's %q) and iptables-save prints it: `--comment "dnat name: \"trellis\" id: ...`.
  const ours = `--comment "dnat name: \\"${network}\\" id: \\"`;
  const deletes: string[] = [];
  const chains = new Set<string>();
  for (const line of save.split('\n')) {
    if (!line.startsWith('-A CNI-HOSTPORT-DNAT ') || !line.includes(ours)) continue;
    const target = / -j (CNI-DN-[0-9a-f]+)$/.exec(line)?.[1];
    if (target === undefined) continue;
    deletes.push(`-D${line.slice(2)}`);
    chains.add(target);
  }
  if (deletes.length === 0) return undefined;
  const flush = [...chains].flatMap((c) => [`-F ${c}`, `-X ${c}`]);
  return { input: ['*nat', ...deletes, ...flush, 'COMMIT', ''].join('\n'), pods: chains.size };
}

/** Whether the legacy x_tables of a family hold a nat table (listing one would otherwise make it). */
function legacyNat(procNet: string, file: string): boolean {
  try {
    return readFileSync(join(procNet, file), 'utf8').split('\n').includes('nat');
  } catch {
    return false; // the module was never loaded: no legacy table at all
  }
}

/**
 * Deletes portmap's hostPort rules for `network`'s pods in every iptables backend and family of this
 * node, each in one iptables-restore transaction; resolves with how many pods' rules went. `run(tool,
 * args, input)` resolves with the tool's stdout and rejects when it fails or is not installed.
 */
export async function deletePortmapLeftovers(
  run: (tool: string, args: string[], input?: string) => Promise<string>,
  network: string,
  procNet = '/proc/net',
): Promise<number> {
  let removed = 0;
  const failures: string[] = [];
  for (const b of BACKENDS) {
    if (b.procNames !== undefined && !legacyNat(procNet, b.procNames)) continue;
    let save: string;
    try {
      save = await run(b.save, ['-t', 'nat']);
    } catch {
      continue; // no such tool on this node, or nothing it can print: no portmap rules there
    }
    const cleanup = portmapCleanup(save, network);
    if (cleanup === undefined) continue;
    try {
      await run(b.restore, [...(b.legacy ? ['-w', '5'] : []), '--noflush'], cleanup.input);
      removed += cleanup.pods;
    } catch (err) {
      failures.push(`${b.restore}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (failures.length > 0) {
    throw new Error(
      `deleted ${removed} pods' hostPort rules; the others could not be: ${failures.join('; ')}`,
    );
  }
  return removed;
}
