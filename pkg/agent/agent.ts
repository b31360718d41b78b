import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CONFLIST_FILE_NAME, publishConflist, renderConflist } from '../cniconf/index.ts';
import { BackgroundDeleter } from '../datapath/background-deleter.ts';
import { removeHostVethsExcept, sweepOrphans } from '../datapath/gc.ts';
import { KeyedMutex } from '../datapath/keyed-mutex.ts';
import { hostVethName } from '../datapath/names.ts';
import type {
  LinkInfo,
  NetlinkEventsPort,
  NetlinkHandle,
  NetnsPort,
  RouteInfo,
  Subscription,
} from '../datapath/ports.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import { type Ipam, type Lease, openIpam, type RangeUsage } from '../ipam/index.ts';
import type { K8sClient, NodeInformer } from '../k8s/index.ts';
import type { MasqSyncer } from '../masq/index.ts';
import type { Logger } from '../observe/logger.ts';
import { desiredRoutes } from '../routes/desired.ts';
import { isOwnedRoute, MAIN_TABLE } from '../routes/diff.ts';
import { RouteReconciler, readLocalLinks } from '../routes/reconciler.ts';
import type { PeerDecision, Problem } from '../routes/types.ts';
import { vtepAnnotationPatch, vtepMacsFromAnnotations } from '../vxlan/annotations.ts';
import { isVxlanDeviceName } from '../vxlan/constants.ts';
import type { DeviceState } from '../vxlan/device.ts';
import { IpRouteTool, type VxlanLinkTool } from '../vxlan/iproute.ts';
import { VxlanOverlay } from '../vxlan/overlay.ts';
import { type ClusterNode, type ClusterView, staticCluster } from './cluster.ts';
import { CniServer } from './cni-server.ts';
import { type CniCallRecord, createCniService } from './cni-service.ts';
import type { AgentConfig } from './config.ts';
import { NodeController, type PassOutcome } from './controller.ts';
import { withDetachedLinkDelete } from './detached-link-delete.ts';
import { staleLeases } from './lease-gc.ts';
import { chooseMtu, encapOverhead, type MtuChoice } from './mtu.ts';
import { drainSpool } from './spool-drain.ts';

/** The kernel, host and API edges the agent is built on; cmd/agent passes the real adapters. */
export interface AgentPorts {
  netns: NetnsPort;
  openHostNetlink(): NetlinkHandle;
  events: NetlinkEventsPort;
  /** Exclusive lock on the state directory: one agent per node. */
  lockStateDir(dir: string): { release(): void };
  /** Masquerade syncer; undefined disables masquerading. */
  masq: Pick<MasqSyncer, 'sync' | 'invalidate'> | undefined;
  /** The Kubernetes API; undefined in standalone mode. */
  kube:
    | Pick<K8sClient, 'startNodeInformer' | 'setNetworkUnavailable' | 'listPodsOnNode' | 'annotateNode'>
    | undefined;
  /** VXLAN link details and MAC setter (auto and vxlan modes); iproute2 in this namespace by default. */
  vxlanTool?: VxlanLinkTool;
}

export interface AgentHooks {
  onCniCall?: (record: CniCallRecord) => void;
  onPass?: (outcome: PassOutcome) => void;
  /** Leases released by the start-up sweep or the API-driven IPAM GC (metrics). */
  onLeasesReclaimed?: (reason: 'startup-sweep' | 'api-gc', count: number) => void;
}

/** What the agent holds, for the operator's view (admin socket, metrics, doctor). */
export interface AgentSnapshot {
  node: string;
  standalone: boolean;
  mode: string;
  mtu: number;
  podCIDRs: string[];
  ready: boolean;
  notReadyReason: string | undefined;
  socket: string;
  stateDir: string;
  cniConfDir: string;
  cniBinDir: string;
  leases: Lease[];
  ipamUsage: RangeUsage[];
  /** The Node watch; undefined in standalone mode. */
  watch: { restarts: number; relists: number; resourceVersion: string; synced: boolean } | undefined;
  /** Where the pod MTU came from and the encapsulation overhead subtracted (docs/overlay.md). */
  mtuSource?: string;
  mtuOverhead?: number;
  /** The VXLAN devices after the last pass (auto and vxlan modes). */
  vxlan?: { family: 4 | 6; name: string; ifindex: number; mac: string; mtu: number }[];
}

/** Desired inter-node routes (computed now from the node cache) next to what the kernel has. */
export interface AgentRouteState {
  desired: RouteInfo[];
  /** Every route of the main table, both families (the diff decides which are ours). */
  programmed: RouteInfo[];
  problems: Problem[];
  decisions: PeerDecision[];
  links: LinkInfo[];
}

