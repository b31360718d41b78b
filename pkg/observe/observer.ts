/**
 * Everything that watches the agent from outside: metrics, health verdicts, the Node coverage
 * annotation, and the two listeners that serve them (--metrics-addr, the admin socket). cmd/agent
 * builds one, passes its hooks to the Agent and attaches it, opens the metrics listener (listen), starts
 * the Agent, then starts the rest (start).
 */
import type { Agent, AgentHooks } from '../agent/agent.ts';
import type { CniCallRecord } from '../agent/cni-service.ts';
import type { PassOutcome } from '../agent/controller.ts';
import type { NodeStatusWriter } from '../k8s/index.ts';
import { NodeReporter } from '../ops/node-report.ts';
import { missingPeers } from '../ops/peer-coverage.ts';
import { leasesView, routesView, statusView } from '../ops/views.ts';
import { AgentHealth } from './agent-health.ts';
import { FailureLog } from './failure-log.ts';
import { type HttpListener, startAdminServer, startMetricsServer } from './http-server.ts';
import type { Logger } from './logger.ts';
import { AgentMetrics } from './metrics.ts';
import { PassStanding } from './pass-standing.ts';

export interface ObserverOptions {
  nodeName: string;
  version: string;
  /** host:port; '' disables the metrics and health listener. */
  metricsAddr: string;
  /** '' disables the admin socket. */
  adminSocket: string;
  /** Kubernetes mode: the coverage annotation is written on the own Node. */
  kube: Pick<NodeStatusWriter, 'annotateNode'> | undefined;
  log: Logger;
}

export class AgentObserver {
  readonly metrics: AgentMetrics;
  readonly health: AgentHealth;
  private readonly opts: ObserverOptions;
  private readonly reporter: NodeReporter | undefined;
  private agent: Agent | undefined;
  private readonly listeners: HttpListener[] = [];
  private listening = false;
  /** Which outcome the coverage annotation reports: a failed full pass until a good one. */
  private readonly standing = new PassStanding();
  /** The last pass's outcome as judged by `standing` (undefined before the first). */
  private outcome: ReturnType<PassStanding['judge']> | undefined;
  /** The reconcile job found stuck, for the annotation (undefined: none). */
  private stuck: string | undefined;

  constructor(opts: ObserverOptions) {
    this.opts = opts;
    this.metrics = new AgentMetrics({ version: opts.version, nodeName: opts.nodeName });
    this.health = new AgentHealth({
      source: {
        notReadyReason: () =>
          this.agent === undefined ? 'the agent has not started' : this.agent.notReadyReason(),
        watch: () => this.agent?.watchSample(),
        work: () => this.agent?.reconcileWork(),
      },
      log: opts.log,
      // The annotation's heartbeat would go on saying "ready" while no pass can end to say otherwise.
      onStuck: (stuck) => {
        this.stuck =
          stuck === undefined
            ? undefined
            : `${stuck.job} under way since ${new Date(stuck.sinceEpochMs).toISOString().replace(/\.\d+Z$/, 'Z')}`;
        void this.report();
      },
    });
    const kube = opts.kube;
    const writes = new FailureLog(opts.log, 'could not write the trellis.dev/agent annotation; will retry');
    this.reporter =
      kube === undefined
        ? undefined
        : new NodeReporter({
            nodeName: opts.nodeName,
            version: opts.version,
            annotate: (name, ann) => kube.annotateNode(name, ann),
            onError: (err) => writes.failed(err),
            onWritten: () => writes.succeeded('the trellis.dev/agent annotation is written again'),
          });
  }

  /** The Agent's hooks; pass them to its constructor. */
  hooks(): AgentHooks {
    return {
      onCniCall: (record: CniCallRecord) => {
        this.metrics.onCniCall(record);
        if (record.verb === 'GC' && record.released !== undefined) {
          this.metrics.onLeasesReclaimed('cni-gc', record.released);
        }
      },
      onPass: (passed: PassOutcome) => {
        this.metrics.onPass(passed);
        this.health.onPass(passed);
        this.outcome = this.standing.judge(passed);
        void this.report();
      },
      onLeasesReclaimed: (reason, count) => this.metrics.onLeasesReclaimed(reason, count),
      onPreparedPair: (outcome) => this.metrics.onPreparedPair(outcome),
    };
  }

