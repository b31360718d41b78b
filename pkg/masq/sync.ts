/**
 * Keeps the agent's nftables table (masquerade, MSS clamp) equal to the rendered ruleset. The text is
 * deterministic, so an unchanged cluster renders the same bytes and the kernel is left alone; the first
 * pass after a restart applies once (harmless: the replacement is atomic).
 */

import { errorText } from '../error-text.ts';
import type { NftRunner } from './nft.ts';
import { type MasqOptions, type MasqPlan, planMasq, type SkippedCidr } from './render.ts';

export class MasqSyncer {
  private readonly runner: Pick<NftRunner, 'apply'> & Partial<Pick<NftRunner, 'ran'>>;
  private lastApplied: string | undefined;
  private invalidations = 0;
  /** The last ruleset whose clamp the kernel refused, and why. */
  private refused: { ruleset: string; error: string } | undefined;
  /** The last plan and what it was made from: a resync over an unchanged cluster renders nothing. */
  private lastPlan: { opts: MasqOptions; plan: MasqPlan } | undefined;
  /** Node-provided CIDRs the last sync left out as invalid (for the caller to log or report). */
  lastSkipped: SkippedCidr[] = [];

  constructor(runner: Pick<NftRunner, 'apply'> & Partial<Pick<NftRunner, 'ran'>>) {
    this.runner = runner;
  }

  /** Whether the process behind an nf_tables transaction was one of our nft runs; undefined: cannot tell. */
  committedBy(portid: number): boolean | undefined {
    // A netlink port is the process's pid unless that number was taken in this network namespace
    // (hostNetwork: a host process's socket); the kernel then picks one from 0x80000000 up, which
    // names nobody.
    if (portid <= 0 || portid >= 0x80000000) return undefined;
    return this.runner.ran?.(portid);
  }

  /** Renders (throws MasqConfigError on bad operator config) and applies when the text changed. */
  async sync(opts: MasqOptions): Promise<'applied' | 'unchanged'> {
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
      };
      this.lastPlan = { opts: copy, plan };
    }
    const { ruleset, skipped, withoutClamp } = plan!;
    this.lastSkipped = skipped;
    // This very ruleset's clamp was refused: the table without it, until the ruleset changes.
    let text = withoutClamp !== undefined && this.refused?.ruleset === ruleset ? withoutClamp : ruleset;
    if (text === this.lastApplied) return 'unchanged';
    const invalidations = this.invalidations;
    try {
      await this.runner.apply(text);
    } catch (err) {
      if (withoutClamp === undefined || text === withoutClamp) throw err;
      // The clamp needs nft_exthdr and nft_rt; a kernel without them must not cost the pods their
      // masquerade. A failure of the table without it is masquerade's own, and is thrown.
      await this.runner.apply(withoutClamp);
      this.refused = { ruleset, error: errorText(err) };
      text = withoutClamp;
    }
    // Someone changed the table while nft ran (invalidate() meanwhile): what it applied may already
    // be gone, so the next sync applies again instead of calling it unchanged.
    if (this.invalidations === invalidations) this.lastApplied = text;
    return 'applied';
  }

  /**
   * Why the kernel refused the MSS clamp of the current ruleset (the table holds the rest), or
   * undefined. A changed ruleset (a node added, say) or the next resync tries the clamp again.
   */
  get clampRefused(): string | undefined {
    const current = this.lastPlan?.plan.ruleset;
    return this.refused !== undefined && this.refused.ruleset === current ? this.refused.error : undefined;
  }

  /**
   * Forget the cache so the next sync re-applies (the periodic resync, or someone flushed the ruleset),
   * and tries a refused clamp again: the refusal may have been passing, or the module loaded since.
   */
  invalidate(): void {
    this.lastApplied = undefined;
    this.refused = undefined;
    this.invalidations++;
  }
}

function sameOptions(a: MasqOptions, b: MasqOptions): boolean {
  return (
    a.tableName === b.tableName &&
    a.masquerade === b.masquerade &&
    sameList(a.clampMssInto ?? [], b.clampMssInto ?? []) &&
    typeof b.podCIDRs === 'object' &&
    b.podCIDRs !== null &&
    sameList(a.podCIDRs.v4, b.podCIDRs.v4) &&
    sameList(a.podCIDRs.v6, b.podCIDRs.v6) &&
    sameList(a.clusterCIDRs, b.clusterCIDRs) &&
    sameList(a.noMasqueradeCIDRs, b.noMasqueradeCIDRs)
  );
}

/** b comes from the caller unchecked (planMasq reports a bad one): anything but an equal array differs. */
function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (!Array.isArray(b) || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
