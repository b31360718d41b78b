/**
 * The forward ruleset read again only when it may have changed (pkg/read-on-change.ts). The periodic
 * check read it every minute through `nft -j list chains` (and a list per forward chain): a process
 * spawned each time. While the ruleset generation stands still and the check asks about the same pod
 * CIDRs and VXLAN packets, the last reading is still the kernel's. Legacy iptables (x_tables) changes
 * do not move the generation: where the host has a legacy filter table, every check reads.
 */
import { sameList } from '../compare.ts';
import { readOnChange as readOnGenerationChange } from '../read-on-change.ts';
import type { ForwardRuleset, LegacyFamily } from './ruleset.ts';
import type { VxlanInKind } from './vxlan-input.ts';

export type ForwardRead = (
  podCIDRs: readonly string[],
  vxlan: readonly VxlanInKind[],
) => Promise<ForwardRuleset>;

export interface ReadOnChangeDeps {
  read: ForwardRead;
  /** The ruleset generation (pkg/netlink NftSetWriter.generation); a failure means "read". */
  generation: () => Promise<number>;
  /** The legacy filter tables the host has (LegacyIptables.tables). */
  legacyTables: () => readonly LegacyFamily[];
}

export function readOnChange(d: ReadOnChangeDeps): ForwardRead {
  return readOnGenerationChange(d.read, {
    generation: d.generation,
    // Unlistable (/proc/net's table list unreadable): read, and let the read say what it could not.
    cacheable: () => {
      try {
        return d.legacyTables().length === 0;
      } catch {
        return false;
      }
    },
    sameArgs: ([podsA, vxlanA], [podsB, vxlanB]) => sameList(podsA, podsB) && sameVxlan(vxlanA, vxlanB),
    // Copies: the caller's arrays may change under the comparison.
    keep: ([pods, vxlan]) => [
      [...pods],
      vxlan.map((k) => ({ ...k, sources: [...k.sources], devices: [...k.devices] })),
    ],
  });
}

function sameVxlan(a: readonly VxlanInKind[], b: readonly VxlanInKind[]): boolean {
  return (
    a.length === b.length &&
    a.every(
      (k, i) =>
        k.family === b[i]!.family &&
        k.port === b[i]!.port &&
        sameList(k.sources, b[i]!.sources) &&
        sameList(k.devices, b[i]!.devices),
    )
  );
}
