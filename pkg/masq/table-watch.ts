/**
 * Tells from nf_tables notifications when someone else changed the masquerade table: `nft flush
 * ruleset` (what Debian's nftables.service does on restart, and firewalld on reload), a deleted table,
 * a flushed chain, a rule added by hand, a saved copy of the table restored, a flag set on it. Pure:
 * fed the events of pkg/netlink subscribeNftablesEvents.
 *
 * A transaction is the agent's own when the process that committed it is one of the agent's nft
 * children (the notifications' netlink port: the committing process's pid in its own pid namespace,
 * which is the agent's) and it leaves the table freshly added, as every apply of ours does (render.ts
 * deletes and re-creates the whole table), or when it changed set elements only and came from the
 * agent's element writer (sync.ts; its port is its own while it lives, no pid that could be someone
 * else's in another pid namespace). Any other transaction that touched the table is someone else's,
 * and the table must be put back as rendered. Where the committer cannot be told (`ours` absent or
 * answering undefined), the shape alone decides.
 */
import type { NftablesEvent } from '../datapath/ports.ts';
import { DEFAULT_TABLE } from './render.ts';

/** NFPROTO_INET: the family of an `inet` table. */
export const NFPROTO_INET = 1;

export class MasqTableWatch {
  private readonly table: string;
  private readonly ours: ((portid: number) => boolean | undefined) | undefined;
  private readonly ourElements: ((portid: number) => boolean) | undefined;
  private touched = false;
  private recreated = false;
  /** Every change of the transaction so far was a set element's. */
  private elementsOnly = true;

  /**
   * ours: whether our nft committed a transaction, by its netlink port; undefined: cannot tell.
   * ourElements: whether the port is our element writer's.
   */
  constructor(
    opts: {
      table?: string;
      ours?: (portid: number) => boolean | undefined;
      ourElements?: (portid: number) => boolean;
    } = {},
  ) {
    this.table = opts.table ?? DEFAULT_TABLE;
    this.ours = opts.ours;
    this.ourElements = opts.ourElements;
  }

  /** One event; true when a transaction just ended that changed the table behind the agent's back. */
  feed(ev: NftablesEvent): boolean {
    if (ev.type === 'change') {
      if (ev.family !== NFPROTO_INET || ev.table !== this.table) return false;
      this.touched = true;
      if (ev.object !== 'element') this.elementsOnly = false;
      if (ev.object === 'table') this.recreated = ev.change === 'new';
      return false;
    }
    const ourElements = this.elementsOnly && this.ourElements?.(ev.portid) === true;
    const foreign = this.touched && !ourElements && (!this.recreated || this.ours?.(ev.portid) === false);
    this.reset();
    return foreign;
  }

  /** Forgets a transaction in progress (after notifications were lost). */
  reset(): void {
    this.touched = false;
    this.recreated = false;
    this.elementsOnly = true;
  }
}
