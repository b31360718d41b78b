import { sameList } from '../compare.ts';
import { leaseLogFields } from '../datapath/names.ts';
import { errorText } from '../error-text.ts';
import { familyOfText } from '../ip/index.ts';
import { type Lease, RangeChangeError } from '../ipam/index.ts';
import type { MasqOptions } from '../masq/render.ts';
import type { Logger } from '../observe/logger.ts';
import { UNREADABLE_HOLDER } from '../routes/diff.ts';
import { DIRECT_SUBNET_ANNOTATIONS, directSubnetsFromAnnotations } from '../routes/direct-subnets.ts';
import type { PeerStepOutcome, ReconcileInput, ReconcileReport } from '../routes/reconciler.ts';
import type { PeerNode } from '../routes/types.ts';
import { vtepMacsFromAnnotations } from '../vxlan/annotations.ts';
import { VTEP_MAC_ANNOTATIONS } from '../vxlan/constants.ts';
import type { ClusterNode, ClusterView } from './cluster.ts';
import { PODS_TO_RECREATE } from './lease-rebuild.ts';
import { clusterCidrsOf, MasqGiven, type RefusedCidrs, refusedCidrs, sameRefusal } from './masq-given.ts';
import { RouteTroubleLog } from './route-trouble-log.ts';
import type { TableRules } from './table-rules.ts';

export interface ControllerDeps {
  nodeName: string;
  cluster: ClusterView;
  ipam: {
    ranges(): string[];
    setRanges(cidrs: string[]): Lease[];
    get(key: { containerId: string; ifname: string }): Lease | undefined;
  };
  routes: {
    reconcile(input: ReconcileInput): Promise<ReconcileReport>;
    /** One peer against what is programmed for it (absent: full passes only). */
    reconcilePeer?(name: string, peer: PeerNode | undefined): Promise<PeerStepOutcome>;
  };
  /** The nftables table's syncer (masquerade, MSS clamp); undefined when the node needs no table. */
  masq:
    | {
        /** 'updated': set elements changed in place; 'applied': the table applied whole. */
        sync(opts: MasqOptions): Promise<'applied' | 'updated' | 'unchanged'>;
        /** Cluster pod CIDRs that left and joined since the last sync; 'unsupported': sync whole. */
        changeCluster?(
          removed: readonly string[],
          added: readonly string[],
        ): Promise<'updated' | 'unchanged' | 'unsupported'>;
        invalidate(): void;
        /** The periodic resync's check (MasqSyncer.resync); without it, invalidate. */
        resync?(): void;
        /** Why the last in-place change of set elements was refused (the table was applied whole). */
        readonly lastInPlaceError?: string | undefined;
        /** Why the kernel refused the MSS clamp (the rest of the table applied), or undefined. */
        readonly clampRefused?: string | undefined;
      }
    | undefined;
  noMasqueradeCIDRs: readonly string[];
  /** What the table holds; masquerade only (no clamp) by default. */
  tableRules?: TableRules;
  /** Leases invalidated by a pod CIDR change: their pods are unusable, remove their veths. */
  onLeasesInvalidated(leases: Lease[]): Promise<void>;
  /**
   * After the pod CIDRs were set or changed (and invalidated leases handled): forwarding for their
   * families, quarantined leases rebuilt. A failure fails the pass, and the next one calls it again.
   */
  onRangesSet?(ranges: readonly string[]): Promise<void>;
  /** Called after every successful pass with the own node (readiness, config publication, condition). */
  onSynced(self: ClusterNode, report: ReconcileReport): Promise<void>;
  /** A per-node step routed a peer through a device the last report did not name: every device now. */
  onRouteDevices?(devices: readonly number[]): void;
  /**
   * This node's trellis annotations as the last pass wants them (undefined: absent). The Node coming
   * back with exactly these is the agent's own write, and no reason for another full pass.
   */
  ownAnnotations?(): Readonly<Record<string, string | undefined>> | undefined;
  /**
   * A per-node step changed a peer (node undefined: deleted), with the pod CIDRs the planner accepted
   * of it: what the host firewall's accepts cover may have to grow (pkg/firewall/pod-network.ts).
   */
  onPeerChanged?(node: ClusterNode | undefined, accepted: readonly string[]): void;
  /** Metrics hook. */
  onPass?: (outcome: PassOutcome) => void;
  log: Logger;
  resyncMs: number;
  /** Retry delay after a failed pass: capped exponential. */
  backoff?: { initialMs: number; maxMs: number };
  sleep?: (ms: number) => Promise<void>;
}

/** How long a per-node step's masquerade update waits for more of them (nft is a process spawn). */
const MASQ_COALESCE_MS = 50;
/** The wait of every start, before the informer's first list: the one wait reason that is not a problem. */
export const FIRST_LIST_WAIT = 'waiting for the first list of Nodes';
/**
 * Per-node outcomes reach the metrics hook once the steps have been quiet this long, and at the latest
 * NODE_PASS_MAX_DELAY_MS after the first one. The hook recomputes per-peer state over the whole cluster
 * (~7 ms at 5,000 peers); on a fixed 200 ms beat it often ran just as the next Node event arrived and
 * delayed that event's route (the tail of bench/route-convergence.ts).
 */
const NODE_PASS_QUIET_MS = 150;
const NODE_PASS_MAX_DELAY_MS = 2_000;
/** How many skipped nodes a pass's log line names. */
const MAX_SKIPPED_NAMED = 5;
/**
 * A peer that has not published its VTEP MAC yet (its agent starting, or a node joining) is said at
 * warn only once it has lasted this long: at start-up every node waits for the others' for a moment.
 */
const VTEP_MAC_GRACE_MS = 30_000;

