/**
 * Asks for a firewall check soon after a table that dropped pod traffic (or holds trellis's accepts)
 * changes: Docker re-creating its chains when it restarts, `ufw reload` or firewalld's reload take the
 * accepts away with the rest, and pods across nodes would wait for the next periodic check. One
 * nf_tables subscription per followed table (other tables' set elements dropped in the kernel, the rest
 * of their changes here), and none on a node whose
 * firewall never dropped pod traffic. A burst of changes (kube-proxy writing the same `ip filter`
 * table, the agent's own inserts) yields one check DELAY_MS after it starts, and checks stay at least
 * MIN_GAP_MS apart.
 */
import type { NftablesEvent, Subscription } from '../datapath/ports.ts';
import type { NftTableId } from './forward-firewall.ts';

export const DELAY_MS = 1000;
export const MIN_GAP_MS = 5000;

/** Undefined when the table cannot be watched now: tried again at the next follow. */
export type SubscribeTable = (
  cb: (ev: NftablesEvent | { type: 'overflow' }) => void,
  table: NftTableId,
) => Subscription | undefined;

export class FirewallTableTrigger {
  private readonly subscribe: SubscribeTable;
  private readonly onChange: () => void;
  private readonly now: () => number;
  private readonly followed = new Map<string, Subscription>();
  private timer: NodeJS.Timeout | undefined;
  private last = Number.NEGATIVE_INFINITY;

  constructor(opts: { subscribe: SubscribeTable; onChange: () => void; now?: () => number }) {
    this.subscribe = opts.subscribe;
    this.onChange = opts.onChange;
    this.now = opts.now ?? (() => performance.now());
  }

  /** From now on these tables; subscriptions of others are closed. */
  follow(tables: readonly NftTableId[]): void {
    const wanted = new Map(tables.map((t) => [`${t.family} ${t.name}`, t]));
    for (const [key, sub] of this.followed) {
      if (wanted.has(key)) continue;
      sub.close();
      this.followed.delete(key);
    }
    for (const [key, table] of wanted) {
      if (this.followed.has(key)) continue;
      const sub = this.subscribe((ev) => {
        // The kernel drops only other tables' set elements; their rules and chains arrive too
        // (kube-proxy rewriting its own tables on every endpoint change), and are no news here.
        if (
          ev.type === 'overflow' ||
          (ev.type === 'change' && ev.family === table.family && ev.table === table.name)
        ) {
          this.soon();
        }
      }, table);
      // Not kept when it failed (EMFILE, ENOBUFS): the next follow (every check) tries again, where a
      // placeholder would leave the table unwatched until it left the followed set and came back.
      if (sub !== undefined) this.followed.set(key, sub);
    }
  }

  /** How many tables are followed (status, tests). */
  get size(): number {
    return this.followed.size;
  }

  private soon(): void {
    if (this.timer !== undefined) return;
    const delay = Math.max(DELAY_MS, this.last + MIN_GAP_MS - this.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.last = this.now();
      this.onChange();
    }, delay);
    this.timer.unref();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const sub of this.followed.values()) sub.close();
    this.followed.clear();
  }
}
