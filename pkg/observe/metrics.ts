/**
 * The agent's Prometheus metrics, on a Registry of their own (never prom-client's global one, so two
 * agents in one test process, or a library that registers defaults, cannot collide).
 *
 * Event metrics (CNI calls, reconcile passes, reclaimed leases) are fed by the agent's hooks; state
 * metrics (IPAM use, watch restarts, readiness) are read from the agent at scrape time through a
 * `MetricsSource`, so they can never drift from what the agent holds.
 */
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';
import type { CniCallRecord } from '../agent/cni-service.ts';
import type { PassOutcome } from '../agent/controller.ts';
import { CNI_COMMANDS, isCniCommand } from '../cni/env.ts';
import type { PreparedOutcome } from '../datapath/prepared-pairs.ts';
import type { NodesEncoding } from '../k8s/transport.ts';
import { type PeerRouteState, type PeerStateCache, peerRouteStates } from '../ops/peer-coverage.ts';
import { PassStanding } from './pass-standing.ts';

// The four prom-client classes the agent uses, loaded from their own files. prom-client's index also
// loads its Pushgateway (node:https, zlib), Summary, the default process metrics and @opentelemetry/api
// (for exemplars): ~15 MB RSS and 2 MB of heap at start (require of the index: 63.0 MB RSS, of these
// four files: 48.0 MB; an idle node is 45 MB). The types still come from the package's index.
const load = createRequire(import.meta.url);
const Registry: typeof Prom.Registry = load('prom-client/lib/registry');
const Counter: typeof Prom.Counter = load('prom-client/lib/counter');
const Gauge: typeof Prom.Gauge = load('prom-client/lib/gauge');
const Histogram: typeof Prom.Histogram = load('prom-client/lib/histogram');

/** What the metrics read from the agent at scrape time. */
export interface MetricsSource {
  /** Per pod CIDR: capacity (reserved addresses excluded) and addresses in use. */
  ipamUsage(): readonly { family: 4 | 6; range: string; capacity: bigint | number; used: number }[];
  /** The node watch's restart count; undefined in standalone mode (no watch). */
  watchRestarts(): number | undefined;
  ready(): boolean;
  /**
   * The host firewall's forward chains that drop pod traffic (pkg/firewall); [] when none or never
   * read. A legacy table the last check could not read counts with its drops as last read.
   */
  forwardFirewallBlocks?(): readonly { family: 4 | 6; direction: string; chain: string }[];
  /** Config files in the conf dir that sort before trellis's; [] when it is first. */
  cniConfigShadowedBy?(): readonly string[];
  /** How the API server last answered the Node list or watch; undefined before it did, or standalone. */
  nodesEncoding?(): NodesEncoding | undefined;
}

export type ReclaimReason = 'startup-sweep' | 'api-gc' | 'cni-gc' | 'held-gone';

/**
 * The agent's share of a CNI call: ADD ~2-3 ms, DEL ~1.5 ms (its veth goes after the answer), 10-35 ms
 * inside bursts of concurrent ADDs (bench/README.md); the tail up to 5 s. Beyond: an ADD waiting for
 * a restarted agent (up to 15 s) and calls near the shim's timeout (60 s by default).
 */
export const CNI_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 5, 15, 30, 60,
];
/** A pass is a route dump plus a diff: milliseconds on small clusters, up to seconds at 5,000 nodes. */
export const RECONCILE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface AgentMetricsOptions {
  version: string;
  nodeName: string;
  /** process.version by default. */
  runtimeVersion?: string;
  /** At most this many trellis_peer_route_broken series (MAX_BROKEN_PEER_SERIES by default). */
  maxBrokenPeerSeries?: number;
}

/**
 * Per-peer series name the first broken peers and families only (by peer name): a lasting degraded setup (peers on
 * another L2 in host-gw mode, a dual-stack cluster whose Nodes list only IPv4 InternalIPs) breaks
 * every peer at once, and a series per peer on every node would again be N² in the cluster.
 * trellis_peers{state="broken"} counts them all.
 */
export const MAX_BROKEN_PEER_SERIES = 50;

export class AgentMetrics {
  readonly registry = new Registry();
  private source: MetricsSource | undefined;
  private readonly nodeName: string;
  private lastPeers: readonly PeerRouteState[] = [];
  /** The trellis_peer_route_broken series written, by peer, family and path. */
  private brokenShown = new Map<string, PeerRouteState>();
  private readonly maxBrokenPeerSeries: number;
  /** Per-peer states by decision object (see PeerStateCache): unchanged peers keep their objects. */
  private readonly stateCache: PeerStateCache = new WeakMap();