/**
 * scope 'full': a whole pass (every peer, links, devices, the route table); 'node': one or more per-node
 * steps (handed over together when the worker runs out of work), whose report is the last full pass's with
 * the steps folded in (added/replaced/removed are the steps' own; unchanged, the programmed routes none of
 * them wrote). Absent scope means 'full'.
 */
export type PassOutcome =
  | { kind: 'waiting'; reason: string }
  | {
      kind: 'ok';
      report: ReconcileReport;
      durationMs: number;
      partial?: boolean;
      scope?: 'full' | 'node';
      /** scope 'node': the duration of each per-node step folded into this outcome (durationMs is their sum). */
      stepsMs?: readonly number[];
      /**
       * scope 'node': the routes programmed after the steps. Not added + replaced + unchanged when a
       * step removed a route an earlier one wrote; a full pass's report adds up to it.
       */
      programmed?: number;
      /** Full passes with a table to write: whether it was written (false: nft failed). */
      masqueradeApplied?: boolean;
    }
  | { kind: 'error'; error: string; durationMs: number; scope?: 'full' | 'node' };

/**
 * Level-triggered reconciler in the client-go controller shape. A Node watch event puts the node's NAME
 * in a queue (enqueue); the one worker takes a name, reads that node's CURRENT state from the cache (or
 * its absence) and makes that peer's routes match it (RouteReconciler.reconcilePeer: only the difference,
 * nothing at all when no relevant field changed, which is most MODIFIED events). Full passes re-read the
 * whole cache, the links, the devices and the route table: at start, after every (re)list (onSync), on the
 * periodic resync, on kernel route/link changes we did not make, on changes of this node, and whenever a
 * per-node step cannot decide safely (markDirty). Per-node steps and full passes never overlap (one
 * worker); a full pass drops the names queued before it started, since it covers them. While passes
 * wait (this node missing, or without pod CIDRs), no peer's step runs: a relist meanwhile names no
 * node, so steps would apply the watch's changes and not the relist's. Only a full pass ends a wait,
 * and it covers both.
 */
export class NodeController {
  private readonly deps: ControllerDeps;
  private dirty = true;
  /** Why the next full pass runs (its log line's `why`), gathered since the last one. */
  private why = new Set<string>(['start']);
  /**
   * Node names waiting for a per-node step, with when they were first queued (a name queued twice is
   * reconciled once; the step reads the cache as it is then).
   */
  private readonly queue = new Map<string, number>();
  /** The masquerade sync started by per-node steps, while it runs. */
  private masqRunning: Promise<void> | undefined;
  private masqAgain = false;
  /** What each Node gave the masquerade sets, for per-node changes of them. */
  private readonly masqGiven = new MasqGiven();
  /** The pod CIDRs the route planner refused, per node: left out of the masquerade's cluster destinations. */
  private refused = new Map<string, Set<string>>();
  /** A full pass has planned the routes since start: `refused` is known. */
  private planned = false;
  /** The clamp refusal last logged (noteClamp), so a lasting one is said once. */
  private clampRefusal: string | undefined;
  /**
   * Why the nftables table (masquerade, MSS clamp) could not be written the last time it was tried;
   * undefined once it was. Pods and routes work on without it, so nothing else would show it.
   */
  masqError: string | undefined;
  /**
   * Per-node steps not yet handed to onPass (flushNodePasses). `written`: the keys of the routes they
   * added or replaced that are still programmed (a later step may have removed one).
   */
  private nodePasses:
    | {
        report: () => ReconcileReport;
        added: number;
        replaced: number;
        removed: number;
        written: Set<string>;
        stepsMs: number[];
      }
    | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  /**
   * The problems (node NUL text) known as of the last full pass and the steps since: since when, and
   * whether they were said (sayProblems).
   */
  private saidProblems = new Map<string, { since: number; said: boolean; routed: boolean }>();
  /** Full passes' route failures and conflicts, said when they start, change and end. */
  private readonly routeTrouble: RouteTroubleLog;
  /** When the pending per-node outcomes must reach the hook at the latest (performance.now() ms). */
  private flushDeadline: number | undefined;
  /** This node as the last full pass that ran read it, or as it came back since with nothing a pass reads changed. */
  private lastSelf: ClusterNode | undefined;
  private wake: (() => void) | undefined;
  private failures = 0;
  /**
   * A change that may remedy a failed pass came since the last full pass started (markDirty's
   * endsBackoff): the retry runs at once, not after the backoff.
   */
  private remedy = false;
  private lastWaitReason: string | undefined;
  /** The last pod CIDR change left leases outside the ranges (a store failure): retry it. */
  private rangesIncomplete = false;
  /** The ranges came from the last run's memory (useRememberedRanges), not yet from the API. */
  private rangesRemembered = false;
  /** Leases a range change released whose veths are still to be removed (the removal failed). */
  private unremoved: Lease[] = [];
  private stopped = false;
  /** The job the worker is in and when it began (performance.now() ms): a hung one shows in /readyz. */
  private job: { what: string; since: number } | undefined;
  /** Resolves once the worker loop has exited. */
  done: Promise<void> = Promise.resolve();

  constructor(deps: ControllerDeps) {
    this.deps = deps;
    this.routeTrouble = new RouteTroubleLog(deps.log);
  }

  /**
   * Requests a full pass; `why` goes into its log line (several requests before it: all of them).
   * `endsBackoff`: the change may be what a failed pass was missing (a link's carrier back, this Node
   * changed), so a retry waiting out its backoff runs at once. Only for changes the agent's own passes
   * do not cause, or a failing pass could wake itself in a loop.
   */
  markDirty(why: string, endsBackoff = false): void {
    this.dirty = true;
    this.why.add(why);
    if (endsBackoff) this.remedy = true;
    this.wake?.();
  }