/** Binaries the published config list needs in the CNI bin dir (containerd also runs loopback). */
export const REQUIRED_CNI_BINARIES = ['trellis', 'portmap', 'loopback'] as const;

/** Host sysctls the routed datapath needs; stated in the docs. */
export const HOST_SYSCTLS: readonly [string, string][] = [
  ['net/ipv4/ip_forward', '1'],
  ['net/ipv6/conf/all/forwarding', '1'],
];

const SPOOL_DRAIN_INTERVAL_MS = 30_000;
const LEASE_GC_INTERVAL_MS = 5 * 60_000;
const ROUTE_EVENT_DEBOUNCE_MS = 20;

/**
 * One node's agent. Start order: state lock -> sysctls -> IPAM -> spooled DELs -> orphan sweep ->
 * CNI socket (DEL works from here on) -> node controller. Ready (ADD and STATUS succeed, the config
 * list is published, NetworkUnavailable=False) once the pod CIDRs are known, the first route sync is
 * done and the CNI binaries are in place. Standalone mode is a one-node static cluster.
 */
export class Agent {
  private readonly config: AgentConfig;
  private readonly ports: AgentPorts;
  private readonly log: Logger;
  private readonly hooks: AgentHooks;
  private readonly abort = new AbortController();
  private readonly nodeName: string;
  private lock: { release(): void } | undefined;
  private host: NetlinkHandle | undefined;
  private server: CniServer | undefined;
  private deleter: BackgroundDeleter | undefined;
  private informer: NodeInformer | undefined;
  private cluster: ClusterView | undefined;
  private controller: NodeController | undefined;
  private routeEvents: Subscription | undefined;
  private linkEvents: Subscription | undefined;
  private overlay: VxlanOverlay | undefined;
  private mtuChoice: MtuChoice & { overhead: number } = {
    mtu: 1500,
    source: 'not detected yet',
    overhead: 0,
  };
  /** The VTEP annotation patch in flight or last sent; cleared once the Node shows it. */
  private vtepPatch: string | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private busyKeys: ReadonlySet<string> = new Set();
  private waitingFor: string | undefined = 'the first reconcile';
  ipam: Ipam | undefined;
  datapath: DatapathDeps | undefined;
  mtu = 1500;
  ready = false;

  constructor(config: AgentConfig, ports: AgentPorts, log: Logger, hooks: AgentHooks = {}) {
    this.config = config;
    this.ports = ports;
    this.log = log;
    this.hooks = hooks;
    this.nodeName = config.nodeName ?? hostname();
  }

