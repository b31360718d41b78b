/**
 * A legacy iptables table the firewall check could not read (its save tool failing) keeps the drops
 * it had when it was last read: "no longer drops" would be a guess, and nothing is written there while
 * its rules and their order are unknown. Pure: the check (forward-firewall.ts) gives what it read.
 */
import { compareOrdinal } from '../compare.ts';
import {
  describeBlock,
  describeVxlanBlock,
  type ForwardBlock,
  type VxlanInBlock,
  type VxlanInKind,
} from '../firewall/index.ts';
import type { UnreadTable } from '../firewall/ruleset.ts';
import { canonicalCidr } from '../ip/index.ts';

export interface UnreadInput {
  /** This check's forward blocks (after its accepts, as re-read) and VXLAN input blocks (its first read's). */
  blocks: readonly ForwardBlock[];
  vxlanBlocks: readonly VxlanInBlock[];
  /** Tables the first read could not read, and the latest read (the re-read after accepts, or the first). */
  unreadFirst: readonly UnreadTable[];
  unreadLatest: readonly UnreadTable[];
  /** The first read's forward blocks, and which of them an accept that went in answered (describeBlock). */
  firstBlocks: readonly ForwardBlock[];
  answered: ReadonlySet<string>;
  /** The last check's state. */
  last: { blocks: readonly ForwardBlock[]; vxlanBlocks?: readonly VxlanInBlock[] };
  /** The pod CIDRs checked, and this node's own, walked inside a wider one for the operator's drops only. */
  podCIDRs: readonly string[];
  own: readonly string[];
  /** The VXLAN packets checked. */
  vxlan: readonly VxlanInKind[];
}

/**
 * The blocks with an unread table's carried in (this check's first read, less what its accepts
 * answered, where only the re-read failed; else the last check's, for the prefixes and VXLAN packets
 * still checked), and one entry per unread table, the latest read's (a table only the first read
 * missed counts where that read decided: the VXLAN input walk, when there are peers to tunnel to).
 */
export function carryUnread(i: UnreadInput): {
  blocks: ForwardBlock[];
  vxlanBlocks: VxlanInBlock[];
  unread: UnreadTable[];
} {
  const inFamily = (t: UnreadTable) => (b: { chain: string }) => b.chain.startsWith(`${t.family} `);
  const canon = (c: string): string => canonicalCidr(c) ?? c;
  const checked = new Set(i.podCIDRs.map(canon));
  const own = new Set(i.own.map(canon));
  const stillChecked = (b: ForwardBlock): boolean =>
    checked.has(canon(b.podCIDR)) || (b.targeted === true && own.has(canon(b.podCIDR)));
  const stillSent = (b: VxlanInBlock): boolean =>
    i.vxlan.some((k) => k.family === b.family && k.port === b.port);

  const carried = i.unreadLatest.flatMap((t) =>
    (i.unreadFirst.some((u) => u.family === t.family)
      ? i.last.blocks.filter(stillChecked)
      : i.firstBlocks.filter((b) => !i.answered.has(describeBlock(b)))
    ).filter(inFamily(t)),
  );
  const carriedVxlan = i.unreadFirst.flatMap((t) =>
    (i.last.vxlanBlocks ?? []).filter((b) => inFamily(t)(b) && stillSent(b)),
  );
  const latest = new Map(i.unreadLatest.map((t) => [t.family, t]));
  if (i.vxlan.length > 0) for (const t of i.unreadFirst) if (!latest.has(t.family)) latest.set(t.family, t);
  return {
    blocks: withNew(i.blocks, carried, describeBlock),
    vxlanBlocks: withNew(i.vxlanBlocks, carriedVxlan, describeVxlanBlock),
    unread: [...latest.values()].sort((a, b) => compareOrdinal(a.family, b.family)),
  };
}

/** `list` and those of `more` whose key is in neither yet. */
function withNew<T>(list: readonly T[], more: readonly T[], key: (x: T) => string): T[] {
  const seen = new Set(list.map(key));
  const out = [...list];
  for (const x of more) {
    if (seen.has(key(x))) continue;
    seen.add(key(x));
    out.push(x);
  }
  return out;
}