  /**
   * A watch event for Node `name`: reconcile that node from the cache. This node itself goes through the
   * queue too: most of its events are the kubelet's status heartbeats and our own condition patches, and
   * only a change of what a full pass reads from it (selfChanges) runs one.
   */
  enqueue(name: string): void {
    if (this.deps.routes.reconcilePeer === undefined) {
      this.markDirty(`node ${name} changed`);
      return;
    }
    if (!this.queue.has(name)) this.queue.set(name, performance.now());
    this.wake?.();
  }

  start(signal: AbortSignal): void {
    const resync = setInterval(() => {
      const masq = this.deps.masq;
      if (masq?.resync !== undefined) masq.resync();
      else masq?.invalidate();
      this.markDirty('periodic resync');
    }, this.deps.resyncMs);
    resync.unref();
    signal.addEventListener('abort', () => {
      this.stopped = true;
      clearInterval(resync);
      if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
      this.wake?.();
    });
    this.done = this.loop();
  }

  /** What the worker is in now, and for how long; undefined when it is idle or waiting out a backoff. */
  work(now = performance.now()): { what: string; forMs: number } | undefined {
    return this.job === undefined ? undefined : { what: this.job.what, forMs: now - this.job.since };
  }

  /** Runs one job of the worker, known to work() while it runs. */
  private async inJob<T>(what: string, run: () => Promise<T>): Promise<T> {
    this.job = { what, since: performance.now() };
    try {
      return await run();
    } finally {
      this.job = undefined;
    }
  }

  private async loop(): Promise<void> {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    while (!this.stopped) {
      try {
        await this.turn(sleep);
      } catch (err) {
        // Passes and steps catch their own failures; this is a bug around them (a hook that threw).
        // The loop must outlive it: a dead loop would leave routes stale while health stays green.
        this.deps.log.error(
          { error: errorText(err), stack: (err as Error | undefined)?.stack },
          'reconcile loop failed unexpectedly: a full pass follows',
        );
        await sleep(this.backoffDelay());
        this.markDirty('retry after a failure');
      }
    }
  }

  /** One turn of the loop: a per-node step, a wait for work, or a full pass (with its backoff). */
  private async turn(sleep: (ms: number) => Promise<void>): Promise<void> {
    if (!this.dirty && this.queue.size > 0) {
      const [name, queuedAt] = this.queue.entries().next().value as [string, number];
      this.queue.delete(name);
      await this.inJob(`the step of node ${name}`, () => this.runNode(name, queuedAt));
      return;
    }
    if (!this.dirty) {
      // Metrics and the coverage report a little after a burst of per-node steps, not after each one.
      this.flushNodePassesSoon();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
      return;
    }
    this.dirty = false;
    this.remedy = false;
    const why = [...this.why];
    this.why.clear();
    // The full pass reads the cache as it is now: it covers every name queued so far. The steps before
    // it reach the metrics hook before it does.
    this.queue.clear();
    this.flushNodePasses();
    const outcome = await this.inJob('a full pass', () => this.runOnce(why));
    if (outcome.kind === 'error' || (outcome.kind === 'ok' && outcome.partial)) {
      await this.backOff(sleep);
      this.markDirty(
        outcome.kind === 'error'
          ? 'retry after a failed pass'
          : 'retry of what the last pass could not change',
      );
    } else {
      this.failures = 0;
    }
  }

  /**
   * The wait before a failed or partial pass is retried. Per-node steps run meanwhile: one route or
   * the nft table that cannot be changed must not hold every other node's change for up to maxMs (a
   * step that needs a full pass marks it, and it waits for the retry). A remedy ends the wait.
   */
  private async backOff(sleep: (ms: number) => Promise<void>): Promise<void> {
    let over = false;
    const timer = sleep(this.backoffDelay()).then(() => {
      over = true;
    });
    while (!over && !this.stopped && !this.remedy) {
      if (this.queue.size > 0) {
        const [name, queuedAt] = this.queue.entries().next().value as [string, number];
        this.queue.delete(name);
        await this.inJob(`the step of node ${name}`, () => this.runNode(name, queuedAt));
        continue;
      }
      this.flushNodePassesSoon();
      await Promise.race([
        timer,
        new Promise<void>((resolve) => {
          this.wake = resolve;
        }),
      ]);
      this.wake = undefined;
    }
  }

