/**
 * The forward ruleset read again only when it may have changed. The periodic check read it every
 * minute through `nft -j list chains` (and a list per forward chain): a process spawned each time,
 * most of what an idle agent spawned. The namespace's nf_tables ruleset generation (NFT_MSG_GETGEN)
 * moves on with every committed transaction, any table's, so while it stands still and the check asks
 * about the same pod CIDRs and VXLAN packets, the last reading is still the kernel's. Legacy iptables
 * (x_tables) changes do not move it: where the host has a legacy filter table, every check reads.
 */
import { sameList } from '../compare.ts';
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
  let last:
    | {
        generation: number;
        podCIDRs: readonly string[];
        vxlan: readonly VxlanInKind[];
        ruleset: ForwardRuleset;
      }
    | undefined;
  return async (podCIDRs, vxlan) => {
    // Read before the ruleset: a transaction committed while it is read moves it on, and the next
    // check reads again.
    const generation = await d.generation().catch(() => undefined);
    const cacheable = generation !== undefined && d.legacyTables().length === 0;
    if (
      cacheable &&
      last !== undefined &&
      last.generation === generation &&
      sameList(last.podCIDRs, podCIDRs) &&
      sameVxlan(last.vxlan, vxlan)
    ) {
      return last.ruleset;
    }
    last = undefined;
    const ruleset = await d.read(podCIDRs, vxlan);
    if (cacheable) {
      // Copies: the caller's arrays may change under the comparison.
      const kinds = vxlan.map((k) => ({ ...k, sources: [...k.sources], devices: [...k.devices] }));
      last = { generation, podCIDRs: [...podCIDRs], vxlan: kinds, ruleset };
    }
    return ruleset;
  };
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
