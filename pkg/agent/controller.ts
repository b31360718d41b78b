import { CniError } from '../cni/errors.ts';
import type { Lease } from '../ipam/index.ts';
import type { MasqOptions } from '../masq/render.ts';
import type { Logger } from '../observe/logger.ts';
import type { ReconcileInput, ReconcileReport } from '../routes/reconciler.ts';
import type { PeerNode } from '../routes/types.ts';
import { vtepMacsFromAnnotations } from '../vxlan/annotations.ts';
import type { ClusterNode, ClusterView } from './cluster.ts';

export interface ControllerDeps {
  nodeName: string;
  cluster: ClusterView;
  ipam: {
    ranges(): string[];
    setRanges(cidrs: string[]): Lease[];
  };
  routes: { reconcile(input: ReconcileInput): Promise<ReconcileReport> };
  masq: { sync(opts: MasqOptions): Promise<'applied' | 'unchanged'>; invalidate(): void } | undefined;
  noMasqueradeCIDRs: readonly string[];
  /** Leases invalidated by a pod CIDR change: their pods are unusable, remove their veths. */
  onLeasesInvalidated(leases: Lease[]): Promise<void>;
  /** After the pod CIDRs were set or changed (and invalidated leases handled): rebuild quarantined leases. */
  onRangesSet?(ranges: readonly string[]): Promise<void>;
  /** Called after every successful pass with the own node (readiness, config publication, condition). */
  onSynced(self: ClusterNode, report: ReconcileReport): Promise<void>;
  /** Metrics hook. */
  onPass?: (outcome: PassOutcome) => void;
  log: Logger;
  resyncMs: number;
  /** Retry delay after a failed pass: capped exponential. */
  backoff?: { initialMs: number; maxMs: number };
  sleep?: (ms: number) => Promise<void>;
}

/** Delay before a pass that had VXLAN overlay errors is retried. */

export type PassOutcome =
  | { kind: 'waiting'; reason: string }
  | { kind: 'ok'; report: ReconcileReport; durationMs: number; partial?: boolean }
  | { kind: 'error'; error: string; durationMs: number };

/**
 * Level-triggered reconciler (kindnet/flannel style): watch events and route-change notifications only
 * mark the state dirty; one worker re-reads the whole cache and makes the kernel match it. A periodic
 * resync catches anything missed. Passes never overlap.
 */
export class NodeController {
  private readonly deps: ControllerDeps;
  private dirty = true;
  private wake: (() => void) | undefined;
  private failures = 0;
  private lastWaitReason: string | undefined;
  private stopped = false;
  /** Resolves once the worker loop has exited. */
  done: Promise<void> = Promise.resolve();

  constructor(deps: ControllerDeps) {
    this.deps = deps;
  }

  markDirty(): void {
    this.dirty = true;
    this.wake?.();
  }