  /** The capped exponential delay before the next try; counts the failure. */
  private backoffDelay(): number {
    const { initialMs, maxMs } = this.deps.backoff ?? { initialMs: 200, maxMs: 10_000 };
    const delay = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures, 16));
    this.failures++;
    return delay;
  }

  /**
   * One per-node step. Escalates (markDirty) when the cache is not synced yet, when the reconciler has no
   * clean full pass to work from, and whenever it says the change reaches beyond this peer or failed.
   * A peer's step is dropped while the last pass waited (see the class comment).
   */
  async runNode(name: string, queuedAt?: number): Promise<void> {
    const started = performance.now();
    const { deps } = this;
    const reconcilePeer = deps.routes.reconcilePeer;
    if (!deps.cluster.hasSynced() || reconcilePeer === undefined) {
      this.markDirty(`node ${name} changed before the first list`);
      return;
    }
    if (this.lastWaitReason !== undefined && name !== deps.nodeName) {
      deps.log.debug(
        { peer: name, reason: this.lastWaitReason },
        'node change left to the pass that ends the wait',
      );
      return;
    }
    const node = deps.cluster.get(name);
    if (name === deps.nodeName) {
      // Compared with the Node of the last pass that ran: while a pass waits (its pod CIDRs were taken
      // away), the Node coming back as it was is a change all the same.
      const waiting = this.lastWaitReason !== undefined;
      const changed =
        this.lastSelf === undefined || node === undefined
          ? ['node']
          : selfChanges(this.lastSelf, node, deps.ownAnnotations?.());
      if (!waiting && changed.length === 0 && node !== undefined) {
        // The new baseline: a pass would read the same from it. Else, on a Node that came with
        // NetworkUnavailable=True, our False coming back would leave the True in the baseline, and
        // someone setting it True again would read as no change until the next resync.
        this.lastSelf = node;
        deps.log.debug({ peer: name }, 'node unchanged');
        return;
      }
      deps.log.info({ changed }, 'this node changed; full pass');
      this.markDirty('this node changed', true);
      return;
    }
    let step: PeerStepOutcome;
    try {
      step = await reconcilePeer.call(deps.routes, name, node === undefined ? undefined : toPeerNode(node));
    } catch (err) {
      step = { kind: 'full', reason: errorText(err) };
    }
    if (step.kind === 'unchanged') {
      deps.log.debug({ peer: name }, 'node unchanged');
      return;
    }
    if (step.kind === 'full') {
      deps.log.info({ peer: name, reason: step.reason }, 'node change needs a full pass');
      this.markDirty(`node ${name}: ${step.reason}`);
      return;
    }
    // After the routes (their latency is what matters): a new node's pod CIDR must not stay masqueraded
    // for long, but the masquerade sets change beside the next steps, coalesced (masqSoon): a netlink
    // transaction of what this node added and took, or a whole nft apply. A failure there runs a full pass.
    // A refusal can also come or go with the CIDRs unchanged (an InternalIP moved into them).
    const refused = refusedCidrs(step.problems).get(name);
    const refusalChanged = !sameRefusal(this.refused.get(name), refused);
    if (refused === undefined) this.refused.delete(name);
    else this.refused.set(name, refused);
    deps.onPeerChanged?.(node, node === undefined ? [] : clusterCidrsOf(node, this.refused));
    const masq =
      deps.masq === undefined ? 'off' : step.cidrsChanged || refusalChanged ? 'scheduled' : 'unchanged';
    if (masq === 'scheduled') {
      this.masqGiven.markChanged(name);
      this.masqSoon();
    }
    const durationMs = round(performance.now() - started);
    const r = step.result;
    deps.log.info(
      {
        // `peer`, not `node`: every line already carries `node`, this agent's own (the logger's base).
        peer: name,
        changed: step.changed,
        added: r.added,
        replaced: r.replaced,
        removed: r.removed,
        neighbours: r.neighbours,
        fdb: r.fdb,
        masq,
        // Queued behind other work (a step, a full pass, the metrics hook) before this step started.
        ...(queuedAt === undefined ? {} : { queuedMs: round(started - queuedAt) }),
        durationMs,
      },
      'reconciled node',
    );
    // As a full pass says it (reconcile below), so that a node added unroutable is not silent until then.
    this.sayProblems(step.problems, { node: name });
    if (step.routeDevices !== undefined) deps.onRouteDevices?.(step.routeDevices);
    const p = this.nodePasses;
    const written = p?.written ?? new Set<string>();
    for (const k of step.routeKeys.removed) written.delete(k);
    for (const k of step.routeKeys.written) written.add(k);
    this.nodePasses = {
      report: step.report,
      added: (p?.added ?? 0) + r.added,
      replaced: (p?.replaced ?? 0) + r.replaced,
      removed: (p?.removed ?? 0) + r.removed,
      written,
      stepsMs: [...(p?.stepsMs ?? []), durationMs],
    };
  }

  /**
   * 'node skipped', once a problem: a peer without an InternalIP would otherwise be warned about at
   * every pass, per family. A full pass's list replaces the known ones, and what it no longer has is
   * said to be over; a step's list replaces its node's. A peer without a published VTEP MAC is a
   * start-up race at first (debug), a warning once it lasts VTEP_MAC_GRACE_MS. A problem of this node
   * itself (its own InternalIP on none of its interfaces, say) cuts its pods off from every peer in
   * that family: an error, said as such. A problem of a node routed all the same (`routed`: an
   * InternalIP another node claims too) is a warning of its own, and no skip.
   */
  /** `scope`: a full pass's problems (every node's), or one node's step's (`{ node }`: any name, 'full' too). */
  private sayProblems(
    problems: readonly { node: string; problem: string; routed?: true }[],
    scope: 'full' | { node: string },
  ): void {
    const log = this.deps.log;
    const now = performance.now();
    const only = scope === 'full' ? undefined : scope.node;
    const next = new Map(
      only === undefined ? [] : [...this.saidProblems].filter(([k]) => nodeOfKey(k) !== only),
    );
    for (const p of problems) {
      // Routed or not is part of the key: the same text (an InternalIP two nodes claim) of a peer first
      // skipped for another reason and routed later is said again as routed, and its end as such.
      const key = `${p.node}\0${p.routed === true ? 'routed' : ''}\0${p.problem}`;
      const known = this.saidProblems.get(key);
      const state = known ?? { since: now, said: false, routed: p.routed === true };
      if (!state.said) {
        if (state.routed) {
          log.warn({ peer: p.node, problem: p.problem }, 'node routed, with a problem (see problem)');
          state.said = true;
        } else if (p.node === this.deps.nodeName) {
          log.error(
            { problem: p.problem },
            "this node's own setup cuts its pods off from other nodes in a family (see problem)",
          );
          state.said = true;
        } else if (!p.problem.includes('has not published') || now - state.since >= VTEP_MAC_GRACE_MS) {
          log.warn({ peer: p.node, problem: p.problem }, 'node skipped');
          state.said = true;
        } else if (known === undefined) {
          log.debug({ peer: p.node, problem: p.problem }, 'node skipped for now (its agent may be starting)');
        }
      }
      next.set(key, state);
    }
    // A node skipped for two reasons is not routed when one of them ends: said so, not "no longer".
    const stillSkipped = new Map<string, string>();
    for (const [key, state] of next) if (!state.routed) stillSkipped.set(nodeOfKey(key), problemOfKey(key));
    for (const [key, state] of this.saidProblems) {
      if (!next.has(key) && state.said && (only === undefined || nodeOfKey(key) === only)) {
        const peer = nodeOfKey(key);
        const problem = problemOfKey(key);
        const still = state.routed ? undefined : stillSkipped.get(peer);
        if (state.routed) log.info({ peer, problem }, 'node problem over');
        else if (still === undefined) log.info({ peer, problem }, 'node no longer skipped');
        else
          log.info(
            { peer, problem, still },
            'a problem of the node is over; it is still skipped (see still)',
          );
      }
    }
    this.saidProblems = next;
  }

  /**
   * The metrics hook recomputes per-peer state over the whole cluster (milliseconds at thousands of
   * nodes, on the thread that also handles the next watch event): after NODE_PASS_QUIET_MS without a
   * step, or NODE_PASS_MAX_DELAY_MS after the first unflushed one under a steady stream of events.
   */
  private flushNodePassesSoon(): void {
    if (this.nodePasses === undefined) return;
    const now = performance.now();
    this.flushDeadline ??= now + NODE_PASS_MAX_DELAY_MS;
    const delay = Math.max(0, Math.min(NODE_PASS_QUIET_MS, this.flushDeadline - now));
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = setTimeout(() => {
      // Off the loop, whose catch would otherwise keep a hook's bug from ending the process.
      try {
        this.flushNodePasses();
      } catch (err) {
        this.deps.log.error(
          { error: errorText(err), stack: (err as Error | undefined)?.stack },
          "reporting the per-node steps' outcome failed unexpectedly",
        );
      }
    }, delay);
    this.flushTimer.unref();
  }

  /**
   * Hands the per-node steps since the last call to onPass as one outcome: the latest folded-in report
   * with the steps' summed counts. Recomputing per-peer metrics over thousands of peers costs milliseconds,
   * which a burst of Node events should pay once, not once per node.
   */
  private flushNodePasses(): void {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flushDeadline = undefined;
    const p = this.nodePasses;
    if (p === undefined) return;
    this.nodePasses = undefined;
    const folded = p.report();
    // folded.unchanged is every programmed route. added and replaced count the steps' writes, some of
    // which a later step may have undone (a peer added, then deleted): only `written` is still there.
    const report: ReconcileReport = {
      ...folded,
      added: p.added,
      replaced: p.replaced,
      removed: p.removed,
      unchanged: folded.unchanged - p.written.size,
    };
    const durationMs = round(p.stepsMs.reduce((a, b) => a + b, 0));
    this.deps.onPass?.({
      kind: 'ok',
      scope: 'node',
      report,
      programmed: folded.unchanged,
      durationMs,
      stepsMs: p.stepsMs,
    });
  }

  /**
   * Syncs the masquerade set from the cache as it is when the sync starts, MASQ_COALESCE_MS after the
   * first request (a burst of Node additions costs one nft run, not one each); while one runs, further
   * requests collapse into one more run after it. Runs beside per-node steps (nft and netlink do not
   * interact); full passes wait for it before their own sync.
   */
  private masqSoon(): void {
    if (this.masqRunning !== undefined) {
      this.masqAgain = true;
      return;
    }
    const run = async (): Promise<void> => {
      const { deps } = this;
      await new Promise<void>((r) => setTimeout(r, MASQ_COALESCE_MS));
      do {
        this.masqAgain = false;
        const self = deps.cluster.get(deps.nodeName);
        if (deps.masq === undefined || self === undefined || this.stopped) return;
        try {
          const started = performance.now();
          const outcome = await this.masqByNode(deps.masq, self);
          const fields = { masq: outcome, durationMs: round(performance.now() - started) };
          const refused = deps.masq.lastInPlaceError;
          if (outcome === 'applied' && refused !== undefined) {
            // The table was not as last written: someone else's change the watch has not reported yet.
            deps.log.info(
              { ...fields, inPlaceError: refused },
              'masquerade set could not be changed in place; applied the table whole',
            );
          } else {
            deps.log.debug(fields, 'masquerade set updated after a node change');
          }
          this.noteClamp();
          this.masqError = undefined;
        } catch (err) {
          this.masqError = errorText(err);
          deps.log.error({ error: this.masqError }, 'masquerade rules could not be applied');
          // The full pass retries it (and backs off if it keeps failing).
          this.markDirty('a masquerade change failed');
          return;
        }
      } while (this.masqAgain);
    };
    this.masqRunning = run().finally(() => {
      this.masqRunning = undefined;
    });
  }

  /**
   * The masquerade sets after per-node steps: only what the changed Nodes added and took away when
   * the syncer can do that (O(change), not O(cluster)), else a whole sync from the cache.
   */
  private async masqByNode(
    masq: NonNullable<ControllerDeps['masq']>,
    self: ClusterNode,
  ): Promise<'applied' | 'updated' | 'unchanged'> {
    const { deps } = this;
    const delta =
      masq.changeCluster === undefined
        ? undefined
        : this.masqGiven.take((n) => deps.cluster.get(n), deps.nodeName, this.refused);
    if (delta !== undefined) {
      const outcome = await masq.changeCluster!(delta.removed, delta.added);
      if (outcome !== 'unsupported') return outcome;
    }
    // Steps run while this sync awaits the kernel: the changes they mark are not in `nodes`, and the
    // refusals they replace in this.refused are not in what it gives (the copy, which it records).
    const nodes = deps.cluster.list();
    const refused = new Map(this.refused);
    this.masqGiven.forget();
    const outcome = await masq.sync(
      masqOptions(self, nodes, deps.noMasqueradeCIDRs, deps.tableRules, refused),
    );
    this.masqGiven.synced(nodes, refused);
    return outcome;
  }

  /** Logs a refusal of the MSS clamp when it starts or changes, and its end. */
  private noteClamp(): void {
    const refused = this.deps.masq?.clampRefused;
    if (refused === this.clampRefusal) return;
    if (refused !== undefined) {
      this.deps.log.warn(
        { error: refused, devices: this.deps.tableRules?.clampMssInto },
        'the kernel refused the TCP MSS clamp into the VXLAN devices (nft_exthdr, nft_rt?): masquerade is applied without it, and TCP into the tunnels relies on path MTU discovery',
      );
    } else {
      this.deps.log.info({ devices: this.deps.tableRules?.clampMssInto }, 'TCP MSS clamp applied');
    }
    this.clampRefusal = refused;
  }

  /**
   * The pod CIDRs the route planner accepted, every node's (this one's from the cache), as of the last
   * full pass and the steps since; undefined until a full pass planned (its refusals unknown till then).
   */
  acceptedPodCidrs(): string[] | undefined {
    if (!this.planned) return undefined;
    const out: string[] = [];
    for (const n of this.deps.cluster.list()) out.push(...clusterCidrsOf(n, this.refused));
    return out;
  }

  /** Why the last pass waited (the first list, a Node without pod CIDRs...), until a pass runs. */
  get waitReason(): string | undefined {
    return this.lastWaitReason;
  }

  /**
   * The API is unreachable at start: IPAM gets the pod CIDRs the last run saw, so ADD can be served.
   * The first pass that reads this Node confirms them (running onRangesSet, which was not run for
   * them) or changes them as any change goes.
   */
  useRememberedRanges(ranges: readonly string[]): void {
    this.deps.ipam.setRanges([...ranges]);
    this.rangesRemembered = true;
  }

  /**
   * One full pass, as the loop runs it (public for tests). `why`: what asked for it, for its log line
   * (at most the first MAX_WHY reasons, and how many more).
   */
  async runOnce(why: readonly string[] = []): Promise<PassOutcome> {
    const started = performance.now();
    const { deps } = this;
    const self = deps.cluster.get(deps.nodeName);
    const waitReason =
      !deps.cluster.hasSynced() && self === undefined
        ? FIRST_LIST_WAIT
        : self === undefined
          ? `Node ${deps.nodeName} is not in the API, or its object is unusable (see 'Node object skipped')`
          : self.podCIDRs.length === 0
            ? `Node ${deps.nodeName} has no spec.podCIDRs yet (is the controller-manager allocating node CIDRs?)`
            : undefined;
    if (waitReason !== undefined || self === undefined) {
      const reason = waitReason ?? 'own node unknown';
      // Every start waits for the first list for a moment: info. The other reasons need an operator;
      // an API that stays away is reported by the watch's own warnings. Said once per reason; the
      // passes that wait again on it are debug lines.
      const level = reason !== this.lastWaitReason ? (reason === FIRST_LIST_WAIT ? 'info' : 'warn') : 'debug';
      deps.log[level](
        {
          reason,
          ...(why.length === 0 ? {} : { why: whyField(why) }),
          durationMs: round(performance.now() - started),
        },
        'waiting before programming the node',
      );
      this.lastWaitReason = reason;
      const outcome: PassOutcome = { kind: 'waiting', reason };
      deps.onPass?.(outcome);
      return outcome;
    }
    this.lastWaitReason = undefined;
    this.lastSelf = self;
    try {
      await this.applyRanges(self);
      const nodes = deps.cluster.list();
      const report = await deps.routes.reconcile({
        synced: deps.cluster.hasSynced(),
        self: toSelfNode(self),
        peers: nodes.map(toPeerNode),
      });
      this.refused = refusedCidrs(report.problems);
      this.planned = true;
      let masq: 'applied' | 'updated' | 'unchanged' | 'failed' | 'off' = 'off';
      if (deps.masq !== undefined) {
        // One change of the table at a time: a per-node step's may still be in flight.
        await this.masqRunning;
        this.masqGiven.forget();
        // As masqByNode: what this sync gives, whatever a step replaces meanwhile.
        const refused = new Map(this.refused);
        try {
          masq = await deps.masq.sync(
            masqOptions(self, nodes, deps.noMasqueradeCIDRs, deps.tableRules, refused),
          );
          this.masqGiven.synced(nodes, refused);
          this.noteClamp();
          this.masqError = undefined;
        } catch (err) {
          // Masquerade matters for egress only; pods and routes keep working, the next pass retries.
          masq = 'failed';
          this.masqError = errorText(err);
          deps.log.error({ error: this.masqError }, 'masquerade rules could not be applied');
        }
      }
      // What the routes came to is said whatever the follow-up does: the kernel has it already.
      this.sayProblems(report.problems, 'full');
      this.routeTrouble.pass([
        ...report.conflicts.map((c) => ({
          key: `conflict ${c.desired.dst}`,
          msg: 'route not programmed: its prefix is held by a route trellis does not own',
          fields:
            c.existing.unreadable === true
              ? { route: c.desired.dst, holder: UNREADABLE_HOLDER }
              : { route: c.desired.dst, protocol: c.existing.protocol, gateway: c.existing.gateway },
        })),
        ...report.errors.map((e) => ({
          key: `error ${e.route.dst}`,
          msg: 'route could not be programmed',
          fields: { route: e.route.dst, error: errorText(e.error) },
          reason: errnoOf(e.error),
        })),
        ...(report.overlay?.errors ?? []).map((e) => ({
          key: `overlay ${e.op} ${e.what}`,
          msg: 'VXLAN overlay change failed',
          fields: { op: e.op, what: e.what, error: errorText(e.error) },
          reason: errnoOf(e.error),
        })),
      ]);
      // Before the pass's line: a pass whose follow-up (the config list, the MTU) fails logs one
      // 'reconcile failed' line, not a 'reconciled' one and then that; its time counts.
      await deps.onSynced(self, report);
      const durationMs = round(performance.now() - started);
      const level = report.errors.length > 0 || masq === 'failed' ? 'warn' : 'info';
      deps.log[level](
        {
          nodes: nodes.length,
          added: report.added,
          replaced: report.replaced,
          removed: report.removed,
          unchanged: report.unchanged,
          removalsDeferred: report.removalsDeferred,
          routeErrors: report.errors.length,
          // Routes not written: their tunnel entries refused, or waiting for this node's InternalIP.
          ...(report.heldBack === undefined ? {} : { heldBack: report.heldBack.length }),
          conflicts: report.conflicts.length,
          problems: report.problems.length,
          // Who is cut off, on every pass while it lasts (the warning is said once): the first few.
          ...skippedField(report.problems),
          masq,
          // The kernel held exactly the routes of the last pass and the steps since, for the same inputs.
          ...(report.quiet === true ? { quiet: true } : {}),
          // VXLAN neighbour and FDB entries written or removed (a peer changed, or someone else's change undone).
          ...(report.overlay === undefined || report.overlay.added + report.overlay.removed === 0
            ? {}
            : { overlayAdded: report.overlay.added, overlayRemoved: report.overlay.removed }),
          ...(report.nexthopsPruned === undefined ? {} : { nexthopsPruned: report.nexthopsPruned }),
          ...(why.length === 0 ? {} : { why: whyField(why) }),
          durationMs,
        },
        'reconciled',
      );
      // Some change failed (a route, the overlay, nft): the pass still counts, and the loop retries it
      // after a backoff rather than at once (such failures tend to persist for a while).
      // Routes held back for an InternalIP off its link: retried until it is back or the hold ends (an
      // address widened by an on-link prefix comes back without a connected route to wake a pass).
      const partial =
        report.errors.length > 0 ||
        (report.overlay?.errors.length ?? 0) > 0 ||
        (report.heldBack?.length ?? 0) > 0 ||
        masq === 'failed';
      const outcome: PassOutcome = {
        kind: 'ok',
        report,
        durationMs,
        partial,
        scope: 'full',
        ...(masq === 'off' ? {} : { masqueradeApplied: masq !== 'failed' }),
      };
      deps.onPass?.(outcome);
      return outcome;
    } catch (err) {
      const durationMs = round(performance.now() - started);
      deps.log.error(
        { error: errorText(err), ...(why.length === 0 ? {} : { why: whyField(why) }), durationMs },
        'reconcile failed',
      );
      const outcome: PassOutcome = { kind: 'error', error: errorText(err), durationMs, scope: 'full' };
      deps.onPass?.(outcome);
      return outcome;
    }
  }

  private async applyRanges(self: ClusterNode): Promise<void> {
    const current = this.deps.ipam.ranges();
    const unchanged = sameList(current, self.podCIDRs);
    if (unchanged && !this.rangesIncomplete && !this.rangesRemembered && this.unremoved.length === 0) return;
    let invalidated: Lease[];
    let failure: RangeChangeError | undefined;
    try {
      invalidated = this.deps.ipam.setRanges([...self.podCIDRs]);
    } catch (err) {
      // Some leases outside could not be released (their store failed): the ones that were still
      // have their veths removed now, and the next pass tries the rest again.
      if (!(err instanceof RangeChangeError)) throw err;
      failure = err;
      invalidated = err.released;
    }
    this.rangesIncomplete = failure !== undefined;
    this.deps.log.info(
      { from: current, to: self.podCIDRs, invalidatedLeases: invalidated.length },
      current.length === 0
        ? 'pod CIDRs known'
        : !unchanged
          ? 'pod CIDRs changed'
          : this.rangesRemembered
            ? 'pod CIDRs confirmed by the API (ADD was served with them from the last run)'
            : 'pod CIDR change retried',
    );
    // An earlier pass's removal that failed goes again (the leases are released already, so nothing
    // else would), except where the attachment has been set up again since (a lease of its key).
    const toRemove = [...this.unremoved.filter((l) => this.deps.ipam.get(l) === undefined), ...invalidated];
    if (toRemove.length > 0) {
      try {
        await this.deps.onLeasesInvalidated(toRemove);
        this.unremoved = [];
      } catch (err) {
        this.unremoved = toRemove;
        throw err;
      }
      // Each one named: these pods have lost their network until the runtime recreates them.
      this.deps.log.warn(
        {
          leases: toRemove.map((l) => ({
            ...leaseLogFields(l),
            addresses: l.addresses.map((a) => a.address),
          })),
        },
        PODS_TO_RECREATE,
      );
    }
    if (failure !== undefined) throw failure;
    try {
      await this.deps.onRangesSet?.(self.podCIDRs);
      this.rangesRemembered = false;
    } catch (err) {
      // What the new ranges need on the node (forwarding for their families) is not in place: the
      // next pass tries again rather than finding the ranges unchanged and going on without it.
      this.rangesIncomplete = true;
      throw err;
    }
  }
}

