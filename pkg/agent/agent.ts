import { existsSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { PUBLISHED_NETWORK_NAME } from '../cniconf/render.ts';
import { addAttachment } from '../datapath/add.ts';
import { BackgroundDeleter } from '../datapath/background-deleter.ts';
import { KeyedMutex } from '../datapath/keyed-mutex.ts';
import { attachmentKey, attachmentOfKey, hostVethName, leaseLogFields } from '../datapath/names.ts';
import { judgeLeaseNetns } from '../datapath/netns-identity.ts';
import {
  type Family,
  IPV6_MIN_MTU,
  type NetlinkEventsPort,
  type NetlinkHandle,
  type NetnsPort,
  type RouteInfo,
  type Subscription,
} from '../datapath/ports.ts';
import { type PreparedOutcome, PreparedPairs } from '../datapath/prepared-pairs.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import { errorText } from '../error-text.ts';
import type { FirewallCommand, ForwardRuleset, VxlanInKind } from '../firewall/index.ts';
import { type Ipam, type Lease, openIpam } from '../ipam/index.ts';
import type { K8sClient, NodeInformer } from '../k8s/index.ts';
import type { MasqSyncer } from '../masq/index.ts';
import { FailureLog } from '../observe/failure-log.ts';
import type { Logger } from '../observe/logger.ts';
import { connectedSubnets } from '../routes/desired.ts';
import { readLocalLinks } from '../routes/local-links.ts';
import { OwnRouteChanges } from '../routes/own-changes.ts';
import { RouteReconciler } from '../routes/reconciler.ts';
import type { PeerDecision } from '../routes/types.ts';
import { READY_MARK_REFRESH_MS } from '../shim/ready-marker.ts';
import type { DeviceState } from '../vxlan/device.ts';
import { netlinkVxlanTool, type VxlanLinkTool } from '../vxlan/link-tool.ts';
import { VxlanOverlay } from '../vxlan/overlay.ts';
import { Background } from './background.ts';
import { type ClusterNode, type ClusterView, staticCluster } from './cluster.ts';
import { CniServer } from './cni-server.ts';
import { type CniCallRecord, createCniService } from './cni-service.ts';
import type { AgentConfig } from './config.ts';
import { FIRST_LIST_WAIT, NodeController, type PassOutcome, ROUTING_ANNOTATIONS } from './controller.ts';
import { deletedDirectoryOf } from './deleted-mount.ts';
import { startFirewallChecks } from './firewall-checks.ts';
import type { ForwardFirewallWatch } from './forward-firewall.ts';
import { ForwardPrefixes } from './forward-prefixes.ts';
import { enableForwarding, keepForwardingOn, type RouterAdvertisementGuard } from './forwarding.ts';
import { releaseHeldWithoutVeth } from './held-sweep.ts';
import { HostSideCheck, stillLeased } from './host-side-check.ts';
import { type KernelTriggers, startKernelTriggers } from './kernel-triggers.ts';
import { collectLeases, removeAttachments } from './lease-collector.ts';
import { rebuildHeldLeases } from './lease-rebuild.ts';
import { ipv6MtuProblem, type MtuChoice } from './mtu.ts';
import { detectMtu } from './mtu-detect.ts';
import { NetnsDirWatch } from './netns-dir-watch.ts';
import { NodeStatusReporter } from './node-status.ts';
import { type AgentRouteState, type AgentSnapshot, computeRouteState } from './operator-view.ts';
import { CniConfigPublisher, describePublishBlock, withdrawPreviousBootConflist } from './publication.ts';
import { ReadyMark } from './ready-mark.ts';
import { memoryRefusal, type RememberedNode, RememberedNodeFile, rememberedMtu } from './remembered-node.ts';
import { markRunning, markStopped } from './run-marker.ts';
import { drainSpool, spooledDelsIn } from './spool-drain.ts';
import { logIpamLoad, sweepAtStart } from './start-up-state.ts';
import { StopDeadline } from './stop-deadline.ts';
import { type TableRules, tableRules } from './table-rules.ts';
import { tunnelledPeers, vxlanInKinds } from './vxlan-peers.ts';

export type { AgentRouteState, AgentSnapshot } from './operator-view.ts';
export { REQUIRED_CNI_BINARIES } from './publication.ts';

/** The kernel, host and API edges the agent is built on; cmd/agent passes the real adapters. */
export interface AgentPorts {
  netns: NetnsPort;
  openHostNetlink(): NetlinkHandle;
  events: NetlinkEventsPort;
  /** Exclusive lock on the state directory: one agent per node. */
  /** `warning`: taken only in part (the network namespace's lock squatted), logged at start. */
  lockStateDir(dir: string): { release(): void; warning?: string };
  /** The nftables table's syncer (masquerade, MSS clamp: table-rules.ts); undefined when none is needed. */
  masq:
    | (Pick<MasqSyncer, 'sync' | 'invalidate'> &
        Partial<
          Pick<
            MasqSyncer,
            'changeCluster' | 'committedBy' | 'wroteElements' | 'clampRefused' | 'lastInPlaceError' | 'resync'
          >
        >)
    | undefined;
  /**
   * With no table needed (table-rules.ts): removes the table a run with one left behind (it would keep
   * masquerading and never learn new nodes' pod CIDRs). Resolves true when there was one.
   */
  removeMasqLeftovers?: () => Promise<boolean>;
  /** The Kubernetes API; undefined in standalone mode. */
  kube:
    | (Pick<K8sClient, 'startNodeInformer' | 'setNetworkUnavailable' | 'listPodsOnNode' | 'annotateNode'> &
        Partial<Pick<K8sClient, 'nodesEncoding'>>)
    | undefined;
  /** VXLAN link details and MAC setter (auto and vxlan modes); the host netlink handle's by default. */
  vxlanTool?: VxlanLinkTool;
  /**
   * The host firewall's forward chains, read for these pod CIDRs, and its input chains when there are
   * tunnelled peers' VXLAN packets to judge (forward-firewall.ts); without it the agent does not look.
   */
  readForwardFirewall?: (
    podCIDRs: readonly string[],
    vxlan: readonly VxlanInKind[],
  ) => Promise<ForwardRuleset>;
  /** Runs nft or legacy iptables to insert or delete the agent's accept rules there (skipped with --no-accept-forward). */
  writeForwardFirewall?: (cmd: FirewallCommand) => Promise<unknown>;
}

export interface AgentHooks {
  onCniCall?: (record: CniCallRecord) => void;
  onPass?: (outcome: PassOutcome) => void;
  /** Leases released by the start-up sweep, the API-driven IPAM GC or the held sweep (metrics). */
  onLeasesReclaimed?: (reason: 'startup-sweep' | 'api-gc' | 'held-gone', count: number) => void;
  /** What became of a veth pair prepared when a pod namespace appeared (metrics). */
  onPreparedPair?: (outcome: PreparedOutcome) => void;
}

const SPOOL_DRAIN_INTERVAL_MS = 30_000;
const LEASE_GC_INTERVAL_MS = 5 * 60_000;
/** How soon pods outside the pod CIDRs whose removal failed are tried again. */
const HELD_RETRY_MS = 30_000;
/** How long stop waits for background work (a firewall check behind the xtables lock: `-w 5`). */
const STOP_BACKGROUND_WAIT_MS = 8_000;
/** The whole stop, within the DaemonSet's terminationGracePeriodSeconds (30 s) with room to exit. */
const STOP_DEADLINE_MS = 25_000;
/** How long CNI calls in flight at a stop may finish (at most what is left of the deadline). */
const CNI_CALLS_STOP_GRACE_MS = 20_000;
/** Folds the burst of one flush (a route per pod and family) into one check of the host ends. */
const HOST_SIDE_DEBOUNCE_MS = 20;
/**
 * A node not ready yet because the CNI binaries could not be asked for a moment (no fd or process to
 * spare, as in a boot's burst): asked again this soon, not at the next resync a minute later.
 */
const TRANSIENT_PUBLISH_RETRY_MS = 5_000;
/**
 * How long a start waits for its first list of Nodes before it serves ADD with the pod CIDRs it
 * remembers (sooner when the list fails). Not at once: with the API up, pods wait the moment it
 * takes to program the routes rather than start without them after a reboot.
 */
export const REMEMBERED_NODE_GRACE_MS = 5000;

/**
 * One node's agent: its lifecycle. Start order: state lock -> IPAM -> spooled DELs -> orphan sweep ->
 * CNI socket (DEL works from here on) -> node controller. Ready (ADD and STATUS succeed, the config
 * list is published, NetworkUnavailable=False) once the pod CIDRs are known (when they are set,
 * forwarding is turned on for their families and quarantined leases are rebuilt from the kernel:
 * lease-rebuild.ts), the first route sync is done and the CNI binaries are in place. One exception:
 * while the API has not answered at start, ADD and STATUS are served with the pod CIDRs the last run
 * saved (remembered-node.ts). Standalone mode is a one-node static cluster. The work itself lives in
 * the files imported above.
 */
export class Agent {
  private readonly config: AgentConfig;
  private readonly ports: AgentPorts;
  private readonly log: Logger;
  /** Parts' loggers are its children (component()): a child of `log` would name two components. */
  private readonly root: Logger;
  private readonly hooks: AgentHooks;
  private readonly abort = new AbortController();
  private wantRestart: (why: string) => void = () => {};
  /** The kept directory keepFiles found deleted last time (it stops the agent when found twice). */
  private deletedSeen: string | undefined;
  /**
   * Resolves, with why, once only a new process can serve: a directory the agent keeps files in was
   * deleted under its mount (deleted-mount.ts). cmd/agent stops the agent then and exits 1, and the
   * kubelet restarts the container with the host's directory mounted again.
   */
  readonly restartWanted: Promise<string> = new Promise((resolve) => {
    this.wantRestart = resolve;
  });
  private readonly background: Background;
  private readonly layoutWrites: FailureLog;
  /** The config list put back by keepFiles, when that fails (said when it starts, not every 5 s). */
  private readonly conflistWrites: FailureLog;
  /** keepFiles' forwarding check, when it cannot read or turn it on (said when it starts). */
  private readonly forwardingChecks: FailureLog;
  private readonly nodeName: string;
  private lock: { release(): void; warning?: string } | undefined;
  private host: NetlinkHandle | undefined;
  private server: CniServer | undefined;
  private deleter: BackgroundDeleter | undefined;
  /** Veth pairs made as pod namespaces appear in --netns-dir, and the watch of that directory. */
  private prepared: PreparedPairs | undefined;
  private netnsDirWatch: NetnsDirWatch | undefined;
  private informer: NodeInformer | undefined;
  /** The last failed list or watch of Nodes, for status and doctor. */
  private lastWatchFailure: { at: string; error: string } | undefined;
  private cluster: ClusterView | undefined;
  private controller: NodeController | undefined;
  private routes: RouteReconciler | undefined;
  private nodeStatus: NodeStatusReporter | undefined;
  private readonly subscriptions: Subscription[] = [];
  /** Follows the MTU of the links the detected pod MTU comes from (absent with --mtu set). */
  private linkMtuWatch: KernelTriggers['uplinkMtu'];
  private linkCarrierWatch: KernelTriggers['carriers'] | undefined;
  /** Puts back what the pods' host ends lost, after every full pass. */
  private hostSideCheck: HostSideCheck | undefined;
  /** A check of the host ends is due (a pod's host route was deleted). */
  private hostSideSoon: NodeJS.Timeout | undefined;
  /** The pass asked for again after a transient publication block (TRANSIENT_PUBLISH_RETRY_MS). */
  private publishRetry: NodeJS.Timeout | undefined;
  /** Asks for a pass when a VXLAN neighbour or FDB entry is deleted (the pass puts it back). */
  private overlayEntryWatch: KernelTriggers['overlayEntries'] | undefined;
  /** Asks for a pass when a VXLAN device's MTU is changed (the pass sets it back). */
  private overlayMtuWatch: KernelTriggers['overlayMtu'] | undefined;
  /** Forward chains of the host's own firewall that drop pod traffic; absent without the port. */
  private forwardFirewall: ForwardFirewallWatch | undefined;
  /** What the firewall check accepts: the cluster's pod network, or this node's pod CIDRs. */
  private forwardPrefixes: ForwardPrefixes | undefined;
  /** Underlay addresses of the peers the last full pass tunnels to, per family (vxlan-peers.ts). */
  private tunnelled = new Map<Family, string[]>();
  /** Vouches for STATUS through a restart (pkg/shim/ready-marker.ts); kept fresh once ready. */
  private readyMark: ReadyMark | undefined;
  private overlay: VxlanOverlay | undefined;
  private mtuChoice: MtuChoice & { overhead: number } = {
    mtu: 1500,
    source: 'not detected yet',
    overhead: 0,
    fallback: true,
  };
  private busyKeys: ReadonlySet<string> = new Set();
  /** The last lease rebuild left pods outside the pod CIDRs in place (retried every HELD_RETRY_MS). */
  private heldOutsideRanges = false;
  /** The CNI service's lock of an attachment, which marks it busy (createCniService's `locked`). */
  private lockAttachment:
    | (<T>(containerId: string, ifname: string, fn: () => Promise<T>) => Promise<T>)
    | undefined;
  private waitingFor: string | undefined = 'the first reconcile';
  /** Why the pod MTU cannot carry this node's IPv6 pod CIDR (ipv6MtuProblem), as of the last pass. */
  private mtuProblem: string | undefined;
  /** Publishes the CNI config list once its binaries run (created at the first publication). */
  private publisher: CniConfigPublisher | undefined;
  /** This Node's pod CIDRs and MTU as the last run knew them (remembered-node.ts); Kubernetes mode only. */
  private nodeFile: RememberedNodeFile | undefined;
  private remembered: RememberedNode | undefined;
  /** ADD is served with the remembered pod CIDRs until the first pass (the API is unreachable). */
  private servingFromMemory = false;
  private graceTimer: NodeJS.Timeout | undefined;
  ipam: Ipam | undefined;
  datapath: DatapathDeps | undefined;
  ready = false;

  /**
   * The pod interfaces' MTU (published in the config list): the node link's, since only traffic that
   * leaves the node is encapsulated.
   */
  get mtu(): number {
    return this.mtuChoice.mtu + this.mtuChoice.overhead;
  }

  /** The MTU of pod traffic that leaves the node: `mtu` less the overlay's headers (pod-routes.ts). */
  get routeMtu(): number {
    return this.mtuChoice.mtu;
  }

  /** The devices TCP's MSS is clamped into, and why none when the kernel refused the clamp. */
  private clampState(): Pick<AgentSnapshot, 'mssClamp' | 'mssClampRefused'> {
    const refused = this.ports.masq?.clampRefused;
    if (refused !== undefined) return { mssClamp: [], mssClampRefused: refused };
    // Not while the table could not be written at all (doctor's MTU check trusts this list).
    if (this.ports.masq === undefined || this.controller?.masqError !== undefined) return { mssClamp: [] };
    return { mssClamp: [...this.tableRules.clampMssInto] };
  }

  /** What the nftables table holds here (masquerade, MSS clamp into the VXLAN devices). */
  private get tableRules(): TableRules {
    return tableRules(this.config, this.ports.kube === undefined);
  }

  /** `root`: a logger without a component; the agent's own lines say `agent`, its parts their own. */
  constructor(config: AgentConfig, ports: AgentPorts, root: Logger, hooks: AgentHooks = {}) {
    this.config = config;
    this.ports = ports;
    this.root = root;
    const log = root.child({ component: 'agent' });
    this.log = log;
    this.hooks = hooks;
    this.nodeName = config.nodeName ?? hostname();
    this.background = new Background(log, this.abort.signal);
    this.layoutWrites = new FailureLog(
      log,
      'the IPAM state directory or a record in it was removed under the agent and could not be written back',
    );
    this.conflistWrites = new FailureLog(
      log,
      'the CNI config list was removed under the agent and could not be written back',
    );
    this.forwardingChecks = new FailureLog(log, 'IP forwarding could not be checked or turned on');
  }

  private component(name: string): Logger {
    return this.root.child({ component: name });
  }

  /** ADD is served: ready, or serving from the pod CIDRs remembered from the last run. */
  servesAdd(): boolean {
    return this.cniRefusal() === undefined;
  }

  /**
   * Whether a lease's pod namespace is still there, as the agent's own sweeps judge it (through
   * --host-proc for /proc/PID paths, a namespace and not merely a file, and the one ADD used where
   * the lease records it): for doctor.
   */
  netnsAlive(lease: Lease): boolean | undefined {
    const verdict = judgeLeaseNetns(lease, this.ports.netns);
    return 'live' in verdict ? verdict.live : undefined;
  }

  /** The uid of this node's Node object as the cache holds it (undefined standalone or before the list). */
  nodeUid(): string | undefined {
    return this.cluster?.get(this.nodeName)?.uid;
  }

  /** The reconcile worker's job under way, for /readyz (a hung one). */
  reconcileWork(): { what: string; forMs: number } | undefined {
    return this.controller?.work();
  }

  notReadyReason(): string | undefined {
    if (this.server === undefined) return 'the CNI socket is not listening yet';
    // What the controller waits for (the first list, a Node without pod CIDRs) says more than ours.
    const waiting = this.controller?.waitReason;
    if (this.ipam === undefined || this.ipam.ranges().length === 0) {
      return `pod CIDRs are not known yet${waiting === undefined ? '' : `: ${waiting}`}`;
    }
    if (!this.ready) {
      const serving = this.memoryServes()
        ? ' (ADD served with the pod CIDRs remembered from the last run)'
        : '';
      return `${waiting ?? `waiting for ${this.waitingFor ?? 'the first reconcile'}`}${serving}`;
    }
    // Ready once, but the Node has gone from the API since (or lost its pod CIDRs): the controller
    // frees its range on delete and may give it to another node, so no address from it goes out
    // until a pass reads this node again.
    if (waiting !== undefined && waiting !== FIRST_LIST_WAIT) return waiting;
    return undefined;
  }

  /**
   * Why ADD and STATUS are refused: not ready, unless serving from memory while no list of Nodes has
   * come (once one has, the API decides, even if the Node it gave has no pod CIDRs).
   */
  private cniRefusal(): string | undefined {
    if (this.memoryServes()) return undefined;
    return this.notReadyReason();
  }

  private memoryServes(): boolean {
    return this.servingFromMemory && this.server !== undefined && this.informer?.hasSynced() === false;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    this.lock = this.ports.lockStateDir(config.stateDir);
    if (this.lock.warning !== undefined) log.warn({ stateDir: config.stateDir }, this.lock.warning);
    if (markRunning(config.stateDir)) {
      log.warn(
        { stateDir: config.stateDir },
        'the last agent on this node did not stop cleanly (killed, crashed, or the node lost power); what it left half done is swept now',
      );
    }
    this.readyMark = new ReadyMark(config.socket, log);
    if (config.publishCniConfig && this.readyMark.absent()) {
      await withdrawPreviousBootConflist(config.cniConfDir, config.socket, log, config.stateDir);
    }
    // Ranges come from the controller (flags or the Node object); leases outside them go then.
    this.ipam = openIpam({
      dir: join(config.stateDir, 'ipam'),
      ranges: [],
      onRewritten: (dir, leases) =>
        log.warn(
          { dir, leases },
          'the IPAM state directory was removed under the agent; written back from memory',
        ),
    });
    logIpamLoad(this.ipam, log);
    this.host = this.ports.openHostNetlink();
    // One lock per attachment for CNI calls and the host-end repairs alike: a repair must not race
    // the DEL that releases its lease.
    const mutex = new KeyedMutex();
    this.hostSideCheck = new HostSideCheck(this.host, log, {
      whileLeased: (lease, put) => {
        const work = async () => {
          if (!stillLeased(this.ipam?.get(lease), lease)) return false;
          await put();
          return true;
        };
        // Through the CNI service once it exists: the key busy while a pair is made again, so GC
        // and the lease collector leave the lease and its new veth alone.
        const locked = this.lockAttachment;
        return locked === undefined
          ? mutex.run(attachmentKey(lease), work)
          : locked(lease.containerId, lease.ifname, work);
      },
      // Unsure (the agent out of file descriptors) is not live: no pair is made, the next check asks again.
      netnsLive: (lease) => this.netnsAlive(lease) === true,
      reattach: (lease) => this.reattach(lease),
    });
    this.deleter = new BackgroundDeleter((name, error, retried) =>
      log.warn(
        { link: name, error: errorText(error), retried },
        retried
          ? 'veth deletion failed; tried again shortly'
          : 'veth deletion failed; left to the next start-up sweep or CNI GC',
      ),
    );
    this.datapath = {
      // Its deleteLink runs off the JS thread (pkg/netns openHostNetlink): DEL's background work, GC.
      host: this.host,
      netns: this.ports.netns,
      ipam: this.ipam,
      deleter: this.deleter,
    };
    if (config.mtu > 0) {
      this.mtuChoice = { mtu: config.mtu, source: 'configured (--mtu)', overhead: 0 };
    }

    const service = createCniService({
      datapath: this.datapath,
      mutex,
      log: this.component('cni'),
      readiness: {
        notReadyReason: () => this.cniRefusal(),
        restarting: () => this.readyMark?.vouches() === true,
        stopping: this.abort.signal,
      },
      defaultMtu: () => this.mtu,
      routeMtu: () => this.routeMtu,
      nodeCidrs: () => this.ipam?.ranges() ?? [],
      onCall: this.hooks.onCniCall,
      spooledDels: spooledDelsIn(config.spoolDir),
    });
    this.busyKeys = service.busyKeys;
    this.lockAttachment = service.locked;
    await drainSpool(config.spoolDir, service.handle, log);
    const released = await sweepAtStart(this.datapath, this.ipam, config.stateDir, log);
    this.hooks.onLeasesReclaimed?.('startup-sweep', released);
    const server = new CniServer({
      socketPath: config.socket,
      handler: service.handle,
      // A refused request is a CNI call's line: filtered with the others by component and outcome.
      log: this.component('cni'),
      requestTimeoutMs: config.cniRequestTimeoutMs,
      ...(this.hooks.onCniCall === undefined ? {} : { onReject: this.hooks.onCniCall }),
    });
    await server.listen();
    this.server = server;
    log.info({ socket: config.socket }, 'CNI socket listening');
    // Files removed under the agent (a cleanup of /run/trellis or /var/lib/trellis) are put back
    // within seconds: a missing socket fails every ADD while the agent looks healthy, missing leases
    // and node.json cost the running pods their network at the next restart. A host directory deleted
    // under the container's mount cannot take them: the agent stops for a restart (restartWanted).
    this.background.every(
      'keeping the socket and state files',
      READY_MARK_REFRESH_MS,
      () => this.keepFiles(server),
      false,
    );
    // The shim also spools a DEL when a running agent answered too slowly, or one fell between the
    // drain above and listen(); those leases stay held (never reused) until drained here.
    this.background.every(
      'draining spooled DELs',
      SPOOL_DRAIN_INTERVAL_MS,
      () => drainSpool(config.spoolDir, service.handle, log),
      true,
    );

    const kube = this.ports.kube;
    if (kube !== undefined) {
      this.nodeFile = new RememberedNodeFile(config.stateDir, this.nodeName, log);
      this.remembered = this.nodeFile.load();
      this.nodeStatus = new NodeStatusReporter({
        kube,
        nodeName: this.nodeName,
        log,
        signal: this.abort.signal,
      });
    }
    this.cluster = this.startCluster();
    // Deletions the agent makes (routes, VXLAN entries), so their notifications wake no pass.
    const ownChanges = new OwnRouteChanges();
    this.overlay = new VxlanOverlay({
      handle: this.host,
      tool: this.ports.vxlanTool ?? netlinkVxlanTool(this.host),
      nodeName: this.nodeName,
      vni: config.vxlanVni,
      port: config.vxlanPort,
      mtu: config.mtu,
      log: this.component('vxlan'),
      own: ownChanges,
      sysctl: this.ports.netns,
    });
    this.routes = new RouteReconciler({
      handle: this.host,
      mode: config.mode,
      overlay: this.overlay,
      ownChanges,
    });
    this.startFirewallWatch();
    this.controller = new NodeController({
      nodeName: this.nodeName,
      cluster: this.cluster,
      ipam: this.ipam,
      // The overlay also removes our VXLAN devices in host-gw mode, so it always runs.
      routes: this.routes,
      masq: this.ports.masq,
      noMasqueradeCIDRs: config.noMasqueradeCIDRs,
      tableRules: this.tableRules,
      onLeasesInvalidated: (leases) => removeAttachments(this.datapath!, leases),
      // Forwarding for the pod CIDRs' families before the pass programs routes; quarantined leases
      // are rebuilt from the kernel once restore can check addresses against the ranges.
      onRangesSet: (ranges) => {
        enableForwarding(this.ports.netns, ranges, this.raGuard());
        // Before the first full pass: this node's pod CIDRs, deleting none of our accepts (checkFirewall).
        void this.checkFirewall();
        return this.rebuildHeldLeases();
      },
      onRouteDevices: (devices) => this.linkCarrierWatch?.follow(devices),
      onPeerChanged: (node, accepted) => {
        if (node !== undefined && this.forwardPrefixes?.peerChanged(accepted, node.internalIPs))
          void this.checkFirewall();
      },
      ownAnnotations: () => this.nodeStatus?.wantedAnnotations(),
      onSynced: (self, report) => {
        // Each on its own: one that cannot subscribe now (it is tried again at the next pass) fails
        // the pass, but must not keep the others from following.
        const failed = [
          () => this.linkCarrierWatch?.follow(report.routeDevices ?? []),
          () => this.overlayEntryWatch?.follow(report.overlay?.devices ?? []),
          () =>
            this.overlayMtuWatch?.follow(
              (report.overlay?.devices ?? []).map((d) => ({ index: d.ifindex, mtu: d.mtu, name: d.name })),
            ),
        ].flatMap((follow) => {
          try {
            follow();
            return [];
          } catch (err) {
            return [err];
          }
        });
        this.noteTunnelled(report.decisions);
        const synced = this.onSynced(self, report.overlay?.devices, report.directSubnets);
        return failed.length === 0
          ? synced
          : synced.then(() => {
              throw failed[0];
            });
      },
      onPass: (outcome) => {
        // Per-node steps move peers onto VXLAN and off it too (a VTEP MAC published after the first
        // full pass, say): the firewall's input check must not wait for the next full pass to know.
        if (outcome.kind === 'ok' && outcome.scope === 'node') this.noteTunnelled(outcome.report.decisions);
        this.hooks.onPass?.(outcome);
      },
      log: this.component('routes'),
      resyncMs: config.resyncMs,
    });
    await this.removeMasqLeftovers();
    const triggers = startKernelTriggers({
      events: this.ports.events,
      masq: this.ports.masq,
      host: this.host,
      overlay: this.overlay,
      routes: this.routes,
      markDirty: (why, endsBackoff) => this.controller?.markDirty(why, endsBackoff),
      podRouteDeleted: (route) => this.onPodRouteDeleted(route),
      podVethLost: (name) => this.onPodVethLost(name),
      followUplinkMtu: config.mtu === 0,
      log,
    });
    this.subscriptions.push(...triggers.subscriptions);
    this.linkCarrierWatch = triggers.carriers;
    this.overlayEntryWatch = triggers.overlayEntries;
    this.overlayMtuWatch = triggers.overlayMtu;
    this.linkMtuWatch = triggers.uplinkMtu;
    this.controller.start(this.abort.signal);
    this.background.every(
      'removing pods outside the pod CIDRs that a first try left',
      HELD_RETRY_MS,
      () => (this.heldOutsideRanges ? this.rebuildHeldLeases() : Promise.resolve()),
      false,
    );
    this.background.every(
      'releasing held addresses of pods gone',
      LEASE_GC_INTERVAL_MS,
      () => this.releaseHeldOfPodsGone(),
      false,
    );
    if (kube !== undefined)
      this.background.every(
        'collecting leases of pods gone',
        LEASE_GC_INTERVAL_MS,
        () => this.collectLeases(),
        false,
      );
    if (config.netnsDir !== '') this.prepareAsNamespacesAppear(config.netnsDir);
    if (this.remembered !== undefined) {
      const t = setTimeout(
        () => this.serveFromMemory(`no list of Nodes after ${REMEMBERED_NODE_GRACE_MS} ms`),
        REMEMBERED_NODE_GRACE_MS,
      );
      t.unref();
      this.graceTimer = t;
    }
  }

  /** The first directory the agent keeps files in (socket, state, spool, published config) found deleted. */
  private deletedKeptDirectory(): string | undefined {
    const { config } = this;
    const kept = [dirname(config.socket), config.stateDir, config.spoolDir];
    if (config.publishCniConfig) kept.push(config.cniConfDir, config.cniBinDir);
    for (const dir of kept) {
      const deleted = deletedDirectoryOf(dir, linksOf);
      if (deleted !== undefined) return deleted;
    }
    return undefined;
  }

  /**
   * The CNI socket, the IPAM state directory, its lease records, node.json and the published config
   * list, each put back if it was removed; IP forwarding turned back on if it was turned off.
   */
  private async keepFiles(server: CniServer): Promise<void> {
    if (this.abort.signal.aborted) return;
    const deleted = this.deletedKeptDirectory();
    const seenBefore = deleted !== undefined && deleted === this.deletedSeen;
    this.deletedSeen = deleted;
    if (deleted !== undefined && !seenBefore) return; // once more first: a stat may race an `rm -rf` outside a container
    if (deleted !== undefined) {
      this.log.error(
        { directory: deleted },
        'a directory the agent keeps its files in was deleted on the host under its mount: nothing can be put back in it; stopping so that the container is restarted with the host directory mounted again',
      );
      this.wantRestart(`${deleted} was deleted under the agent's mount`);
      return;
    }
    try {
      // The layout first (keepLayout, which logs through onRewritten), then each record. A failure
      // every 5 s (a read-only disk) is said when it starts.
      for (const { lease, missing } of this.ipam?.keepRecords() ?? []) {
        this.log.warn(
          { ...leaseLogFields(lease), missing },
          "a pod's lease record was removed under the agent; written back from memory",
        );
      }
      this.layoutWrites.succeeded('the IPAM state directory and its records are there again');
    } catch (err) {
      this.layoutWrites.failed(err);
    }
    await this.nodeFile?.keep();
    // A SIGTERM during that write: stop() closes the server, which removes the socket file; listening
    // again would accept calls the stopping agent then cuts.
    if (this.abort.signal.aborted) return;
    if (!server.socketPresent()) {
      this.log.warn(
        { socket: this.config.socket },
        'the CNI socket file was removed under the agent; listening again',
      );
      // Its failure (the directory replaced by a file, no inodes left) is said and tried again in
      // 5 s; it must not keep the checks below from running meanwhile.
      await server
        .relisten()
        .catch((err: unknown) =>
          this.log.warn({ socket: this.config.socket, error: errorText(err) }, 'listening again failed'),
        );
    }
    // Forwarding turned off under the agent (`sysctl --system`, a hardening profile) drops every routed
    // pod packet: the passes check it, but they may be a minute apart, or waiting (the API away).
    const ranges = this.ipam?.ranges() ?? [];
    if (ranges.length > 0) {
      const failed = keepForwardingOn(this.ports.netns, ranges, this.log, this.raGuard(), false);
      if (failed === undefined) this.forwardingChecks.succeeded('IP forwarding can be checked again');
      else this.forwardingChecks.failed(failed.error, { sysctl: failed.sysctl });
    }
    // Only once ready: before, the passes publish it (or keep it unpublished for a reason).
    if (this.ready && this.publisher !== undefined) {
      try {
        // Only what was looked at: a skipped check says nothing of a failure being over.
        if ((await this.publisher.keep()) !== 'skipped')
          this.conflistWrites.succeeded('the CNI config list is in place again');
      } catch (err) {
        this.conflistWrites.failed(err);
      }
    }
  }

  /**
   * The API has not given us our Node yet: serve ADD with the pod CIDRs and MTU the last run saw
   * (memoryRefusal says when not). Routes, rules and everything else wait for a full list; the first
   * pass that reads this Node confirms the ranges or changes them as any change goes.
   */
  private serveFromMemory(why: string): void {
    const mem = this.remembered;
    const ipam = this.ipam;
    const controller = this.controller;
    if (mem === undefined || ipam === undefined || controller === undefined) return;
    if (this.servingFromMemory || this.ready || this.abort.signal.aborted) return;
    const refusal =
      memoryRefusal({
        listed: this.informer?.hasSynced() !== false,
        rangesKnown: ipam.ranges().length > 0,
        leases: ipam.list(),
        podCIDRs: mem.podCIDRs,
      }) ?? this.forwardingRefusal(mem.podCIDRs);
    if (refusal !== undefined) {
      // Logged when it is news: the API took over (listed, ranges known) is not.
      if (this.informer?.hasSynced() === false && ipam.ranges().length === 0) {
        this.log.warn(
          { podCIDRs: mem.podCIDRs, why: refusal },
          'not serving ADD from the remembered pod CIDRs; waiting for the API server',
        );
      }
      this.remembered = undefined;
      return;
    }
    controller.useRememberedRanges(mem.podCIDRs);
    if (this.config.mtu === 0) this.mtuChoice = rememberedMtu(mem, this.config.mode);
    this.servingFromMemory = true;
    this.log.warn(
      { why, podCIDRs: mem.podCIDRs, mtu: this.mtu, routeMtu: this.routeMtu },
      'serving ADD with the pod CIDRs remembered from the last run; routes and rules wait for the API server',
    );
    this.background.track('publishing the config list from memory', this.refreshListFromMemory(mem));
  }

  /**
   * Pods get the MTU of the config list in place, the last run's. An MTU changed since (another
   * --mtu, or detection after an --mtu, whose remembered value is no detected one) reaches the pods
   * started while the API is away only if the list is written again now, not at the first pass.
   */
  private async refreshListFromMemory(mem: RememberedNode): Promise<void> {
    const { config, log } = this;
    if (config.mtu === 0 && mem.mtuSource.startsWith('configured')) {
      const self = { name: this.nodeName, podCIDRs: mem.podCIDRs, internalIPs: mem.internalIPs };
      const choice = await detectMtu(this.host!, self, config.mode, { log });
      // A pass that came meanwhile decided with the API's Node: that choice stands.
      if (this.servingFromMemory && !this.ready) this.mtuChoice = choice;
    }
    if (!config.publishCniConfig || !this.servingFromMemory || this.ready || this.abort.signal.aborted)
      return;
    if (ipv6MtuProblem(this.mtu, mem.podCIDRs, this.mtuChoice.source) !== undefined) return;
    await this.cniPublisher().publish(this.mtu);
  }

  /** The one publisher of the config list (it keeps the VERSION probes' cache and what it logged). */
  private cniPublisher(): CniConfigPublisher {
    this.publisher ??= new CniConfigPublisher(this.config, this.log, this.abort.signal);
    return this.publisher;
  }

  /** The pods' host ends against their leases (host-side-check.ts), in the background. */
  private checkHostSides(): void {
    const check = this.hostSideCheck;
    const ipam = this.ipam;
    if (check === undefined || ipam === undefined || this.abort.signal.aborted) return;
    this.background.track(
      "checking the pods' host ends",
      check.run(() => ipam.list(), this.busyKeys),
    );
  }

  /**
   * A route of ours without a gateway was deleted: when it was a pod's host route (its lease's
   * address, host-length), the host ends are checked within the debounce, not at the next pass
   * (up to a resync period). Our own DELs release the lease before they delete its routes.
   */
  private onPodRouteDeleted(route: RouteInfo): void {
    const [address, length] = route.dst.split('/');
    if (length !== (route.family === 4 ? '32' : '128') || this.hostSideSoon !== undefined) return;
    if (address === undefined || this.ipam?.isLeased(address) !== true) return;
    this.checkHostSidesSoon();
  }

  /**
   * A pod's host veth deleted or set down. DEL releases the lease before it deletes the veth: one
   * whose lease is held went under its pod (an IPv4-only pod's has no other notice of it).
   */
  private onPodVethLost(name: string): void {
    if (this.hostSideSoon !== undefined || this.ipam === undefined) return;
    if (this.ipam.list().some((l) => hostVethName(l.containerId, l.ifname) === name))
      this.checkHostSidesSoon();
  }

  private checkHostSidesSoon(): void {
    this.hostSideSoon = setTimeout(() => {
      this.hostSideSoon = undefined;
      this.checkHostSides();
    }, HOST_SIDE_DEBOUNCE_MS);
    this.hostSideSoon.unref();
  }

  /** The node's IPv6 routes from router advertisements survive IPv6 forwarding (forwarding.ts). */
  private raGuard(): RouterAdvertisementGuard {
    return {
      // Read on the JS thread, whose namespace is the node's (an async read would run elsewhere).
      ipv6RouteTable: () => readFileSync('/proc/thread-self/net/ipv6_route', 'utf8'),
      log: this.log,
    };
  }

  /** Turns forwarding on for the remembered CIDRs; why memory cannot be used when that fails. */
  private forwardingRefusal(podCIDRs: readonly string[]): string | undefined {
    try {
      enableForwarding(this.ports.netns, podCIDRs, this.raGuard());
      return undefined;
    } catch (err) {
      return `IP forwarding could not be turned on: ${errorText(err)}`;
    }
  }

  private async removeMasqLeftovers(): Promise<void> {
    const remove = this.ports.masq === undefined ? this.ports.removeMasqLeftovers : undefined;
    if (remove === undefined) return;
    try {
      if (await remove())
        this.log.info(
          'masquerading and the source check are off: removed the nftables table an earlier run left',
        );
    } catch (err) {
      // Not fatal: routing works either way; the operator needs to know pods may still be masqueraded.
      this.log.warn(
        { error: errorText(err) },
        'masquerading is off, but the masquerade table an earlier run left could not be removed: pods may still be masqueraded (trellis-agent uninstall removes it)',
      );
    }
  }

  private startCluster(): ClusterView {
    const kube = this.ports.kube;
    if (kube === undefined) {
      return staticCluster({ name: this.nodeName, podCIDRs: this.config.podCIDRs, internalIPs: [] });
    }
    // A failing list or watch retries with backoff: said when it starts, changes or recovers.
    const failures = new FailureLog(this.log, 'node list or watch failed; retrying with backoff');
    const recovered = (): void => failures.succeeded('the Node list and watch work again');
    const informer = kube.startNodeInformer({
      signal: this.abort.signal,
      // No periodic onSync from the cache: the controller's own resync timer already runs a full pass
      // every resyncMs, and the two timers meant two full passes per period (off by the start-up gap).
      resyncMs: 0,
      // Only the annotations routes depend on: every agent's report (trellis.dev/agent) changing would
      // otherwise be a changed view, a conversion and a per-node step on every other agent.
      annotations: (key) => ROUTING_ANNOTATIONS.includes(key),
      onSync: () => {
        this.nodeStatus?.relisted();
        this.controller?.markDirty('the list of Nodes was read');
      },
      // Per-node steps: the controller reads the node's current state from the cache by name.
      onEvent: (_type, node) => this.controller?.enqueue(node.name),
      onAnswered: recovered,
      // The controller's own wording for a step with nothing to do: this one never reaches it.
      onUnchanged: (name) => this.log.debug({ peer: name, watch: 'unchanged' }, 'node unchanged'),
      onError: (err, restartInMs) => {
        failures.failed(err, { restartInMs });
        this.log.debug({ error: err.message, restartInMs }, 'node list or watch retry scheduled');
        // restartInMs 0: a callback of ours threw (the informer carries on), not the API server.
        if (restartInMs > 0) this.lastWatchFailure = { at: new Date().toISOString(), error: err.message };
        this.serveFromMemory(`the first list of Nodes failed: ${err.message}`);
      },
      onInvalid: (problem) => this.log.warn({ problem }, 'Node object skipped'),
      onIgnored: (problem) => this.log.warn({ problem }, 'part of a Node object ignored'),
    });
    this.informer = informer;
    return informer;
  }

  /** After every successful pass: keep the MTU and config list current, become ready once. */
  private async onSynced(
    self: ClusterNode,
    vteps: readonly Pick<DeviceState, 'family' | 'mac'>[] = [],
    directSubnets: Partial<Record<Family, string>> = {},
  ): Promise<void> {
    this.checkHostSides();
    void this.checkFirewallIfMoved();
    this.nodeStatus?.publishAnnotations(self, vteps, directSubnets);
    if (this.config.mtu === 0) await this.followDetectedMtu(self);
    keepForwardingOn(this.ports.netns, self.podCIDRs, this.log, this.raGuard());
    await this.rememberNode(self);
    // Stopping (SIGTERM, or a start that failed after the controller began its first pass): a pass
    // still in flight neither publishes the config list nor declares the node ready.
    if (this.abort.signal.aborted) return;
    if (!(await this.publishConfig(self))) return;
    if (this.ready) this.nodeStatus?.networkUpFor(self);
    else this.becomeReady(self);
  }

  /** The pod MTU as the links are now (no --mtu); the uplinks it comes from are followed. */
  private async followDetectedMtu(self: ClusterNode): Promise<void> {
    const { config, log } = this;
    const choice = await detectMtu(this.host!, self, config.mode, { last: this.mtuChoice, log });
    this.linkMtuWatch?.follow(choice.links ?? []);
    const changed = choice.mtu !== this.mtuChoice.mtu || choice.overhead !== this.mtuChoice.overhead;
    this.mtuChoice = choice;
    if (changed || !this.ready) {
      log.info(
        { mtu: this.mtu, routeMtu: this.routeMtu, source: choice.source, mode: config.mode },
        'pod MTU',
      );
    }
  }

  /** node.json, for a restart while the API is unreachable (Kubernetes mode). */
  private async rememberNode(self: ClusterNode): Promise<void> {
    if (this.nodeFile === undefined || this.ipam === undefined) return;
    // A pass ran, so the ranges are this Node's pod CIDRs.
    const { mtu, overhead, source } = this.mtuChoice;
    await this.nodeFile.save({
      node: this.nodeName,
      podCIDRs: this.ipam.ranges(),
      mtu,
      overhead,
      mtuSource: source,
      mode: this.config.mode,
      internalIPs: [...self.internalIPs],
    });
  }

  /**
   * Writes the config list with the pod MTU of now (when the agent publishes it); false while that
   * keeps the node from being ready: an MTU IPv6 pods cannot have, or CNI binaries that do not run.
   */
  private async publishConfig(self: ClusterNode): Promise<boolean> {
    const { config, log } = this;
    const mtuProblem = ipv6MtuProblem(this.mtu, self.podCIDRs, this.mtuChoice.source);
    if (mtuProblem !== this.mtuProblem) {
      this.mtuProblem = mtuProblem;
      if (mtuProblem !== undefined) log.error({ mtu: this.mtu, podCIDRs: self.podCIDRs }, mtuProblem);
      else log.info({ mtu: this.mtu }, 'the pod MTU carries IPv6 again');
    }
    if (mtuProblem !== undefined) {
      // Every ADD would fail: not ready, nothing published. Once ready, the list in place (with the
      // MTU it had) stays; status and doctor show the problem.
      if (this.ready) return true;
      this.waitingFor = `a pod MTU of ${IPV6_MIN_MTU} or more (${mtuProblem})`;
      return false;
    }
    if (!config.publishCniConfig) return true;
    const block = await this.cniPublisher().publish(this.mtu);
    // SIGTERM while the VERSION probes ran: not ready now (the publisher wrote nothing).
    if (this.abort.signal.aborted) return false;
    if (block === undefined) return true;
    this.waitingFor = describePublishBlock(block, config.cniBinDir);
    if (!this.ready && 'problems' in block && block.problems.every((p) => p.transient === true))
      this.retryPublishSoon();
    // Before the first publication it keeps the node from being ready; after it, the list in place
    // stays, the problem shows in status and doctor (cniBinaryProblems), and the node's condition is
    // still kept up to date.
    return this.ready;
  }

  /** A full pass in TRANSIENT_PUBLISH_RETRY_MS, unless one is asked for already or the node is ready by then. */
  private retryPublishSoon(): void {
    if (this.publishRetry !== undefined) return;
    this.publishRetry = setTimeout(() => {
      this.publishRetry = undefined;
      if (!this.ready) this.controller?.markDirty('the CNI binaries asked again', true);
    }, TRANSIENT_PUBLISH_RETRY_MS);
    this.publishRetry.unref();
  }

  /** The first pass that leaves nothing to wait for: ADD and STATUS are served from here on. */
  private becomeReady(self: ClusterNode): void {
    const { config, log } = this;
    this.ready = true;
    this.servingFromMemory = false;
    this.waitingFor = undefined;
    log.info(
      {
        podCIDRs: self.podCIDRs,
        mode: config.mode,
        mtu: this.mtu,
        socket: config.socket,
        leases: this.ipam?.list().length ?? 0,
        standalone: this.ports.kube === undefined,
      },
      'trellis agent ready',
    );
    this.nodeStatus?.networkUpFor(self);
    this.background.track('collecting leases of pods gone', this.collectLeases());
    this.background.every(
      'refreshing the ready mark',
      READY_MARK_REFRESH_MS,
      async () => {
        // Only while the socket the shim connects to is there: an agent whose socket file was removed
        // under it serves no ADD, and STATUS must not go on vouching for it.
        if (this.cniRefusal() === undefined && existsSync(config.socket)) this.readyMark?.touch();
      },
      true,
    );
  }

  /** A running pod's veth pair set up again from its lease, as its ADD did (HostSideCheck). */
  private async reattach(lease: Lease): Promise<void> {
    if (this.datapath === undefined || lease.netns === undefined) return;
    await addAttachment(this.datapath, {
      containerId: lease.containerId,
      ifname: lease.ifname,
      netns: lease.netns,
      mtu: lease.mtu ?? this.mtu,
      configMtu: lease.mtu,
      routeMtu: this.routeMtu,
      nodeCidrs: this.ipam?.ranges() ?? [],
      pod: { namespace: lease.podNamespace, name: lease.podName, uid: lease.podUid },
      network: lease.network,
      unrecordedNetwork: PUBLISHED_NETWORK_NAME,
    });
  }

  private async rebuildHeldLeases(): Promise<void> {
    if (this.ipam === undefined || this.host === undefined) return;
    if (this.ipam.heldKeys().length === 0) {
      this.heldOutsideRanges = false; // gone meanwhile (a DEL): nothing for the retry timer
      return;
    }
    const kube = this.ports.kube;
    const { released, unremoved } = await rebuildHeldLeases({
      ipam: this.ipam,
      host: this.host,
      netns: this.ports.netns,
      busy: this.busyKeys,
      podsOnNode:
        kube === undefined ? undefined : async () => (await kube.listPodsOnNode(this.nodeName)).items,
      log: this.component('ipam'),
    });
    // Held addresses whose veth is gone, as the held sweep counts them: most go here, at the first
    // ranges after a restart, when the pod died while the agent was down.
    if (released > 0) this.hooks.onLeasesReclaimed?.('held-gone', released);
    // Pods outside the pod CIDRs still held (their veth or release failed; the warnings say which):
    // tried again on a timer of their own. Failing the range change would fail every pass (no
    // routes, and no readiness at start) over one stale veth.
    this.heldOutsideRanges = unremoved > 0;
  }

  /** Held addresses whose pod's veth is gone, between the rebuilds (held-sweep.ts). */
  private async releaseHeldOfPodsGone(): Promise<void> {
    if (this.ipam === undefined || this.host === undefined || this.ipam.heldKeys().length === 0) return;
    const released = await releaseHeldWithoutVeth({
      ipam: this.ipam,
      host: this.host,
      busy: this.busyKeys,
      log: this.component('ipam'),
    });
    if (released > 0) this.hooks.onLeasesReclaimed?.('held-gone', released);
  }

  private async collectLeases(): Promise<void> {
    const kube = this.ports.kube;
    if (kube === undefined || this.datapath === undefined) return;
    const released = await collectLeases({
      kube,
      nodeName: this.nodeName,
      datapath: this.datapath,
      busy: this.busyKeys,
      log: this.log,
    });
    if (released > 0) this.hooks.onLeasesReclaimed?.('api-gc', released);
  }

  /** The detection: the MTU of traffic leaving the node, where it came from, the overhead subtracted. */
  mtuStatus(): MtuChoice & { overhead: number } {
    return { ...this.mtuChoice };
  }

  /** The VXLAN devices after the last pass (none in host-gw or before the first pass). */
  overlayDevices(): DeviceState[] {
    return this.overlay?.devices().map((d) => ({ ...d })) ?? [];
  }

  /**
   * The Node watch's counters alone: the health timer reads them every second, and a whole snapshot
   * (every lease copied) was most of what an idle agent allocated.
   */
  watchSample(): AgentSnapshot['watch'] {
    const inf = this.informer;
    const encoding = this.ports.kube?.nodesEncoding?.();
    return inf === undefined
      ? undefined
      : {
          restarts: inf.restarts,
          relists: inf.relists,
          unchangedEvents: inf.unchangedEvents,
          resourceVersion: inf.resourceVersion,
          synced: inf.hasSynced(),
          ...(inf.silentMs === undefined ? {} : { silentMs: Math.round(inf.silentMs) }),
          ...(this.lastWatchFailure === undefined ? {} : { lastFailure: this.lastWatchFailure }),
          ...(encoding === undefined ? {} : { encoding }),
        };
  }

  /**
   * The host firewall's forward chains: the first check runs when the pod CIDRs are known
   * (onRangesSet), then every --firewall-check-seconds, and soon after a table that dropped pod
   * traffic changes (firewall-tables.ts).
   */
  private startFirewallWatch(): void {
    const { config } = this;
    const read = this.ports.readForwardFirewall;
    if (read === undefined || config.firewallCheckMs === 0) return;
    const check = (): Promise<void> => this.checkFirewall();
    const host = this.host!;
    this.forwardPrefixes = new ForwardPrefixes({
      own: () => this.ipam?.ranges() ?? [],
      accepted: () => this.controller?.acceptedPodCidrs(),
      nodeIPs: () => (this.cluster?.list() ?? []).flatMap((n) => n.internalIPs),
      connected: async () => connectedSubnets(await readLocalLinks(host)),
      log: this.component('firewall'),
    });
    const write = config.acceptForward ? this.ports.writeForwardFirewall : undefined;
    const { watch, subscription } = startFirewallChecks({
      events: this.ports.events,
      check,
      read,
      ...(config.mode === 'host-gw'
        ? {}
        : { vxlan: () => vxlanInKinds(this.host!, this.tunnelled, config.vxlanPort) }),
      ...(write === undefined ? {} : { write }),
      own: () => this.ipam?.ranges() ?? [],
      log: this.component('firewall'),
    });
    this.forwardFirewall = watch;
    this.subscriptions.push(subscription);
    this.background.every('checking the host firewall', config.firewallCheckMs, check, false);
  }

  /**
   * The peers the last full pass and the per-node steps since tunnel to, for the firewall's VXLAN check; a family gaining or losing
   * its first tunnelled peer checks at once rather than at the next periodic check.
   */
  private noteTunnelled(decisions: readonly PeerDecision[]): void {
    const before = [...this.tunnelled.keys()].sort().join();
    this.tunnelled = tunnelledPeers(decisions);
    if ([...this.tunnelled.keys()].sort().join() !== before) void this.checkFirewall();
  }

  /**
   * One firewall check, with the prefixes of now. Before the first full pass (pods served from the
   * remembered pod CIDRs while the API is away) or without the links: this node's pod CIDRs, deleting
   * none of our accepts, so pods here get through a forward policy DROP and the last run's wider
   * accepts stay.
   */
  private async checkFirewall(): Promise<void> {
    const prefixes = await this.forwardPrefixes?.current();
    if (prefixes !== undefined) await this.forwardFirewall?.check(prefixes);
    else await this.forwardFirewall?.check(this.ipam?.ranges() ?? [], { keepOthers: true });
  }

  /**
   * After a full pass: a check when the prefixes moved (the first pass, a peer outside the cover, a
   * refusal, the links), else none (the periodic one and the tables' changes keep it up).
   */
  private async checkFirewallIfMoved(): Promise<void> {
    const prefixes = await this.forwardPrefixes?.changed();
    if (prefixes !== undefined) await this.forwardFirewall?.check(prefixes);
  }

  /** Config files that sort before ours in the conf dir, at the last pass (metrics). */
  cniConfigShadowedBy(): readonly string[] {
    return this.publisher?.shadowedBy ?? [];
  }

  /** Chains of the host firewall that drop pod traffic or tunnelled peers' VXLAN, at the last check (metrics). */
  forwardFirewallBlocks(): readonly { family: 4 | 6; direction: string; chain: string }[] {
    const state = this.forwardFirewall?.state();
    return [
      ...(state?.blocks ?? []),
      ...(state?.vxlanBlocks ?? []).map((b) => ({ family: b.family, direction: 'vxlan-in', chain: b.chain })),
    ];
  }

  /** Address use per range (the metrics' IPAM gauges). */
  ipamUsage(): AgentSnapshot['ipamUsage'] {
    return this.ipam?.usage() ?? [];
  }

  /** AgentSnapshot.vethsInFlight. */
  private vethsInFlight(): string[] {
    const names = new Set(this.deleter?.pendingNames());
    for (const k of this.busyKeys) {
      const { containerId, ifname } = attachmentOfKey(k);
      names.add(hostVethName(containerId, ifname));
    }
    return [...names].sort();
  }

  snapshot(): AgentSnapshot {
    const { config } = this;
    return {
      node: this.nodeName,
      standalone: this.ports.kube === undefined,
      mode: config.mode,
      mtu: this.mtu,
      routeMtu: this.routeMtu,
      ...(this.mtuProblem === undefined ? {} : { mtuProblem: this.mtuProblem }),
      podCIDRs: this.ipam?.ranges() ?? [],
      internalIPs: [...(this.cluster?.get(this.nodeName)?.internalIPs ?? [])],
      // What the socket does (ADD served, from memory too), not whether it was ready once.
      ready: this.servesAdd(),
      notReadyReason: this.notReadyReason(),
      socket: config.socket,
      stateDir: config.stateDir,
      cniConfDir: config.cniConfDir,
      cniBinDir: config.cniBinDir,
      ...(config.publishCniConfig ? {} : { cniConfigPublished: false as const }),
      ...(this.publisher !== undefined && this.publisher.problems.length > 0
        ? { cniBinaryProblems: this.publisher.problems }
        : {}),
      ...(this.publisher !== undefined && this.publisher.shadowedBy.length > 0
        ? { cniConfigShadowedBy: this.publisher.shadowedBy }
        : {}),
      ...(config.netnsDir === ''
        ? {}
        : {
            preparedPairs: {
              dir: config.netnsDir,
              watching: this.netnsDirWatch?.watching === true,
              waiting: this.prepared?.size ?? 0,
            },
          }),
      leases: this.ipam?.list() ?? [],
      held: (this.ipam?.heldKeys() ?? []).map(({ containerId, ifname }) => ({ containerId, ifname })),
      vethsInFlight: this.vethsInFlight(),
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
      watch: this.watchSample(),
      ...this.clampState(),
      masquerade: {
        enabled: this.ports.masq !== undefined && config.masquerade,
        noMasqueradeCIDRs: [...config.noMasqueradeCIDRs],
        ...(this.controller?.masqError === undefined ? {} : { lastError: this.controller.masqError }),
      },
      ...(this.forwardFirewall !== undefined
        ? { forwardFirewall: this.forwardFirewall.state() }
        : config.firewallCheckMs === 0
          ? { forwardFirewall: { blocks: [], off: true as const } }
          : {}),
    };
  }

  /** Undefined before start. Same planner input as the controller's passes (mode, VXLAN devices). */
  async routeState(): Promise<AgentRouteState | undefined> {
    if (this.host === undefined || this.cluster === undefined) return undefined;
    return computeRouteState({
      host: this.host,
      cluster: this.cluster,
      nodeName: this.nodeName,
      mode: this.config.mode,
      overlayDevices: this.overlayDevices(),
      ...(this.routes === undefined ? {} : { linksToPlan: this.routes.linksToPlan.bind(this.routes) }),
    });
  }

  /**
   * Makes a pod's veth pair when its namespace is pinned in `dir`, while the runtime starts the CNI
   * plugin (prepared-pairs.ts); only while ADD is served, for what ADD would give a pod now.
   */
  private prepareAsNamespacesAppear(dir: string): void {
    const datapath = this.datapath!;
    const ipam = this.ipam!;
    const prepared = new PreparedPairs({
      host: datapath.host,
      netns: datapath.netns,
      deleter: datapath.deleter,
      // Not while another network's own config sorts first: the runtime gives new pods that network, and
      // a pair made in their namespaces would be a trellis link in pods trellis never gets an ADD for.
      // A meta-plugin's (Multus) may hand them on to trellis: pairs go on being made then.
      settings: () =>
        this.servesAdd() && this.publisher?.shadowedByNetwork !== true
          ? { mtu: this.mtu, ipv6: ipam.ranges().some((r) => r.includes(':')) }
          : undefined,
      busy: () => this.busyKeys.size > 0,
      log: this.component('cni'),
      onOutcome: this.hooks.onPreparedPair,
    });
    const watch = new NetnsDirWatch(
      dir,
      { appeared: (path) => prepared.prepare(path), removed: (path) => prepared.discard(path) },
      this.log,
    );
    if (!watch.start()) return;
    this.prepared = prepared;
    this.netnsDirWatch = watch;
    datapath.prepared = prepared;
    this.log.info({ dir }, 'preparing veth pairs as pod namespaces appear');
  }

  /** SIGTERM: stop watches, finish in-flight calls, close the socket; routes, config and rules stay. */
  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.graceTimer);
    clearTimeout(this.hostSideSoon);
    clearTimeout(this.publishRetry);
    for (const s of this.subscriptions) s.close();
    // Pairs no ADD took go now (a call in flight makes its own); their deletions are drained below.
    this.netnsDirWatch?.stop();
    // One deadline for the whole stop, under the pod's terminationGracePeriodSeconds (30): the waits
    // below added up to more, and a kubelet's SIGKILL leaves no "stopped" line and no clean-stop mark.
    const deadline = new StopDeadline(STOP_DEADLINE_MS);
    await deadline.within('pairs prepared for pods', this.prepared?.stop());
    const cut = (await this.server?.close(Math.min(CNI_CALLS_STOP_GRACE_MS, deadline.left()))) ?? 0;
    if (cut > 0) deadline.stillRunning(`${cut} CNI call(s) (cut: the runtime retries them)`);
    await deadline.within('the reconcile loop', this.controller?.done);
    await deadline.within('the Node watch', this.informer?.done);
    await deadline.within('veth deletions', this.deleter?.drain());
    // A firewall check or a periodic task still running could write after the locks are released
    // (an accept inserted once uninstall has removed them all): waited for, within reason.
    const backgroundMs = Math.min(STOP_BACKGROUND_WAIT_MS, deadline.left());
    if (!(await this.background.stop(backgroundMs, [this.forwardFirewall?.stop()])))
      deadline.stillRunning('background work');
    if (deadline.unfinished.length > 0)
      this.log.warn(
        { still: deadline.unfinished, deadlineMs: STOP_DEADLINE_MS },
        'stopping with work still running (its wait or the stop deadline ran out)',
      );
    this.host?.close();
    if (this.lock !== undefined) markStopped(this.config.stateDir);
    this.lock?.release();
    this.log.info('trellis agent stopped');
  }
}

/** A path's link count; undefined when nothing is there. One that cannot be read counts as live. */
function linksOf(path: string): { nlink: number } | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return { nlink: 1 };
  }
}