  start(signal: AbortSignal): void {
    const resync = setInterval(() => {
      this.deps.masq?.invalidate();
      this.markDirty();
    }, this.deps.resyncMs);
    resync.unref();
    signal.addEventListener('abort', () => {
      this.stopped = true;
      clearInterval(resync);
      this.wake?.();
    });
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    while (!this.stopped) {
      if (!this.dirty) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
        continue;
      }
      this.dirty = false;
      const outcome = await this.runOnce();
      if (outcome.kind === 'error' || (outcome.kind === 'ok' && outcome.partial)) {
        const { initialMs, maxMs } = this.deps.backoff ?? { initialMs: 200, maxMs: 10_000 };
        const delay = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures, 16));
        this.failures++;
        await sleep(delay);
        this.dirty = true;
      } else {
        this.failures = 0;
      }
    }
  }

  /** One full pass; exported for tests and for the first synchronous sync at start. */
  async runOnce(): Promise<PassOutcome> {
    const started = performance.now();
    const { deps } = this;
    const self = deps.cluster.get(deps.nodeName);
    const waitReason =
      !deps.cluster.hasSynced() && self === undefined
        ? 'waiting for the first list of Nodes'
        : self === undefined
          ? `Node ${deps.nodeName} does not exist in the API`
          : self.podCIDRs.length === 0
            ? `Node ${deps.nodeName} has no spec.podCIDRs yet (is the controller-manager allocating node CIDRs?)`
            : undefined;
    if (waitReason !== undefined || self === undefined) {
      const reason = waitReason ?? 'own node unknown';
      if (reason !== this.lastWaitReason) deps.log.warn({ reason }, 'waiting before programming the node');
      this.lastWaitReason = reason;
      const outcome: PassOutcome = { kind: 'waiting', reason };
      deps.onPass?.(outcome);
      return outcome;
    }
    this.lastWaitReason = undefined;
    try {
      await this.applyRanges(self);
      const nodes = deps.cluster.list();
      const report = await deps.routes.reconcile({
        synced: deps.cluster.hasSynced(),
        self: toPeer(self),
        peers: nodes.map(toPeer),
      });
      let masq: 'applied' | 'unchanged' | 'failed' | 'off' = 'off';
      if (deps.masq !== undefined) {
        try {
          masq = await deps.masq.sync(masqOptions(self, nodes, deps.noMasqueradeCIDRs));
        } catch (err) {
          // Masquerade matters for egress only; pods and routes keep working, the next pass retries.
          masq = 'failed';
          deps.log.error({ error: errorText(err) }, 'masquerade rules could not be applied');
        }
      }
      const durationMs = round(performance.now() - started);
      const level = report.errors.length > 0 ? 'warn' : 'info';
      deps.log[level](
        {
          nodes: nodes.length,
          added: report.added,
          replaced: report.replaced,
          removed: report.removed,
          unchanged: report.unchanged,
          removalsDeferred: report.removalsDeferred,
          routeErrors: report.errors.length,
          problems: report.problems.length,
          masq,
          durationMs,
        },
        'reconciled',
      );
      for (const p of report.problems) deps.log.warn({ peer: p.node, problem: p.problem }, 'node skipped');
      for (const e of report.errors) {
        deps.log.warn({ route: e.route.dst, error: errorText(e.error) }, 'route could not be programmed');
      }
      for (const e of report.overlay?.errors ?? []) {
        deps.log.warn({ op: e.op, what: e.what, error: errorText(e.error) }, 'VXLAN overlay change failed');
      }
      await deps.onSynced(self, report);
      // Some change failed (a route, the overlay, nft): the pass still counts, and the loop retries it
      // after a backoff rather than at once (such failures tend to persist for a while).
      const partial =
        report.errors.length > 0 || (report.overlay?.errors.length ?? 0) > 0 || masq === 'failed';
      const outcome: PassOutcome = { kind: 'ok', report, durationMs, partial };
      deps.onPass?.(outcome);
      return outcome;
    } catch (err) {
      const durationMs = round(performance.now() - started);
      deps.log.error({ error: errorText(err), durationMs }, 'reconcile failed');
      const outcome: PassOutcome = { kind: 'error', error: errorText(err), durationMs };
      deps.onPass?.(outcome);
      return outcome;
    }
  }

  private async applyRanges(self: ClusterNode): Promise<void> {
    const current = this.deps.ipam.ranges();
    if (sameList(current, self.podCIDRs)) return;
    const invalidated = this.deps.ipam.setRanges([...self.podCIDRs]);
    this.deps.log.info(
      { from: current, to: self.podCIDRs, invalidatedLeases: invalidated.length },
      current.length === 0 ? 'pod CIDRs known' : 'pod CIDRs changed',
    );
    if (invalidated.length > 0) {
      await this.deps.onLeasesInvalidated(invalidated);
      // Each one named: these pods have lost their network until the runtime recreates them.
      this.deps.log.warn(
        {
          leases: invalidated.map((l) => ({
            containerId: l.containerId.slice(0, 12),
            ifname: l.ifname,
            pod: l.podName === undefined ? undefined : `${l.podNamespace ?? ''}/${l.podName}`,
            addresses: l.addresses.map((a) => a.address),
          })),
        },
        'leases outside the new pod CIDRs released and their veths removed; those pods need to be recreated',
      );
    }
    await this.deps.onRangesSet?.(self.podCIDRs);
  }
}

function toPeer(n: ClusterNode): PeerNode {
  return {
    name: n.name,
    podCIDRs: [...n.podCIDRs],
    internalIPs: [...n.internalIPs],
    vtepMacs: vtepMacsFromAnnotations(n.annotations),
  };
}

export function masqOptions(
  self: ClusterNode,
  nodes: readonly ClusterNode[],
  noMasqueradeCIDRs: readonly string[],
): MasqOptions {
  const cluster = new Set<string>();
  for (const n of nodes) for (const c of n.podCIDRs) cluster.add(c);
  for (const c of self.podCIDRs) cluster.add(c);
  return {
    podCIDRs: {
      v4: self.podCIDRs.filter((c) => !c.includes(':')),
      v6: self.podCIDRs.filter((c) => c.includes(':')),
    },
    clusterCIDRs: [...cluster].sort(),
    noMasqueradeCIDRs: [...noMasqueradeCIDRs],
  };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function errorText(err: unknown): string {
  if (err instanceof CniError) return err.message;
  return err instanceof Error ? err.message : String(err);
}