/**
 * The annotations of a Node that the routes depend on (its VTEP MACs, the subnets it routes directly
 * on): the only ones the agent's Node cache keeps (NodeInformerOptions.annotations).
 */
export const ROUTING_ANNOTATIONS: readonly string[] = Object.freeze([
  ...Object.values(VTEP_MAC_ANNOTATIONS),
  ...Object.values(DIRECT_SUBNET_ANNOTATIONS),
]);

/**
 * What of this node a full pass would act on changed, by name (for the pass's log line; empty: no pass):
 * its pod CIDRs (IPAM ranges, blackholes), its InternalIPs (MTU, VXLAN source address) or the annotations
 * it publishes (VTEP MACs, direct subnets: the pass republishes them when they are missing or wrong).
 * Labels, conditions, heartbeats and other annotations (the agent's own coverage report among them) are
 * not read by a pass. An annotation that now reads as `ownAnnotations` says (the agent's own publication
 * coming back) is no change: the pass that published it has nothing left to do for it (at start-up, at
 * 5,000 nodes, another ~0.7 s pass).
 */
export function selfChanges(
  before: ClusterNode,
  now: ClusterNode,
  ownAnnotations?: Readonly<Record<string, string | undefined>>,
): string[] {
  const changed: string[] = [];
  // Deleted and made again (both events read as one): its condition and annotations are the pass's to
  // write again, whatever the new object says.
  if (before.uid !== now.uid) changed.push('uid');
  if (!sameList(before.podCIDRs, now.podCIDRs)) changed.push('podCIDRs');
  if (!sameList(before.internalIPs, now.internalIPs)) changed.push('internalIPs');
  // Set True by someone else: the pass's end puts it back (node-status.ts). Our own False is no news.
  if (now.networkUnavailable !== undefined && before.networkUnavailable === undefined)
    changed.push('NetworkUnavailable');
  for (const k of ROUTING_ANNOTATIONS) {
    const value = now.annotations?.[k];
    if (before.annotations?.[k] === value) continue;
    if (ownAnnotations !== undefined && k in ownAnnotations && ownAnnotations[k] === value) continue;
    changed.push(k);
  }
  return changed;
}