  notReadyReason(): string | undefined {
    if (this.server === undefined) return 'the CNI socket is not listening yet';
    if (this.ipam === undefined || this.ipam.ranges().length === 0) return 'pod CIDRs are not known yet';
    if (!this.ready) return `waiting for ${this.waitingFor ?? 'the first reconcile'}`;
    return undefined;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    this.lock = this.ports.lockStateDir(config.stateDir);
    for (const [key, value] of HOST_SYSCTLS) this.ports.netns.writeSysctl(key, value);
    // Ranges come from the controller (flags or the Node object); leases outside them go then.
    this.ipam = openIpam({ dir: join(config.stateDir, 'ipam'), ranges: [] });
    for (const q of this.ipam.loadReport.quarantined) {
      log.warn({ file: q.file, reason: q.reason }, 'IPAM record quarantined at load');
    }
    this.host = this.ports.openHostNetlink();
    this.deleter = new BackgroundDeleter((name, error) =>
      log.warn(
        { link: name, error: error instanceof Error ? error.message : String(error) },
        'veth deletion failed',
      ),
    );
    this.datapath = {
      // Veth deletions (DEL's background work, GC) in an `ip` child: see detached-link-delete.ts.
      host: withDetachedLinkDelete(this.host),
      netns: this.ports.netns,
      ipam: this.ipam,
      deleter: this.deleter,
    };
    if (config.mtu > 0) {
      this.mtu = config.mtu;
      this.mtuChoice = { mtu: config.mtu, source: 'configured (--mtu)', overhead: 0 };
    }

    const service = createCniService({
      datapath: this.datapath,
      mutex: new KeyedMutex(),
      log: log.child({ component: 'cni' }),
      readiness: { notReadyReason: () => this.notReadyReason() },
      defaultMtu: () => this.mtu,
      onCall: this.hooks.onCniCall,
    });
    this.busyKeys = service.busyKeys;
    await drainSpool(config.spoolDir, service.handle, log);
    const swept = await sweepOrphans(this.datapath, this.ipam.heldKeys());
    this.hooks.onLeasesReclaimed?.('startup-sweep', swept.releasedLeases.length);
    if (swept.releasedLeases.length > 0 || swept.removedLinks.length > 0) {
      log.info(
        { releasedLeases: swept.releasedLeases.length, removedLinks: swept.removedLinks },
        'start-up sweep removed half-done work',
      );
    }
    const server = new CniServer({
      socketPath: config.socket,
      handler: service.handle,
      log,
      requestTimeoutMs: config.cniRequestTimeoutMs,
    });
    await server.listen();
    this.server = server;
    log.info({ socket: config.socket }, 'CNI socket listening');
    // The shim also spools a DEL when a running agent answered too slowly, or one fell between the
    // drain above and listen(); those leases stay held (never reused) until drained here.
    this.every(SPOOL_DRAIN_INTERVAL_MS, () => drainSpool(config.spoolDir, service.handle, log), true);

    const cluster = this.startCluster();
    this.cluster = cluster;
    this.controller = new NodeController({
      nodeName: this.nodeName,
      cluster,
      ipam: this.ipam,
      routes: new RouteReconciler({ handle: this.host, mode: config.mode, overlay: this.startOverlay() }),
      masq: this.ports.masq,
      noMasqueradeCIDRs: config.noMasqueradeCIDRs,
      onLeasesInvalidated: (leases) => this.removeAttachments(leases),
      onSynced: (self, report) => this.onSynced(self, report.overlay?.devices),
      onPass: this.hooks.onPass,
      log: log.child({ component: 'routes' }),
      resyncMs: config.resyncMs,
    });
    this.watchOwnRoutes();
    this.controller.start(this.abort.signal);
    if (this.ports.kube !== undefined) this.every(LEASE_GC_INTERVAL_MS, () => this.collectLeases(), false);
  }

  private startCluster(): ClusterView {
    const kube = this.ports.kube;
    if (kube === undefined) {
      return staticCluster({ name: this.nodeName, podCIDRs: this.config.podCIDRs, internalIPs: [] });
    }
    const informer = kube.startNodeInformer({
      signal: this.abort.signal,
      resyncMs: this.config.resyncMs,
      onSync: () => this.controller?.markDirty(),
      onEvent: () => this.controller?.markDirty(),
      onError: (err, restartInMs) =>
        this.log.warn({ error: err.message, restartInMs }, 'node watch failed; restarting with backoff'),
      onInvalid: (problem) => this.log.warn({ problem }, 'Node object skipped'),
    });
    this.informer = informer;
    return informer;
  }

  /** The VXLAN backend: it also removes our devices in host-gw mode, so it always runs. */
  private startOverlay(): VxlanOverlay {
    this.overlay = new VxlanOverlay({
      handle: this.host!,
      tool: this.ports.vxlanTool ?? new IpRouteTool(),
      nodeName: this.nodeName,
      vni: this.config.vxlanVni,
      port: this.config.vxlanPort,
      mtu: this.config.mtu,
      log: this.log.child({ component: 'vxlan' }),
    });
    return this.overlay;
  }

