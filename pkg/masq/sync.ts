/**
 * Keeps the agent's nftables table (masquerade, MSS clamp) equal to the rendered ruleset. The text is
 * deterministic, so an unchanged cluster renders the same bytes and the kernel is left alone; the first
 * pass after a restart applies once (harmless: the replacement is atomic).
 *
 * A Node added or deleted changes set elements only. With a SetElementWriter, such a change goes to
 * the kernel as one netlink transaction of the ranges that differ from what the syncer last wrote
 * (well under a millisecond) instead of an nft run rewriting the table (~30 ms of CPU at 5,000
 * nodes, on the agent's two busiest cores). Whatever the in-place change meets that it did not
 * expect (the table gone, an element missing) makes it fail whole, and the table is applied whole.
 */

import { sameList } from '../compare.ts';
import type { IntervalSetChange } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { ClusterSets } from './cluster-sets.ts';
import type { NftRunner } from './nft.ts';
import { type MasqOptions, type MasqPlan, type MasqSet, planMasq, type SkippedCidr } from './render.ts';
import { diffSets, rangesMoved } from './set-diff.ts';

/** Changes interval set elements in one transaction (pkg/netlink NftSetWriter). */
export interface SetElementWriter {
  /** The netlink port nf_tables notifications of its transactions carry. */
  readonly port: number;
  update(table: string, changes: readonly IntervalSetChange[]): Promise<void>;
}

/** More ranges than this to move and the table is applied whole: one transaction either way. */
const MAX_RANGES_IN_PLACE = 1024;
/**
 * After set elements changed in place, the table is listed again once they have stopped changing for
 * this long: the periodic resync then checks against that listing instead of rewriting the table
 * (and zeroing its counters) whenever a Node came or went within the last resync period.
 */
export const RELIST_QUIET_MS = 1000;

export class MasqSyncer {
  private readonly runner: Pick<NftRunner, 'apply'> & Partial<Pick<NftRunner, 'ran' | 'snapshot' | 'check'>>;
  private readonly elements: SetElementWriter | undefined;
  /**
   * What the kernel holds as far as the syncer knows: the text last applied (undefined after a
   * changeCluster, which renders none), its shape and sets.
   */
  private lastApplied: { text: string | undefined; shape: string; sets: readonly MasqSet[] } | undefined;
  /**
   * The nomasq sets as unions of blocks, for changeCluster: those of plan `from` once it was synced,
   * or (from undefined) moved on from there by changeCluster. Kept only with an element writer.
   */
  private cluster: { sets: ClusterSets; from: MasqPlan | undefined } | undefined;
  private invalidations = 0;
  /**
   * The shape (the ruleset without its set elements) whose clamp the kernel refused, and why: kept
   * while the shape stays, so that a cluster whose nodes come and go changes the table without the
   * clamp in place rather than trying the clamp (and rewriting the table whole) at every change.
   */
  private refused: { shape: string; error: string } | undefined;
  /** The last plan and what it was made from: a resync over an unchanged cluster renders nothing. */
  private lastPlan: { opts: MasqOptions; plan: MasqPlan } | undefined;
  /** Node-provided CIDRs the last sync left out as invalid (for the caller to log or report). */
  lastSkipped: SkippedCidr[] = [];
  /** Why the last in-place change was refused (the table was then applied whole); undefined after one worked. */
  lastInPlaceError: string | undefined;
  /**
   * The kernel's table listed (runner.snapshot) right after the last whole apply, or once in-place
   * changes of set elements since have settled; undefined while they have not, or once someone else
   * changed the table.
   */
  private listed: string | undefined;
  /** The next sync checks the kernel against `listed` (resync()). */
  private verifyNext = false;
  /** Counts our writes (whole applies and in-place changes): a listing taken across one is stale. */
  private writes = 0;
  private relistTimer: NodeJS.Timeout | undefined;

  constructor(
    runner: Pick<NftRunner, 'apply'> & Partial<Pick<NftRunner, 'ran' | 'snapshot' | 'check'>>,
    elements?: SetElementWriter,
  ) {
    this.runner = runner;
    this.elements = elements;
  }