/**
 * This node as the planner reads it: without the annotations it publishes, which only peers read
 * (a pass plans nothing from its own VTEP MACs or direct subnets), so that its own publication coming
 * back leaves the next pass's inputs as they were (describesInputs: a quiet pass, not a new plan).
 */
const selves = new WeakMap<ClusterNode, PeerNode>();

export function toSelfNode(n: ClusterNode): PeerNode {
  let p = selves.get(n);
  if (p === undefined) {
    p = { name: n.name, podCIDRs: n.podCIDRs, internalIPs: n.internalIPs };
    selves.set(n, p);
  }
  return p;
}

/**
 * The planner's record of a node, made once per node record: ClusterNode records are immutable (the
 * informer replaces a Node's view when the Node changes), and every full pass converts the whole cache,
 * thousands of fresh objects a pass otherwise.
 */
const peers = new WeakMap<ClusterNode, PeerNode>();

export function toPeerNode(n: ClusterNode): PeerNode {
  let p = peers.get(n);
  if (p === undefined) {
    p = {
      name: n.name,
      podCIDRs: n.podCIDRs,
      internalIPs: n.internalIPs,
      vtepMacs: vtepMacsFromAnnotations(n.annotations),
      directSubnets: directSubnetsFromAnnotations(n.annotations),
    };
    peers.set(n, p);
  }
  return p;
}

