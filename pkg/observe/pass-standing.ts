import type { PassOutcome } from '../agent/controller.ts';

/**
 * What the passes so far say of the node's routing: a pass that failed or waits stands until a full
 * pass succeeds. Per-node steps go on during a failed pass's backoff (controller.ts), and one that
 * went well says nothing of what the failed pass left undone (its config list, MTU, ranges): judged
 * alone, every Node event would flip /readyz, the last-success metric and the coverage annotation to
 * good until the next retry failed again.
 */
export class PassStanding {
  private standing: Exclude<PassOutcome, { kind: 'ok' }> | undefined;

  /** The outcome to judge the node by after `outcome`: the one that still stands. */
  judge(outcome: PassOutcome): PassOutcome {
    if (outcome.kind !== 'ok') {
      this.standing = outcome;
      return outcome;
    }
    if (outcome.scope !== 'node') this.standing = undefined;
    return this.standing ?? outcome;
  }
}