  /** Whether a transaction that changed only set elements was the element writer's (exact: ports are unique). */
  wroteElements(portid: number): boolean {
    return this.elements !== undefined && this.elements.port === portid;
  }

  /** Whether the process behind an nf_tables transaction was one of our nft runs; undefined: cannot tell. */
  committedBy(portid: number): boolean | undefined {
    // A netlink port is the process's pid unless that number was taken in this network namespace
    // (hostNetwork: a host process's socket); the kernel then picks one from 0x80000000 up, which
    // names nobody.
    if (portid <= 0 || portid >= 0x80000000) return undefined;
    return this.runner.ran?.(portid);
  }

  /**
   * Renders (throws MasqConfigError on bad operator config) and brings the kernel to it: 'updated'
   * when set elements were changed in place, 'applied' when the table was applied whole.
   */
  async sync(opts: MasqOptions): Promise<'applied' | 'updated' | 'unchanged'> {
    let plan = this.lastPlan?.plan;
    if (this.lastPlan === undefined || !sameOptions(this.lastPlan.opts, opts)) {
      plan = planMasq(opts);
      // A copy: the caller may reuse its arrays.
      const copy: MasqOptions = {
        ...opts,
        podCIDRs: { v4: [...opts.podCIDRs.v4], v6: [...opts.podCIDRs.v6] },
        clusterCIDRs: [...opts.clusterCIDRs],
        noMasqueradeCIDRs: [...opts.noMasqueradeCIDRs],
        ...(opts.clampMssInto === undefined ? {} : { clampMssInto: [...opts.clampMssInto] }),
        ...(opts.tunnels === undefined ? {} : { tunnels: [...opts.tunnels] }),
      };
      this.lastPlan = { opts: copy, plan };
    }
    const { ruleset, skipped, withoutClamp, shapes, sets } = plan!;
    this.lastSkipped = skipped;
    const last = this.lastApplied;
    if (last !== undefined && this.cluster !== undefined && this.cluster.from === undefined) {
      // changeCluster moved the kernel's nomasq sets on since the last sync: compare with them.
      this.lastApplied = { ...last, sets: this.cluster.sets.current(last.sets) };
    }
    const verify = this.verifyNext;
    this.verifyNext = false;
    if (verify && this.refused?.shape === shapes.ruleset && this.runner.check !== undefined) {
      // The refused clamp again, without committing (nft -c): the module may have loaded since. Only
      // a clamp the kernel now takes changes the table, so a refusal that lasts keeps its counters.
      try {
        await this.runner.check(ruleset);
        this.refused = undefined;
      } catch {
        // Still refused: the table without it stays.
      }
    }
    // This shape's clamp was refused: the table without it, until the shape changes or a resync's
    // check finds the kernel takes it.
    const clampOff = withoutClamp !== undefined && this.refused?.shape === shapes.ruleset;
    let text = clampOff ? withoutClamp : ruleset;
    let shape = clampOff ? shapes.withoutClamp! : shapes.ruleset;
    if (verify && (!this.isLastWritten(text, shape, sets) || !(await this.kernelAsListed(plan!.table)))) {
      this.lastApplied = undefined;
    }
    if (text === this.lastApplied?.text) {
      this.unionsFrom(plan!);
      return 'unchanged';
    }
    const invalidations = this.invalidations;
    const settled = (): void => {
      // Someone changed the table meanwhile (invalidate()): what we wrote may already be gone, so
      // the next sync applies again instead of calling it unchanged.
      if (this.invalidations === invalidations) this.lastApplied = { text, shape, sets };
      this.unionsFrom(plan!);
    };
    const changes = this.inPlaceChanges(shape, sets);
    if (changes?.length === 0) {
      // The sets changeCluster left are what this plan has.
      settled();
      return 'unchanged';
    }
    if (changes !== undefined && (await this.changeInPlace(plan!.table, changes))) {
      settled();
      return 'updated';
    }
    this.writes++;
    try {
      await this.runner.apply(text);
    } catch (err) {
      if (withoutClamp === undefined || text === withoutClamp) throw err;
      // The clamp needs nft_exthdr and nft_rt; a kernel without them must not cost the pods their
      // masquerade. A failure of the table without it is masquerade's own, and is thrown. A check
      // of the same ruleset (nft -c, nothing committed) that passes says the kernel takes the clamp
      // and the failure was another's (nft killed at its timeout, ENOMEM): the table is applied
      // again, whole, rather than left without the clamp and reported as a refusal.
      if (this.runner.check !== undefined && (await this.runner.check(ruleset).then(succeeded, failed))) {
        await this.runner.apply(ruleset);
      } else {
        await this.runner.apply(withoutClamp);
        this.refused = { shape: shapes.ruleset, error: errorText(err) };
        text = withoutClamp;
        shape = shapes.withoutClamp!;
      }
    }
    settled();
    await this.list(plan!.table, invalidations, this.writes);
    return 'applied';
  }