  private readonly cniCalls: Prom.Counter<'verb' | 'outcome'>;
  private readonly cniErrors: Prom.Counter<'verb' | 'code'>;
  private readonly cniDuration: Prom.Histogram<'verb'>;
  private readonly reclaimed: Prom.Counter<'reason'>;
  private readonly preparedPairs: Prom.Counter<'outcome'>;
  private readonly passes: Prom.Counter<'outcome'>;
  private readonly passDuration: Prom.Histogram;
  private readonly nodeSteps: Prom.Counter;
  private readonly nodeStepDuration: Prom.Histogram;
  private readonly routes: Prom.Gauge<'state'>;
  private readonly routeOps: Prom.Counter<'op'>;
  private readonly peerBroken: Prom.Gauge<'peer' | 'family' | 'path'>;
  private readonly peerCount: Prom.Gauge<'family' | 'path' | 'state'>;
  private readonly lastSuccess: Prom.Gauge;
  private readonly standing = new PassStanding();
  private readonly masqFailures: Prom.Counter;

  constructor(opts: AgentMetricsOptions) {
    const registers = [this.registry];
    this.nodeName = opts.nodeName;
    this.maxBrokenPeerSeries = opts.maxBrokenPeerSeries ?? MAX_BROKEN_PEER_SERIES;
    new Gauge({
      name: 'trellis_build_info',
      help: 'Always 1; the labels say which trellis and which runtime this agent is.',
      labelNames: ['version', 'node_version'],
      registers,
    }).set({ version: opts.version, node_version: opts.runtimeVersion ?? process.version }, 1);

    this.cniCalls = new Counter({
      name: 'trellis_cni_calls_total',
      help: 'CNI calls the agent answered, by verb and outcome.',
      labelNames: ['verb', 'outcome'],
      registers,
    });
    // Every verb and outcome from 0: `increase(...{outcome="error"}[10m]) > 0` then fires on the first
    // failure of a verb too, which a series born at 1 would never show as an increase.
    for (const verb of CNI_COMMANDS) {
      if (verb === 'VERSION') continue;
      for (const outcome of ['ok', 'error']) this.cniCalls.inc({ verb, outcome }, 0);
    }
    this.cniErrors = new Counter({
      name: 'trellis_cni_errors_total',
      help: 'Failed CNI calls by verb and CNI error code.',
      labelNames: ['verb', 'code'],
      registers,
    });
    this.cniDuration = new Histogram({
      name: 'trellis_cni_call_duration_seconds',
      help: 'Time the agent took to answer a CNI call (socket request to response).',
      labelNames: ['verb'],
      buckets: CNI_BUCKETS,
      registers,
    });
    this.reclaimed = new Counter({
      name: 'trellis_ipam_leases_reclaimed_total',
      help: 'Leases released by garbage collection (start-up sweep, API-driven GC, CNI GC).',
      labelNames: ['reason'],
      registers,
    });
    this.preparedPairs = new Counter({
      name: 'trellis_prepared_veth_pairs_total',
      help: 'Veth pairs made when a pod namespace appeared (--netns-dir), by what became of them: used by its ADD, expired, gone with the namespace, failed, skipped (the agent busy or 64 waiting), unsuitable (made for other IP families than the lease).',
      labelNames: ['outcome'],
      registers,
    });
    this.passes = new Counter({
      name: 'trellis_reconcile_total',
      help: 'Reconcile passes by outcome (ok, error, waiting for the node to have pod CIDRs).',
      labelNames: ['outcome'],
      registers,
    });
    this.passDuration = new Histogram({
      name: 'trellis_reconcile_duration_seconds',
      help: 'Duration of reconcile passes that ran (ok or error).',
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    this.nodeSteps = new Counter({
      name: 'trellis_reconcile_node_total',
      help: 'Per-node reconcile steps that changed something (one Node changed; full passes are trellis_reconcile_total).',
      registers,
    });
    this.nodeStepDuration = new Histogram({
      name: 'trellis_reconcile_node_duration_seconds',
      help: 'Duration of per-node reconcile steps (routes, overlay entries, masquerade update).',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.routes = new Gauge({
      name: 'trellis_routes',
      help: 'Inter-node and blackhole routes after the last pass: desired, programmed (in the kernel as desired), failed, conflicting.',
      labelNames: ['state'],
      registers,
    });
    this.routeOps = new Counter({
      name: 'trellis_route_changes_total',
      help: 'Kernel route changes made by reconcile passes, and failed ones (op="error").',
      labelNames: ['op'],
      registers,
    });
    // From 0, as the CNI calls: an alert on increase() must see a start's first failed pass too.
    for (const outcome of ['ok', 'error', 'waiting']) this.passes.inc({ outcome }, 0);
    for (const op of ['add', 'replace', 'remove', 'error']) this.routeOps.inc({ op }, 0);
    // Per-peer series only for peers that are not fully routed: one series per peer on every node would
    // be N² series in the cluster (25 million at 5,000 nodes) and a scrape of 5,000 series per agent. The
    // whole picture is in the counts; which peers are fine is the absence of a series.
    this.peerBroken = new Gauge({
      name: 'trellis_peer_route_broken',
      help: `1 for a peer (per family) some pod CIDR of which is not routed after the last pass; no series when it is; at most ${this.maxBrokenPeerSeries} series (peer and family), by peer name (trellis_peers counts all). path is direct, vxlan, unreachable or skipped.`,
      labelNames: ['peer', 'family', 'path'],
      registers,
    });
    this.peerCount = new Gauge({
      name: 'trellis_peers',
      help: 'Peers (per family) after the last pass, by path and by state: ok when every pod CIDR of the peer is routed, broken when not.',
      labelNames: ['family', 'path', 'state'],
      registers,
    });
    this.lastSuccess = new Gauge({
      name: 'trellis_reconcile_last_success_timestamp_seconds',
      help: 'Unix time of the last successful reconcile pass.',
      registers,
    });
    // A counter that starts at 0: `increase(...) > 0` fires on the first failure too.
    this.masqFailures = new Counter({
      name: 'trellis_masquerade_failures_total',
      help: 'Full passes that could not write the nftables table (masquerade, MSS clamp, source check): until one does, pods leave the cluster unmasqueraded and their sources go unchecked.',
      registers,
    });

    const self = this;
    new Gauge({
      name: 'trellis_ipam_capacity',
      help: 'Addresses a pod CIDR can hand out (network, gateway and broadcast excluded).',
      labelNames: ['family', 'range'],
      registers,
      collect() {
        this.reset();
        for (const u of self.source?.ipamUsage() ?? []) {
          this.set({ family: String(u.family), range: u.range }, Number(u.capacity));
        }
      },
    });
    new Gauge({
      name: 'trellis_ipam_used',
      help: 'Addresses leased to pods, per pod CIDR.',
      labelNames: ['family', 'range'],
      registers,
      collect() {
        this.reset();
        for (const u of self.source?.ipamUsage() ?? []) {
          this.set({ family: String(u.family), range: u.range }, u.used);
        }
      },
    });
    let restartsSeen = 0;
    new Counter({
      name: 'trellis_node_watch_restarts_total',
      help: 'Times the Node watch restarted after a failure (0 in standalone mode, which has no watch).',
      registers,
      collect() {
        // The informer counts; the counter follows it (it only ever grows).
        const n = self.source?.watchRestarts() ?? restartsSeen;
        if (n > restartsSeen) this.inc(n - restartsSeen);
        restartsSeen = Math.max(restartsSeen, n);
      },
    });
    new Gauge({
      name: 'trellis_host_firewall_drops',
      help: "1 per forward chain of the host's own firewall (iptables FORWARD, firewalld, ufw, Docker) that drops this node's pod traffic (direction from-pods, to-pods), and per input chain that drops the VXLAN packets of the nodes it tunnels to (vxlan-in), by family; no series when none does. The agent's log and trellis-agent doctor give the fix.",
      labelNames: ['family', 'direction', 'chain'],
      registers,
      collect() {
        this.reset();
        for (const b of self.source?.forwardFirewallBlocks?.() ?? []) {
          this.set({ family: String(b.family), direction: b.direction, chain: b.chain }, 1);
        }
      },
    });
    new Gauge({
      name: 'trellis_node_watch_encoding',
      help: '1 for the encoding the API server last answered the Node list or watch in: protobuf, or json (a server or proxy without protobuf, the client-node fallback, or after a protobuf answer the agent could not read: its log says so); no series before the first answer or in standalone mode.',
      labelNames: ['encoding'],
      registers,
      collect() {
        this.reset();
        const encoding = self.source?.nodesEncoding?.();
        if (encoding !== undefined) this.set({ encoding }, 1);
      },
    });
    new Gauge({
      name: 'trellis_cni_config_shadowed',
      help: "Config files in the CNI conf dir that sort before trellis's and take its pods, as of the last reconcile pass (a Multus config handing pods on to trellis does not count): containerd and CRI-O use the first, so above 0 new pods get another network. The agent's log names them.",
      registers,
      collect() {
        this.set(self.source?.cniConfigShadowedBy?.().length ?? 0);
      },
    });
    new Gauge({
      name: 'trellis_agent_ready',
      help: '1 when the agent serves ADD (pod CIDRs known, routes synced, CNI config published).',
      registers,
      collect() {
        this.set(self.source?.ready() === true ? 1 : 0);
      },
    });
  }

  /** The agent, once it exists (it is built with these metrics' hooks). */
  bind(source: MetricsSource): void {
    this.source = source;
  }

  onCniCall = (record: CniCallRecord): void => {
    // A label, so only the verbs CNI defines: a request that failed validation may carry anything.
    const verb = isCniCommand(record.verb) ? record.verb : 'unknown';
    this.cniCalls.inc({ verb, outcome: record.outcome });
    if (record.outcome === 'error') this.cniErrors.inc({ verb, code: String(record.code ?? 999) });
    this.cniDuration.observe({ verb }, record.durationMs / 1000);
  };

  onPreparedPair = (outcome: PreparedOutcome): void => {
    this.preparedPairs.inc({ outcome });
  };

  onLeasesReclaimed = (reason: ReclaimReason, count: number): void => {
    if (count > 0) this.reclaimed.inc({ reason }, count);
  };

  onPass = (outcome: PassOutcome, now: () => number = Date.now): void => {
    const judged = this.standing.judge(outcome);
    if (outcome.kind !== 'waiting' && outcome.scope === 'node') {
      // Per-node steps' report is the full picture with the steps folded in: the gauges below apply.
      const steps = outcome.kind === 'ok' ? (outcome.stepsMs ?? [outcome.durationMs]) : [outcome.durationMs];
      this.nodeSteps.inc(steps.length);
      for (const ms of steps) this.nodeStepDuration.observe(ms / 1000);
    } else {
      this.passes.inc({ outcome: outcome.kind });
      if (outcome.kind === 'waiting') return;
      this.passDuration.observe(outcome.durationMs / 1000);
    }
    if (outcome.kind === 'error') return;
    if (outcome.masqueradeApplied === false) this.masqFailures.inc();
    const r = outcome.report;
    // added and replaced count the writes that succeeded (applyRouteDiff); a failed add or replace is
    // only in errors, and still desired. A failed remove is a route nobody wants.
    const failedWrites = r.errors.filter((e) => e.op !== 'remove').length;
    const programmed = outcome.programmed ?? r.added + r.replaced + r.unchanged;
    this.routes.set({ state: 'desired' }, programmed + failedWrites + r.conflicts.length);
    this.routes.set({ state: 'programmed' }, programmed);
    this.routes.set({ state: 'failed' }, r.errors.length);
    this.routes.set({ state: 'conflict' }, r.conflicts.length);
    this.routeOps.inc({ op: 'add' }, r.added);
    this.routeOps.inc({ op: 'replace' }, r.replaced);
    this.routeOps.inc({ op: 'remove' }, r.removed);
    // A step's report carries the last full pass's refused routes (folded in): not new failures.
    if (outcome.scope !== 'node') this.routeOps.inc({ op: 'error' }, r.errors.length);
    // A quiet pass found the state of the outcome these came from (nothing planned or changed since).
    const peers = r.quiet === true ? this.lastPeers : peerRouteStates(r, this.nodeName, this.stateCache);
    this.updatePeerSeries(peers);
    this.lastPeers = peers;
    // A step's success while a failed full pass stands is no reconcile success (pass-standing.ts).
    if (judged.kind === 'ok') this.lastSuccess.set(now() / 1000);
  };

  /**
   * Writes only the series that changed. A per-node step changes one peer, and the metrics hook runs on
   * the thread that handles the next Node event: at 5,000 peers, resetting every series cost ~7 ms
   * (label hashing). Only the first maxBrokenPeerSeries broken peers (the list is sorted by
   * comparePeerStates) are keyed and compared.
   */
  private updatePeerSeries(peers: readonly PeerRouteState[]): void {
    const counts = new Map<string, { family: string; path: string; state: string; n: number }>();
    for (const p of peers) {
      const state = p.ok ? 'ok' : 'broken';
      const key = `${p.family} ${p.path} ${state}`;
      const c = counts.get(key);
      if (c === undefined) counts.set(key, { family: p.family, path: p.path, state, n: 1 });
      else c.n++;
    }
    this.peerCount.reset();
    for (const c of counts.values())
      this.peerCount.set({ family: c.family, path: c.path, state: c.state }, c.n);

    const shown = new Map<string, PeerRouteState>();
    for (const p of peers) {
      if (shown.size >= this.maxBrokenPeerSeries) break;
      if (!p.ok) shown.set(`${p.peer}\0${p.family}\0${p.path}`, p);
    }
    const series = (p: PeerRouteState) => ({ peer: p.peer, family: p.family, path: p.path });
    for (const [key, p] of this.brokenShown) if (!shown.has(key)) this.peerBroken.remove(series(p));
    for (const [key, p] of shown) if (!this.brokenShown.has(key)) this.peerBroken.set(series(p), 1);
    this.brokenShown = shown;
  }

  /** Per-peer route state of the last successful pass (the node's coverage report uses it too). */
  peers(): readonly PeerRouteState[] {
    return this.lastPeers;
  }

  /** The text exposition format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
