/**
 * Tells from nf_tables notifications when someone else changed the masquerade table: `nft flush
 * ruleset` (what Debian's nftables.service does on restart, and firewalld on reload), a deleted table,
 * a flushed chain, a rule added by hand. Pure: fed the events of pkg/netlink subscribeNftablesEvents.
 *
 * Every apply of ours (render.ts) deletes and re-creates the whole table in one transaction, so its
 * notifications end with the table added. A transaction that touched the table and did not leave it
 * freshly added is someone else's, and the table must be put back as rendered.
 */
import type { NftablesEvent } from '../datapath/ports.ts';
import { DEFAULT_TABLE } from './render.ts';

/** NFPROTO_INET: the family of an `inet` table. */
const NFPROTO_INET = 1;

export class MasqTableWatch {
  private readonly table: string;
  private touched = false;
  private recreated = false;

  constructor(table: string = DEFAULT_TABLE) {
    this.table = table;
  }

  /** One event; true when a transaction just ended that changed the table behind the agent's back. */
  feed(ev: NftablesEvent): boolean {
    if (ev.type === 'change') {
      if (ev.family !== NFPROTO_INET || ev.table !== this.table) return false;
      this.touched = true;
      if (ev.object === 'table') this.recreated = ev.change === 'new';
      return false;
    }
    const foreign = this.touched && !this.recreated;
    this.touched = false;
    this.recreated = false;
    return foreign;
  }
}