  /**
   * Whether the kernel holds what this ruleset renders as far as the syncer knows: its text was
   * applied, or its elements were reached in place from an applied table of the same shape.
   */
  private isLastWritten(text: string, shape: string, sets: readonly MasqSet[]): boolean {
    const last = this.lastApplied;
    if (last === undefined) return false;
    if (last.text !== undefined) return last.text === text;
    return this.inPlaceChanges(shape, sets)?.length === 0;
  }

  /**
   * Lists the table for resync's check; none when someone changed it (invalidations) or we wrote to it
   * (writes) since the caller's counts, as the listing may then be of neither state.
   */
  private async list(table: string, invalidations: number, writes: number): Promise<void> {
    this.listed = undefined;
    if (this.runner.snapshot === undefined) return;
    try {
      const listed = await this.runner.snapshot(table);
      if (this.invalidations === invalidations && this.writes === writes && this.lastApplied !== undefined) {
        this.listed = listed;
      }
    } catch {
      // The next resync applies the table whole, as it did before listings.
    }
  }

  /** In-place changes went in: list the table again once they settle (RELIST_QUIET_MS without one). */
  private relistSoon(table: string): void {
    if (this.runner.snapshot === undefined) return;
    clearTimeout(this.relistTimer);
    const invalidations = this.invalidations;
    // unref: a pending listing never keeps the process alive.
    this.relistTimer = setTimeout(() => {
      this.relistTimer = undefined;
      void this.list(table, invalidations, this.writes);
    }, RELIST_QUIET_MS).unref();
  }

  /** Whether the kernel's table is still as listed after the last whole apply (resync's check). */
  private async kernelAsListed(table: string): Promise<boolean> {
    const listed = this.listed;
    if (listed === undefined || this.runner.snapshot === undefined) return false;
    try {
      return (await this.runner.snapshot(table)) === listed;
    } catch {
      return false;
    }
  }

  /** The kernel's sets are the plan's now: the unions for changeCluster are built from it (once per plan). */
  private unionsFrom(plan: MasqPlan): void {
    if (this.elements !== undefined && this.cluster?.from !== plan) {
      this.cluster = { sets: ClusterSets.fromPlan(plan), from: plan };
    }
  }

  /**
   * Cluster pod CIDRs that left and joined since the last sync (a Node added, deleted, or given other
   * pod CIDRs; strings as the Nodes hold them): the nomasq sets are changed in place, in steps of the
   * change's size, not the cluster's. 'unsupported' when the syncer cannot (no element writer, no
   * table written yet, or the last change was refused): the caller then syncs whole. A refusal
   * (someone changed the table) also answers 'unsupported', after forgetting what it knew.
   */
  async changeCluster(
    removed: readonly string[],
    added: readonly string[],
  ): Promise<'updated' | 'unchanged' | 'unsupported'> {
    const { lastApplied, cluster, lastPlan } = this;
    if (
      this.elements === undefined ||
      lastApplied === undefined ||
      cluster === undefined ||
      lastPlan === undefined
    ) {
      return 'unsupported';
    }
    const changes = cluster.sets.change(removed, added);
    // The unions moved on from the plan; the kernel follows below, or everything is forgotten.
    cluster.from = undefined;
    if (changes.length === 0) return 'unchanged';
    lastApplied.text = undefined;
    // (An invalidate() while it runs drops lastApplied: the next sync is whole, and rebuilds the unions.)
    if (await this.changeInPlace(lastPlan.plan.table, changes)) return 'updated';
    this.lastApplied = undefined;
    this.cluster = undefined;
    return 'unsupported';
  }

