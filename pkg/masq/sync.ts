/**
 * Keeps the masquerade table equal to the rendered ruleset. The text is deterministic, so an unchanged
 * cluster renders the same bytes and the kernel is left alone; the first pass after a restart applies once
 * (harmless: the replacement is atomic).
 */

import type { NftRunner } from './nft.ts';
import { type MasqOptions, planMasq, type SkippedCidr } from './render.ts';

export class MasqSyncer {
  private readonly runner: Pick<NftRunner, 'apply'>;
  private lastApplied: string | undefined;
  /** Node-provided CIDRs the last sync left out as invalid (for the caller to log or report). */
  lastSkipped: SkippedCidr[] = [];

  constructor(runner: Pick<NftRunner, 'apply'>) {
    this.runner = runner;
  }

  /** Renders (throws MasqConfigError on bad operator config) and applies when the text changed. */
  async sync(opts: MasqOptions): Promise<'applied' | 'unchanged'> {
    const { ruleset: text, skipped } = planMasq(opts);
    this.lastSkipped = skipped;
    if (text === this.lastApplied) return 'unchanged';
    await this.runner.apply(text);
    this.lastApplied = text;
    return 'applied';
  }

  /** Forget the cache so the next sync re-applies (e.g. after someone flushed the ruleset). */
  invalidate(): void {
    this.lastApplied = undefined;
  }
}