  /** A route we own deleted by someone else is put back within the debounce, not at the next resync. */
  private watchOwnRoutes(): void {
    let timer: NodeJS.Timeout | undefined;
    // Deleting a device takes its routes with it without route notifications (IPv4): watch our VXLAN devices.
    this.linkEvents = this.ports.events.subscribeLinkEvents((ev) => {
      if (ev.type === 'delete' && isVxlanDeviceName(ev.link.name)) this.controller?.markDirty();
    });
    this.routeEvents = this.ports.events.subscribeRouteEvents((ev) => {
      if (ev.type === 'add') return;
      if (ev.type === 'delete' && !isOwnedRoute(ev.route)) return;
      if (ev.type === 'overflow') this.ports.masq?.invalidate();
      if (timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        this.controller?.markDirty();
      }, ROUTE_EVENT_DEBOUNCE_MS);
    });
  }

  /** After every successful pass: become ready once, then keep the config list current. */
  private async onSynced(
    self: ClusterNode,
    vteps: readonly Pick<DeviceState, 'family' | 'mac'>[] = [],
  ): Promise<void> {
    const { config, log } = this;
    this.publishVteps(self, vteps);
    if (config.mtu === 0) {
      const [links, localLinks, defaults4, defaults6] = await Promise.all([
        this.host!.listLinks(),
        readLocalLinks(this.host!),
        this.host!.listRoutes({ family: 4 }),
        this.host!.listRoutes({ family: 6 }),
      ]);
      const choice = chooseMtu({
        configured: 0,
        internalIPs: self.internalIPs,
        localLinks,
        links,
        defaultRoutes: [...defaults4, ...defaults6].filter((r) => r.dst === '0.0.0.0/0' || r.dst === '::/0'),
        overhead: encapOverhead(config.mode, self.internalIPs),
      });
      if (choice.mtu !== this.mtu || !this.ready)
        log.info({ mtu: choice.mtu, source: choice.source, mode: config.mode }, 'pod MTU');
      this.mtu = choice.mtu;
      this.mtuChoice = { ...choice, overhead: encapOverhead(config.mode, self.internalIPs) };
    }
    if (config.publishCniConfig) {
      const missing = REQUIRED_CNI_BINARIES.filter((b) => !existsSync(join(config.cniBinDir, b)));
      if (missing.length > 0) {
        this.waitingFor = `CNI binaries ${missing.join(', ')} in ${config.cniBinDir} (the install-cni init container puts them there)`;
        log.warn({ missing, dir: config.cniBinDir }, 'not publishing the CNI config yet: binaries missing');
        return;
      }
      const text = renderConflist({ socket: config.socket, spoolDir: config.spoolDir, mtu: this.mtu });
      const outcome = await publishConflist(config.cniConfDir, CONFLIST_FILE_NAME, text);
      if (outcome === 'written') {
        log.info({ file: join(config.cniConfDir, CONFLIST_FILE_NAME) }, 'CNI config published');
      }
    }
    if (this.ready) return;
    this.ready = true;
    this.waitingFor = undefined;
    log.info(
      {
        node: this.nodeName,
        podCIDRs: self.podCIDRs,
        mode: config.mode,
        mtu: this.mtu,
        socket: config.socket,
        leases: this.ipam?.list().length ?? 0,
        standalone: this.ports.kube === undefined,
      },
      'trellis agent ready',
    );
    if (this.ports.kube !== undefined) {
      void this.reportNetworkUp();
      void this.collectLeases();
    }
  }

  /**
   * Our Node's VTEP MAC annotations follow the devices (none in host-gw). Patched when the cached Node
   * differs; a failure is retried on the next pass. Peers only tunnel to a node that published its MAC.
   */
  private publishVteps(self: ClusterNode, vteps: readonly Pick<DeviceState, 'family' | 'mac'>[]): void {
    const kube = this.ports.kube;
    if (kube === undefined) return;
    const wanted: Partial<Record<4 | 6, string>> = {};
    for (const v of vteps) wanted[v.family] = v.mac;
    const patch = vtepAnnotationPatch(self.annotations, wanted);
    const key = patch === undefined ? undefined : JSON.stringify(patch);
    if (key === undefined || key === this.vtepPatch) {
      if (key === undefined) this.vtepPatch = undefined;
      return;
    }
    this.vtepPatch = key;
    kube.annotateNode(this.nodeName, patch!).then(
      () => this.log.info({ annotations: patch }, 'VTEP annotations published'),
      (err: unknown) => {
        this.vtepPatch = undefined;
        this.log.warn(
          { error: (err as Error).message },
          'could not publish the VTEP annotations; will retry',
        );
      },
    );
  }

  /** The pod MTU, where it came from and the encapsulation overhead subtracted (status CLI). */
  mtuStatus(): MtuChoice & { overhead: number } {
    return { ...this.mtuChoice };
  }

  /** The VXLAN devices after the last pass (none in host-gw or before the first pass). */
  overlayDevices(): DeviceState[] {
    return this.overlay?.devices().map((d) => ({ ...d })) ?? [];
  }

  private async reportNetworkUp(): Promise<void> {
    for (let attempt = 0; !this.abort.signal.aborted; attempt++) {
      try {
        await this.ports.kube!.setNetworkUnavailable(
          this.nodeName,
          false,
          'TrellisIsUp',
          'trellis programmed routes and the CNI config on this node',
        );
        return;
      } catch (err) {
        const delay = Math.min(30_000, 500 * 2 ** attempt);
        this.log.warn(
          { error: (err as Error).message, retryInMs: delay },
          'could not set NetworkUnavailable=False',
        );
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** IPAM GC with the API: leases of pods that left this node and whose netns is gone. */
  private async collectLeases(): Promise<void> {
    if (this.ports.kube === undefined || this.ipam === undefined) return;
    try {
      const pods = await this.ports.kube.listPodsOnNode(this.nodeName);
      const stale = staleLeases(
        this.ipam.list(),
        pods.items,
        (p) => this.ports.netns.isNetns(p),
        this.busyKeys,
      );
      if (stale.length === 0) return;
      for (const l of stale) this.ipam.release(l);
      this.hooks.onLeasesReclaimed?.('api-gc', stale.length);
      await this.removeAttachments(stale);
      this.log.info(
        {
          released: stale.map((l) => ({
            containerId: l.containerId.slice(0, 12),
            pod: `${l.podNamespace}/${l.podName}`,
          })),
        },
        'IPAM garbage collection released leases of pods gone from this node',
      );
    } catch (err) {
      this.log.warn({ error: (err as Error).message }, 'IPAM garbage collection failed; will retry');
    }
  }

  snapshot(): AgentSnapshot {
    const { config } = this;
    const inf = this.informer;
    return {
      node: this.nodeName,
      standalone: this.ports.kube === undefined,
      mode: config.mode,
      mtu: this.mtu,
      podCIDRs: this.ipam?.ranges() ?? [],
      ready: this.ready,
      notReadyReason: this.notReadyReason(),
      socket: config.socket,
      stateDir: config.stateDir,
      cniConfDir: config.cniConfDir,
      cniBinDir: config.cniBinDir,
      leases: this.ipam?.list() ?? [],
      ipamUsage: this.ipam?.usage() ?? [],
      mtuSource: this.mtuChoice.source,
      mtuOverhead: this.mtuChoice.overhead,
      vxlan: this.overlayDevices().map(({ family, name, ifindex, mac, mtu }) => ({
        family,
        name,
        ifindex,
        mac,
        mtu,
      })),
      watch:
        inf === undefined
          ? undefined
          : {
              restarts: inf.restarts,
              relists: inf.relists,
              resourceVersion: inf.resourceVersion,
              synced: inf.hasSynced(),
            },
    };
  }

  /** Undefined before start. Same planner input as the controller's passes (mode, VXLAN devices). */
  async routeState(): Promise<AgentRouteState | undefined> {
    const host = this.host;
    const cluster = this.cluster;
    if (host === undefined || cluster === undefined) return undefined;
    const [links, localLinks, v4, v6] = await Promise.all([
      host.listLinks(),
      readLocalLinks(host),
      host.listRoutes({ family: 4, table: MAIN_TABLE }),
      host.listRoutes({ family: 6, table: MAIN_TABLE }),
    ]);
    const self = cluster.get(this.nodeName);
    const toPeer = (n: ClusterNode) => ({
      name: n.name,
      podCIDRs: [...n.podCIDRs],
      internalIPs: [...n.internalIPs],
      vtepMacs: vtepMacsFromAnnotations(n.annotations),
    });
    const overlay = this.overlayDevices().map((d) => ({
      family: d.family,
      ifindex: d.ifindex,
      name: d.name,
    }));
    const plan =
      self === undefined
        ? {
            routes: [],
            problems: [{ node: this.nodeName, problem: 'this node is not known yet' }],
            decisions: [],
          }
        : desiredRoutes(toPeer(self), cluster.list().map(toPeer), localLinks, {
            mode: this.config.mode,
            overlay,
          });
    return {
      desired: plan.routes,
      programmed: [...v4, ...v6],
      problems: plan.problems,
      decisions: plan.decisions,
      links,
    };
  }

  private async removeAttachments(leases: Lease[]): Promise<void> {
    if (this.datapath === undefined) return;
    const gone = new Set(leases.map((l) => hostVethName(l.containerId, l.ifname)));
    const keep = new Set((await this.host!.listLinks()).map((l) => l.name).filter((name) => !gone.has(name)));
    await removeHostVethsExcept(this.datapath, keep);
  }

  private every(ms: number, fn: () => Promise<unknown>, runNow: boolean): void {
    const run = (): void => {
      fn().catch((err: unknown) => this.log.warn({ error: (err as Error).message }, 'periodic task failed'));
    };
    if (runNow) run();
    const t = setInterval(run, ms);
    t.unref();
    this.timers.push(t);
  }

  /** SIGTERM: stop watches, finish in-flight calls, close the socket; routes, config and rules stay. */
  async stop(): Promise<void> {
    this.abort.abort();
    for (const t of this.timers) clearInterval(t);
    this.routeEvents?.close();
    this.linkEvents?.close();
    await this.server?.close();
    await this.controller?.done;
    await this.informer?.done;
    await this.deleter?.drain();
    this.host?.close();
    this.lock?.release();
    this.log.info('trellis agent stopped');
  }
}