  /** The element changes from what was last written to `sets`; undefined when more than elements differ. */
  private inPlaceChanges(shape: string, sets: readonly MasqSet[]): IntervalSetChange[] | undefined {
    const last = this.lastApplied;
    if (this.elements === undefined || last === undefined || last.shape !== shape) return undefined;
    const changes = diffSets(last.sets, sets);
    return changes === undefined || rangesMoved(changes) > MAX_RANGES_IN_PLACE ? undefined : changes;
  }

  /** True when the kernel took the changes (one transaction); false when it refused all of them. */
  private async changeInPlace(table: string, changes: readonly IntervalSetChange[]): Promise<boolean> {
    this.listed = undefined; // the sets move on from the listing, whatever the kernel answers
    this.writes++;
    try {
      await this.elements!.update(table, changes);
      this.lastInPlaceError = undefined;
      this.relistSoon(table);
      return true;
    } catch (err) {
      // The kernel's table is not what we last wrote (someone's change the watch has not reported yet).
      this.lastInPlaceError = errorText(err);
      return false;
    }
  }

  /** Whether the next resync can check the kernel against a listing instead of applying whole. */
  get listingCurrent(): boolean {
    return this.listed !== undefined;
  }

  /**
   * Why the kernel refused the MSS clamp of the current ruleset's shape (the table holds the rest), or
   * undefined. A changed shape (another tunnel device, say) or the next resync tries the clamp again.
   */
  get clampRefused(): string | undefined {
    const current = this.lastPlan?.plan.shapes.ruleset;
    return this.refused !== undefined && this.refused.shape === current ? this.refused.error : undefined;
  }

  /**
   * Forget the cache so the next sync re-applies (someone changed the table, or its notifications were
   * lost), and tries a refused clamp again: the refusal may have been passing, or the module loaded since.
   * The unions stay: built from a plan, they hold again once that plan is applied whole (rebuilding
   * them at every resync would cost tens of milliseconds of interpreted JS at 5,000 nodes for nothing).
   */
  invalidate(): void {
    this.lastApplied = undefined;
    this.listed = undefined;
    clearTimeout(this.relistTimer);
    this.relistTimer = undefined;
    this.refused = undefined;
    this.invalidations++;
  }

  /**
   * The periodic resync: the next sync lists the kernel's table and applies only when it differs
   * from the listing taken after the last whole apply or after in-place changes settled (or when
   * there is none: such changes went in within the last RELIST_QUIET_MS). A table rewritten every
   * minute would zero the counters operators read (the masquerade rule's, the source check's drops);
   * someone else's change is caught by the table watch at once, and by this check when its
   * notifications were lost. A refused clamp is tried again (nft -c first, so a kernel that still
   * refuses it keeps the table and its counters).
   */
  resync(): void {
    // Without a check to try the clamp with, it is tried by applying, as invalidate does.
    if (this.runner.check === undefined) this.refused = undefined;
    this.verifyNext = true;
  }
}

function sameOptions(a: MasqOptions, b: MasqOptions): boolean {
  return (
    a.tableName === b.tableName &&
    a.masquerade === b.masquerade &&
    a.sourceCheck === b.sourceCheck &&
    sameArray(a.clampMssInto ?? [], b.clampMssInto ?? []) &&
    sameArray(a.tunnels ?? [], b.tunnels ?? []) &&
    typeof b.podCIDRs === 'object' &&
    b.podCIDRs !== null &&
    sameArray(a.podCIDRs.v4, b.podCIDRs.v4) &&
    sameArray(a.podCIDRs.v6, b.podCIDRs.v6) &&
    sameArray(a.clusterCIDRs, b.clusterCIDRs) &&
    sameArray(a.noMasqueradeCIDRs, b.noMasqueradeCIDRs)
  );
}

/** b comes from the caller unchecked (planMasq reports a bad one): anything but an equal array differs. */
function sameArray(a: readonly string[], b: readonly string[]): boolean {
  return Array.isArray(b) && sameList(a, b);
}

const succeeded = (): boolean => true;
const failed = (): boolean => false;
