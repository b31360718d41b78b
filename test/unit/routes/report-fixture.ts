import type { ReconcileReport } from '../../../pkg/routes/reconciler.ts';

/** A reconcile report with nothing in it, the given fields set: for tests of its consumers. */
export function reconcileReport(over: Partial<ReconcileReport> = {}): ReconcileReport {
  return {
    added: 0,
    replaced: 0,
    removed: 0,
    unchanged: 0,
    removalsDeferred: 0,
    errors: [],
    problems: [],
    decisions: [],
    conflicts: [],
    durationMs: 0,
    ...over,
  };
}