  /** The coverage annotation's state now: the agent's readiness, the last pass, a stuck job. */
  private report(): Promise<void> {
    const agent = this.agent;
    if (this.reporter === undefined || agent === undefined) return Promise.resolve();
    const outcome = this.outcome;
    const reason = agent.notReadyReason();
    const nodeUid = agent.nodeUid();
    // peers() is the last good pass's: a pass that failed or waits routed nothing new, so the peers
    // it left unrouted still are (an empty list would read as full coverage).
    return this.reporter.update({
      ready: reason === undefined,
      ...(reason === undefined ? {} : { reason }),
      missing: missingPeers(this.metrics.peers()),
      ...(nodeUid === undefined ? {} : { nodeUid }),
      ...(this.stuck !== undefined
        ? { lastPass: { outcome: 'stuck', why: this.stuck } }
        : outcome?.kind === 'error'
          ? { lastPass: { outcome: 'failed', why: outcome.error } }
          : outcome?.kind === 'waiting'
            ? { lastPass: { outcome: 'waiting', why: outcome.reason } }
            : {}),
    });
  }

  attach(agent: Agent): void {
    this.agent = agent;
    this.metrics.bind({
      ipamUsage: () => agent.ipamUsage(),
      watchRestarts: () => agent.watchSample()?.restarts,
      // What the metric says: ADD is served (also from the pod CIDRs remembered while the API is away).
      ready: () => agent.servesAdd(),
      forwardFirewallBlocks: () => agent.forwardFirewallBlocks(),
      cniConfigShadowedBy: () => agent.cniConfigShadowedBy(),
      nodesEncoding: () => agent.watchSample()?.encoding,
    });
  }

  /**
   * The health timer and the --metrics-addr listener. cmd/agent calls it before Agent.start, so an
   * address that cannot be bound stops the start before anything on the node is changed; the probes
   * answer from then on (/readyz: not ready until the agent is).
   */
  async listen(): Promise<void> {
    if (this.agent === undefined) throw new Error('AgentObserver.listen before attach');
    if (this.listening) return;
    this.listening = true;
    const { opts } = this;
    this.health.start();
    if (opts.metricsAddr !== '') {
      const l = await startMetricsServer({
        addr: opts.metricsAddr,
        metrics: this.metrics,
        liveness: () => this.health.liveness(),
        readiness: () => this.health.readiness(),
      });
      this.listeners.push(l);
      opts.log.info({ address: l.address }, 'metrics and health listening (/metrics, /healthz, /readyz)');
    }
  }

  /**
   * The rest, once the agent has started (it holds the node's state lock, which makes removing a stale
   * admin socket safe): the admin socket and the Node annotation; listen() too if not called yet. A
   * port or socket that cannot be bound fails the start (the probes would fail anyway).
   */
  async start(): Promise<void> {
    const agent = this.agent;
    if (agent === undefined) throw new Error('AgentObserver.start before attach');
    const { opts } = this;
    await this.listen();
    this.reporter?.start();
    if (opts.adminSocket !== '') {
      const l = await startAdminServer(opts.adminSocket, {
        '/status': () => statusView(agent.snapshot(), opts.version, process.version, this.health.readiness()),
        '/routes': async () => {
          const st = await agent.routeState();
          if (st === undefined) throw new Error('the agent has not started its route reconciler yet');
          return routesView(agent.snapshot().node, st);
        },
        '/leases': () => leasesView(agent.snapshot(), (lease) => agent.netnsAlive(lease)),
      });
      this.listeners.push(l);
      opts.log.info({ socket: l.address }, 'admin socket listening (/status, /routes, /leases)');
    }
  }

  /** Where the listeners are: "host:port" of the metrics listener, the admin socket path. */
  addresses(): string[] {
    return this.listeners.map((l) => l.address);
  }

  async stop(): Promise<void> {
    this.health.stop();
    this.reporter?.stop();
    await Promise.all(this.listeners.splice(0).map((l) => l.close()));
  }
}