export function masqOptions(
  self: ClusterNode,
  nodes: readonly ClusterNode[],
  noMasqueradeCIDRs: readonly string[],
  rules: TableRules = { masquerade: true, clampMssInto: [], tunnels: [], sourceCheck: false },
  refused: RefusedCidrs = new Map(),
): MasqOptions {
  // Unsorted and not deduplicated: the planner merges the ranges (duplicates included), and an order
  // that stays the same from one Node event to the next lets the syncer see an unchanged list cheaply.
  const cluster: string[] = [];
  for (const n of nodes) for (const c of clusterCidrsOf(n, refused)) cluster.push(c);
  for (const c of self.podCIDRs) cluster.push(c);
  return {
    podCIDRs: {
      v4: self.podCIDRs.filter((c) => familyOfText(c) === 4),
      v6: self.podCIDRs.filter((c) => familyOfText(c) === 6),
    },
    clusterCIDRs: cluster,
    noMasqueradeCIDRs: [...noMasqueradeCIDRs],
    masquerade: rules.masquerade,
    clampMssInto: [...rules.clampMssInto],
    tunnels: [...rules.tunnels],
    sourceCheck: rules.sourceCheck,
  };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Reasons a pass's log line lists: a burst of kernel or Node changes can gather many. */
const MAX_WHY = 5;

function whyField(why: readonly string[]): string[] {
  return why.length <= MAX_WHY ? [...why] : [...why.slice(0, MAX_WHY), `and ${why.length - MAX_WHY} more`];
}

/** Who is cut off (the first few), for a pass's line: problems of nodes routed all the same are not. */
function skippedField(problems: readonly { node: string; routed?: true }[]): { skipped?: string[] } {
  const skipped = [...new Set(problems.filter((p) => p.routed !== true).map((p) => p.node))];
  return skipped.length === 0 ? {} : { skipped: skipped.slice(0, MAX_SKIPPED_NAMED) };
}

/** The node of a saidProblems key. */
function nodeOfKey(key: string): string {
  return key.slice(0, key.indexOf('\0'));
}

/** An error's errno name (ENETDOWN), or its text when it has none: what a repeat is compared on. */
function errnoOf(err: unknown): string {
  const e = err as { errno?: unknown; code?: unknown } | undefined;
  if (typeof e?.errno === 'string') return e.errno; // NetlinkError
  return typeof e?.code === 'string' ? e.code : errorText(err);
}

/** The problem's text in a saidProblems key (node NUL routed NUL problem). */
function problemOfKey(key: string): string {
  return key.slice(key.indexOf('\0', key.indexOf('\0') + 1) + 1);
}
