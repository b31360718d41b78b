import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildConflist, CONFLIST_FILE_NAME } from '../../../pkg/cniconf/index.ts';
import { type AgentProcess, namesOneComponent, startAgent } from '../agent-process.ts';
import {
  AGENT_BINARY,
  addList,
  type ConfList,
  delList,
  REFERENCE_PLUGIN_DIR,
  runPlugin,
} from '../cni-driver.ts';
import { delNetns, ip, ipJson, nsSysctl, TEST_NETNS_PREFIX } from '../netns.ts';
import { dirIfSignalled, namespacesIfSignalled } from '../signal-undo.ts';
import { ApiRequestError, UnixApiClient } from './api.ts';
import { FaultAdminClient } from './fault-admin.ts';
import {
  API_PORT,
  addrOf,
  type ByFamily,
  checkFamilies,
  controlPlaneAddr,
  DUAL_STACK,
  ECHO_PORT,
  type Family,
  internalIPs,
  type NodePlan,
  nodeObject,
  planNode,
  planNodes,
  podCIDROf,
  type SegmentSpec,
} from './plan.ts';
import {
  firstLine,
  isRunning,
  killNamespaceProcesses,
  namespacesWithPrefix,
  pool,
  processesMentioning,
  sleep,
  trackExit,
  waitForBuild,
} from './processes.ts';
import { type ConnectivityMatrix, type MatrixCell, type PodEndpoint, summarizeMatrix } from './report.ts';
import { addSegment, wireHost, wireInternet } from './wiring.ts';

const execFileP = promisify(execFile);

/**
 * A multi-node trellis cluster in network namespaces, for the demo and the cluster tests:
 *
 *   fabric ns:  one bridge per segment (the shared L2s)
 *   router ns:  one leg per segment + an uplink to the "internet" ns; forwards, knows no pod CIDRs
 *   cp ns:      the test API server (segment 0), reached by the agents over the fabric
 *   node ns:    eth0 on its segment, default routes via the router, one real trellis agent
 *   pod ns:     created as a runtime does (lo down), wired by the real shim from the node's config list
 *
 * The cluster is dual-stack unless `families` says [4] or [6]: then the nodes' eth0, their Node
 * objects, the API server's address the agents use and the pods have that family only.
 *
 * Everything is named `trl-<tag>-...` (namespaces, the temp dir) so leftovers() can prove teardown
 * removed it all. Nothing touches the root namespace: every `ip` runs with `-n` or `netns exec`.
 */

export type AgentMode = 'kubernetes' | 'standalone';
export type DatapathMode = 'auto' | 'host-gw' | 'vxlan';

export interface TestbedOptions<F extends Family = Family> {
  /** L2 segments joined by the router; default one segment of 3 nodes. */
  segments?: SegmentSpec[];
  /**
   * The cluster's IP families: [4, 6] (default, dual-stack), [4] or [6] (single-stack, as kubeadm's or
   * kind's ipFamily ipv4/ipv6). A single-stack node has only that family's address and default route on
   * eth0, and its Node object only that family's InternalIP and pod CIDR; the agents reach the API server
   * at its address of the first family.
   */
  families?: readonly F[];
  /** The agents' --mode; default auto. */
  mode?: DatapathMode;
  /**
   * 'kubernetes' (default): the contract the product runs with: Nodes in the API server, the agent
   * programs routes and publishes the config list. 'standalone': agents get --pod-cidr and the test
   * bed itself writes the config list and static same-segment routes, to check the plumbing alone.
   */
  agentMode?: AgentMode;
  /** Every agent log line, live, with its node name. */
  onLog?: (node: string, line: Record<string, unknown>) => void;
  /** Progress messages ("creating namespaces", ...). */
  onProgress?: (message: string) => void;
  /**
   * An agent exited that the test bed did not stop or kill (a crash): its exit code or signal and the
   * end of its stderr, where a crash's stack goes.
   */
  onAgentExit?: (node: string, exit: { code: number | null; signal: string | null; stderr: string }) => void;
  /** Extra agent flags. */
  agentArgs?: string[];
  /** Variables added to every agent's environment. */
  agentEnv?: Record<string, string>;
  /**
   * Per node: another launcher for its agent (another CPU's build, run under emulation) and variables
   * added to its environment after agentEnv's.
   */
  agentOverrides?: Record<string, { binary: string; env?: Record<string, string> }>;
}

export interface TestbedNode<F extends Family = Family> {
  readonly plan: NodePlan<F>;
  readonly name: string;
  readonly ns: string;
  /** The agent's directory: state/, cni.sock, net.d/, bin/. */
  readonly dir: string;
  /** The running agent, if any. */
  agent: AgentProcess | undefined;
  /** Every log line of every agent run on this node, in order. */
  readonly logs: Record<string, unknown>[];
  /** Those lines that do not name their component exactly once (namesOneComponent). */
  readonly unnamed: string[];
  podCount: number;
}

interface TestbedPodBase extends Omit<PodEndpoint, 'v4' | 'v6'> {
  /** The Pod object's uid (Kubernetes mode), also passed to the shim as K8S_POD_UID. */
  readonly uid?: string;
  readonly ns: string;
  readonly netnsPath: string;
  readonly containerId: string;
  /** The CNI result the runtime got. */
  readonly result: Record<string, unknown>;
  /** Every address in the CNI result, as it listed them (prefix length dropped). */
  readonly ips: readonly string[];
}

/** A pod: `v4` and `v6` are its addresses of the cluster's families (from the CNI result). */
export type TestbedPod<F extends Family = Family> = TestbedPodBase & ByFamily<F>;

/** What the echo server saw (`from`, `port`) and where its answer came from (`replyFrom`, `replyPort`). */
export interface EchoAnswer {
  from: string;
  port: number;
  replyFrom: string;
  replyPort: number;
}

export interface EchoServer {
  readonly ns: string;
  readonly port: number;
  stop(): Promise<void>;
}

interface Tracked {
  child: ChildProcess;
  what: string;
  exited: Promise<void>;
}

const LOOPBACK = join(REFERENCE_PLUGIN_DIR, 'loopback');
/** The Kubernetes namespace of every test bed pod. */
export const POD_NAMESPACE = 'default';
/** What installSignalHandlers tears down on: Ctrl-C, `kill`, and a closed terminal or ssh session. */
const TEARDOWN_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const ECHO_SCRIPT = join(import.meta.dirname, 'echo.ts');
const CONTROL_PLANE_SCRIPT = join(import.meta.dirname, 'control-plane.ts');

export class Testbed<F extends Family = Family> {
  /** `trl-<4 hex>`: every namespace and the temp dir start with it. */
  readonly prefix: string;
  readonly dir: string;
  readonly fabricNs: string;
  readonly routerNs: string;
  readonly controlPlaneNs: string;
  readonly internetNs: string;
  readonly kubeconfig: string;
  readonly apiSocket: string;
  readonly api: UnixApiClient;
  /** The API server's fault hooks (outage, compaction, watch resets): see fault-admin.ts. */
  readonly faults: FaultAdminClient;
  readonly mode: DatapathMode;
  readonly agentMode: AgentMode;
  /** The cluster's IP families ([4, 6] unless the options said otherwise). */
  readonly families: readonly F[];
  /** The API server URL the agents use (on the fabric, its address of the first family). */
  readonly apiUrl: string;
  private readonly opts: TestbedOptions<F>;
  private readonly nodeMap = new Map<string, TestbedNode<F>>();
  private readonly podList: TestbedPod<F>[] = [];
  private readonly tracked: Tracked[] = [];
  private readonly segments = new Set<number>();
  private nextIndex = 1;
  private tornDown = false;
  private teardownPromise: Promise<void> | undefined;
  private signalHandler: ((signal: NodeJS.Signals) => void) | undefined;
  /** Drops the namespaces and the temp dir from what a signal undoes (signal-undo.ts). */
  private readonly unregisterUndo: () => void;
  /** Agents the test bed stopped or killed itself: their exits are no crash. */
  private readonly endedHere = new WeakSet<AgentProcess>();

  /** Names and the temp dir only; start() builds. Use create() unless you need the instance early. */
  constructor(opts: TestbedOptions<F> = {}) {
    this.families = checkFamilies(opts.families ?? (DUAL_STACK as readonly Family[] as readonly F[]));
    this.opts = opts;
    this.prefix = `${TEST_NETNS_PREFIX}${randomBytes(2).toString('hex')}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    this.fabricNs = `${this.prefix}-fab`;
    this.routerNs = `${this.prefix}-rtr`;
    this.controlPlaneNs = `${this.prefix}-cp`;
    this.internetNs = `${this.prefix}-inet`;
    this.kubeconfig = join(this.dir, 'kubeconfig');
    this.apiSocket = join(this.dir, 'api.sock');
    this.api = new UnixApiClient(this.apiSocket);
    this.faults = new FaultAdminClient(join(this.dir, 'admin.sock'));
    this.mode = opts.mode ?? 'auto';
    this.agentMode = opts.agentMode ?? 'kubernetes';
    this.apiUrl = `http://${this.apiHost(true)}:${API_PORT}`;
    const unregister = [namespacesIfSignalled(this.prefix), dirIfSignalled(this.dir)];
    this.unregisterUndo = () => {
      for (const u of unregister) u();
    };
  }

  /** Builds the whole test bed; on any failure removes what was built and rethrows. */
  static async create<F extends Family = Family>(opts: TestbedOptions<F> = {}): Promise<Testbed<F>> {
    const tb = new Testbed<F>(opts);
    await tb.start();
    return tb;
  }

  /**
   * Builds the topology, the control plane, the nodes and their agents (ready when this resolves).
   * On failure removes what was built and rethrows. A teardown() that starts meanwhile (Ctrl-C) makes
   * the remaining steps fail fast, so nothing is created after it.
   */
  async start(): Promise<void> {
    try {
      await this.build(this.opts.segments ?? [{ nodes: 3 }]);
    } catch (err) {
      await this.teardown().catch(() => {});
      throw err;
    }
  }

  private assertLive(): void {
    if (this.tornDown) throw new Error(`test bed ${this.prefix} is torn down`);
  }

  private progress(message: string): void {
    this.opts.onProgress?.(message);
  }

  /** The control plane's address of the cluster's first family (in brackets for a URL). */
  private apiHost(bracketed = false): string {
    const family: Family = this.families[0] ?? 4;
    const a = controlPlaneAddr(family);
    return bracketed && family === 6 ? `[${a}]` : a;
  }

  private async build(segments: SegmentSpec[]): Promise<void> {
    const plans = planNodes(segments, this.families);
    await waitForBuild(60_000);
    this.progress(`namespaces with prefix ${this.prefix}, temp dir ${this.dir}`);
    this.addNs(this.fabricNs);
    this.addNs(this.routerNs);
    nsSysctl(this.routerNs, 'net.ipv4.ip_forward', '1');
    nsSysctl(this.routerNs, 'net.ipv6.conf.all.forwarding', '1');
    for (let s = 0; s < segments.length; s++) this.ensureSegment(s);
    this.buildInternet();
    await this.buildControlPlane();
    this.progress(`API server ${this.apiUrl} (namespace ${this.controlPlaneNs})`);
    this.nextIndex = plans.length + 1;
    // The kernel wiring runs synchronously in order; the Node objects and install-cni overlap.
    await Promise.all(plans.map((plan) => this.createNodeNs(plan)));
    this.progress(`starting ${plans.length} agents (mode ${this.mode}, ${this.agentMode})`);
    await Promise.all(plans.map((p) => this.startAgent(p.name)));
    if (this.agentMode === 'standalone') this.programStaticRoutes();
  }

  private addNs(name: string, loUp = true): void {
    this.assertLive();
    execFileSync('ip', ['netns', 'add', name]);
    if (loUp) ip(name, 'link', 'set', 'lo', 'up');
  }

  /** A bridge in the fabric and a router leg for segment s (idempotent). */
  private ensureSegment(s: number): void {
    if (this.segments.has(s)) return;
    addSegment(this.fabricNs, this.routerNs, s);
    this.segments.add(s);
  }

  private buildInternet(): void {
    this.addNs(this.internetNs);
    wireInternet(this.internetNs, this.routerNs);
  }

  private async buildControlPlane(): Promise<void> {
    const ns = this.controlPlaneNs;
    this.addNs(ns);
    wireHost(this.fabricNs, ns, {
      outer: 'cp',
      segment: 0,
      v4: controlPlaneAddr(4),
      v6: controlPlaneAddr(6),
    });
    const child = this.spawnIn(ns, 'control plane', [
      process.execPath,
      CONTROL_PLANE_SCRIPT,
      '--listen',
      `${this.apiHost(true)}:${API_PORT}`,
      '--kubeconfig-out',
      this.kubeconfig,
      '--unix',
      this.apiSocket,
      '--admin',
      join(this.dir, 'admin.sock'),
    ]);
    await firstLine(child, 'control plane', 20_000);
  }

  /** Starts a long-running process inside one of our namespaces, tracked for teardown. */
  private spawnIn(ns: string, what: string, argv: string[]): ChildProcess {
    this.assertLive();
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.tracked.push({ child, what, exited: trackExit(child) });
    return child;
  }

  private async createNodeNs(plan: NodePlan<F>): Promise<TestbedNode<F>> {
    this.ensureSegment(plan.segment);
    const ns = `${this.prefix}-n${plan.index}`;
    const dir = join(this.dir, plan.name);
    mkdirSync(join(dir, 'net.d'), { recursive: true });
    mkdirSync(join(dir, 'bin'), { recursive: true });
    const node: TestbedNode<F> = {
      plan,
      name: plan.name,
      ns,
      dir,
      agent: undefined,
      logs: [],
      unnamed: [],
      podCount: 0,
    };
    this.nodeMap.set(plan.name, node);
    this.addNs(ns);
    // A fresh host routes nothing: what forwarding a node has is what its agent turned on. (A new
    // namespace copies IPv4's setting from the root namespace, whatever that host runs.)
    nsSysctl(ns, 'net.ipv4.ip_forward', '0');
    nsSysctl(ns, 'net.ipv6.conf.all.forwarding', '0');
    wireHost(this.fabricNs, ns, { outer: `n${plan.index}`, segment: plan.segment, v4: plan.v4, v6: plan.v6 });
    if (this.agentMode === 'kubernetes') {
      await Promise.all([this.api.createNode(nodeObject(plan)), this.installCni(node)]);
    }
    return node;
  }

  /** What the DaemonSet's init container does: `trellis-agent install-cni` into the node's bin dir. */
  private async installCni(node: TestbedNode<F>): Promise<void> {
    await execFileP('ip', [
      'netns',
      'exec',
      node.ns,
      AGENT_BINARY,
      'install-cni',
      '--cni-bin-dir',
      join(node.dir, 'bin'),
      '--state-dir',
      join(node.dir, 'state'),
    ]);
  }

  // ---- nodes and agents ----

  nodes(): TestbedNode<F>[] {
    return [...this.nodeMap.values()];
  }

  node(name: string): TestbedNode<F> {
    const n = this.nodeMap.get(name);
    if (n === undefined) throw new Error(`no node ${name} (have ${[...this.nodeMap.keys()].join(', ')})`);
    return n;
  }

  /** Adds a node at runtime: namespace, Node object, agent (ready when this resolves). */
  async addNode(opts: { segment?: number } = {}): Promise<TestbedNode<F>> {
    const plan = planNode(this.nextIndex++, opts.segment ?? 0, this.families);
    const node = await this.createNodeNs(plan);
    await this.startAgent(plan.name);
    if (this.agentMode === 'standalone') this.programStaticRoutes();
    return node;
  }

  /** Deletes the Node object, then stops its agent and removes its namespace and pods. */
  async deleteNode(name: string): Promise<void> {
    const node = this.node(name);
    if (this.agentMode === 'kubernetes') await this.api.deleteNode(name);
    await this.stopAgent(name);
    for (const p of this.podList.filter((p) => p.node === name)) {
      this.killNsProcesses(p.ns);
      delNetns(p.ns);
      this.podList.splice(this.podList.indexOf(p), 1);
      await this.deletePodObject(p.name);
    }
    this.killNsProcesses(node.ns);
    delNetns(node.ns);
    rmSync(node.dir, { recursive: true, force: true });
    this.nodeMap.delete(name);
  }

  /**
   * Starts (or starts again, on the same state) the node's agent and waits until it is ready;
   * `waitReady: false` returns once it is spawned (an agent that cannot become ready, e.g. during an
   * API outage; call waitReady() later).
   */
  async startAgent(
    name: string,
    opts: { waitReady?: boolean; mode?: DatapathMode; args?: string[] } = {},
  ): Promise<AgentProcess> {
    const node = this.node(name);
    if (
      node.agent !== undefined &&
      node.agent.child.exitCode === null &&
      node.agent.child.signalCode === null
    ) {
      throw new Error(`${name}: agent already running`);
    }
    const onLog = (line: Record<string, unknown>, raw: string): void => {
      node.logs.push(line);
      if (!namesOneComponent(raw)) node.unnamed.push(raw);
      this.opts.onLog?.(name, line);
    };
    this.assertLive();
    const k8s = this.agentMode === 'kubernetes';
    const override = this.opts.agentOverrides?.[name];
    const agent = startAgent({
      ns: node.ns,
      dir: node.dir,
      detached: true,
      onLog,
      ...(k8s
        ? {
            kubernetes: {
              nodeName: name,
              kubeconfig: this.kubeconfig,
              cniConfDir: join(node.dir, 'net.d'),
              cniBinDir: join(node.dir, 'bin'),
              // The DaemonSet's own setting: every address of both families in the node's namespace.
              metricsAddr: ':9743',
            },
          }
        : { podCIDRs: [...node.plan.podCIDRs] }),
      extraArgs: ['--mode', opts.mode ?? this.mode, ...(this.opts.agentArgs ?? []), ...(opts.args ?? [])],
      env: { ...this.opts.agentEnv, ...override?.env },
      ...(override === undefined ? {} : { binary: override.binary }),
    });
    node.agent = agent;
    agent.child.once('exit', (code, signal) => {
      if (this.endedHere.has(agent)) return;
      const stderr = agent.stderr().trim().split('\n').slice(-12).join('\n');
      this.opts.onAgentExit?.(name, { code, signal, stderr });
    });
    if (opts.waitReady !== false) await this.waitReady(name);
    return agent;
  }

  /**
   * The agent logged readiness (in Kubernetes mode that comes after it published the config list)
   * and the node's config list exists: what a kubelet waits for before it starts pods.
   */
  async waitReady(name: string): Promise<void> {
    const node = this.node(name);
    const agent = node.agent;
    if (agent === undefined) throw new Error(`${name}: no agent`);
    await agent.ready();
    const conf = this.conflistPath(name);
    if (this.agentMode === 'standalone') {
      const list = buildConflist({ socket: agent.socket, spoolDir: agent.spoolDir, mtu: 1500 });
      writeFileSync(conf, JSON.stringify(list, null, 2));
    }
    if (!existsSync(conf)) throw new Error(`${name}: agent ready but ${conf} does not exist`);
  }

  /** SIGTERM (graceful) and wait; SIGKILL after 5 s. */
  async stopAgent(name: string): Promise<void> {
    const agent = this.node(name).agent;
    if (agent === undefined) return;
    this.endedHere.add(agent);
    const done = agent.stop();
    const t = setTimeout(() => {
      agent.kill().catch(() => {});
    }, 5000);
    await done;
    clearTimeout(t);
  }

  /** SIGKILL and wait (a crash: no clean-up runs). */
  async killAgent(name: string): Promise<void> {
    const agent = this.node(name).agent;
    if (agent === undefined) return;
    this.endedHere.add(agent);
    await agent.kill();
  }

  /**
   * Kill (default SIGKILL) and start again on the same state; resolves once ready again. With `mode`,
   * that node's agent runs another --mode from then on (one step of a rolling mode change); `args` are
   * extra flags for this start only.
   */
  async restartAgent(
    name: string,
    opts: { signal?: 'SIGKILL' | 'SIGTERM'; mode?: DatapathMode; args?: string[] } = {},
  ): Promise<AgentProcess> {
    if ((opts.signal ?? 'SIGKILL') === 'SIGKILL') await this.killAgent(name);
    else await this.stopAgent(name);
    return this.startAgent(name, {
      ...(opts.mode === undefined ? {} : { mode: opts.mode }),
      ...(opts.args === undefined ? {} : { args: opts.args }),
    });
  }

  /**
   * A network partition between the control plane and everyone else: its port on the fabric bridge goes
   * down (true) or up again (false). Unlike faults.outage() nothing answers: packets vanish, open
   * connections stall until a timeout. The test bed's own client (the unix forwarder, local to the
   * control-plane namespace) still reaches the API.
   */
  partitionControlPlane(down: boolean): void {
    this.assertLive();
    ip(this.fabricNs, 'link', 'set', 'cp', down ? 'down' : 'up');
  }

  conflistPath(name: string): string {
    return join(this.node(name).dir, 'net.d', CONFLIST_FILE_NAME);
  }

  /** The config list the node's agent published, parsed. */
  conflist(name: string): ConfList {
    return JSON.parse(readFileSync(this.conflistPath(name), 'utf8')) as ConfList;
  }

  /** trellis's routes (protocol 126) in a node's namespace, as the kernel shows them. */
  routes(name: string, family: Family): { dst: string; gateway?: string; dev?: string; type?: string }[] {
    return ipJson(this.node(name).ns, `-${family}`, 'route', 'show', 'proto', '126');
  }

  /** Without the controller: routes to same-segment nodes' pod CIDRs, added by the test bed. */
  private programStaticRoutes(): void {
    for (const a of this.nodes()) {
      for (const b of this.nodes()) {
        if (a === b || a.plan.segment !== b.plan.segment) continue;
        for (const f of this.families) {
          ip(a.ns, `-${f}`, 'route', 'replace', podCIDROf(b.plan, f), 'via', addrOf(b.plan, f));
        }
      }
    }
  }

  // ---- pods ----

  /** The pods, ordered by name (pod-<node>-<n>), whatever order they were started in. */
  pods(): TestbedPod<F>[] {
    return [...this.podList].sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  }

  /** A pod namespace (lo down) wired by the real shim with the node's published config list. */
  async addPod(nodeName: string): Promise<TestbedPod<F>> {
    const node = this.node(nodeName);
    const k = ++node.podCount;
    const name = `pod-${node.plan.index}-${k}`;
    const ns = `${this.prefix}-p${node.plan.index}-${k}`;
    this.addNs(ns, false);
    const netnsPath = `/var/run/netns/${ns}`;
    const containerId = randomBytes(32).toString('hex');
    // As the scheduler and kubelet would: the Pod object exists (bound to the node) before its sandbox.
    const uid = this.agentMode === 'kubernetes' ? await this.createPodObject(name, nodeName) : undefined;
    const call = {
      containerId,
      netns: netnsPath,
      ifname: 'eth0',
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${POD_NAMESPACE};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${containerId}${uid === undefined ? '' : `;K8S_POD_UID=${uid}`}`,
      hostNetns: node.ns,
      ...this.cniPath(node),
    };
    // A runtime brings up lo itself (containerd runs the loopback plugin for every pod).
    if (existsSync(LOOPBACK)) {
      const lo = await runPlugin(
        LOOPBACK,
        { ...call, command: 'ADD', ifname: 'lo' },
        JSON.stringify({ cniVersion: '1.0.0', name: 'cni-loopback', type: 'loopback' }),
      );
      if (lo.code !== 0) throw new Error(`${name}: loopback ADD failed: ${lo.stdout}${lo.stderr}`);
    }
    const run = await addList(this.conflist(nodeName), call);
    if (run.code !== 0) throw new Error(`${name}: CNI ADD failed (${run.code}): ${run.stdout}${run.stderr}`);
    const result = run.json as { ips?: { address: string }[] };
    const ips = (result.ips ?? []).map((i) => i.address.split('/')[0]!);
    // The first address of each of the cluster's families; an address of another family stays in
    // `ips` only, for the test to find.
    const byFamily: { v4?: string; v6?: string } = {};
    for (const f of this.families) {
      const a = ips.find((i) => i.includes(':') === (f === 6));
      if (a === undefined) throw new Error(`${name}: no IPv${f} address in ${run.stdout}`);
      byFamily[f === 4 ? 'v4' : 'v6'] = a;
    }
    const pod = {
      name,
      node: nodeName,
      ns,
      netnsPath,
      containerId,
      ...byFamily,
      ips,
      result: run.json as Record<string, unknown>,
      ...(uid === undefined ? {} : { uid }),
    } as TestbedPod<F>;
    this.podList.push(pod);
    if (uid !== undefined) {
      const hostIPs = internalIPs(node.plan);
      const podIPs = this.families.map((f) => addrOf(pod, f));
      await this.api.patchPodStatus(POD_NAMESPACE, name, {
        phase: 'Running',
        hostIP: hostIPs[0],
        hostIPs: hostIPs.map((a) => ({ ip: a })),
        podIP: podIPs[0],
        podIPs: podIPs.map((a) => ({ ip: a })),
      });
    }
    return pod;
  }

  /** Creates the Pod object bound to the node; returns its uid. */
  private async createPodObject(name: string, nodeName: string): Promise<string> {
    const created = await this.api.createPod(POD_NAMESPACE, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: POD_NAMESPACE, labels: { app: 'trellis-testbed' } },
      spec: { nodeName, containers: [{ name: 'main', image: 'registry.k8s.io/pause:3.10' }] },
      status: { phase: 'Pending' },
    });
    const uid = (created.metadata as { uid?: unknown } | undefined)?.uid;
    if (typeof uid !== 'string') throw new Error(`${name}: the API server returned no uid`);
    return uid;
  }

  private async deletePodObject(name: string): Promise<void> {
    if (this.agentMode !== 'kubernetes') return;
    await this.api.deletePod(POD_NAMESPACE, name).catch((err: unknown) => {
      if (!(err instanceof ApiRequestError && err.status === 404)) throw err;
    });
  }

  /** CNI_PATH as the runtime sets it: the node's bin dir, where install-cni put the plugins. */
  private cniPath(node: TestbedNode<F>): { path?: string } {
    return this.agentMode === 'kubernetes' ? { path: join(node.dir, 'bin') } : {};
  }

  /** CNI DEL through the config list (as a runtime stops a pod), then the namespace goes. */
  async removePod(pod: TestbedPod<F>): Promise<void> {
    const node = this.node(pod.node);
    const runs = await delList(
      this.conflist(pod.node),
      {
        containerId: pod.containerId,
        netns: pod.netnsPath,
        ifname: 'eth0',
        args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${POD_NAMESPACE};K8S_POD_NAME=${pod.name}`,
        hostNetns: node.ns,
        ...this.cniPath(node),
      },
      pod.result,
    );
    // DEL always succeeds (spooled when the agent is down): a failure is a bug, not a test's choice.
    const failed = runs.find((r) => r.code !== 0);
    if (failed !== undefined) {
      throw new Error(`${pod.name}: CNI DEL failed (${failed.code}): ${failed.stdout}${failed.stderr}`);
    }
    this.killNsProcesses(pod.ns);
    delNetns(pod.ns);
    const i = this.podList.indexOf(pod);
    if (i >= 0) this.podList.splice(i, 1);
    await this.deletePodObject(pod.name);
  }

  /** One ping from a pod (a retry on loss); the round trip in ms, or undefined without an answer. */
  async ping(
    fromNs: string,
    to: string,
    attempts = 2,
  ): Promise<{ rttMs: number | undefined; attempts: number }> {
    for (let i = 1; i <= attempts; i++) {
      try {
        const { stdout } = await execFileP('ip', [
          'netns',
          'exec',
          fromNs,
          'ping',
          '-n',
          '-c',
          '1',
          '-W',
          '1',
          to,
        ]);
        const m = /time=([\d.]+) ms/.exec(stdout);
        return { rttMs: m ? Number(m[1]) : 0, attempts: i };
      } catch (err) {
        // No reply (1), or no route (2): try again. A ping that could not run at all is no answer from
        // the network: `ip netns exec` exits 255 when it cannot exec ping (not installed).
        const e = err as { code?: unknown; stderr?: unknown };
        if (e.code === 255 || typeof e.code === 'string') {
          const why = typeof e.stderr === 'string' && e.stderr.trim() !== '' ? e.stderr.trim() : String(err);
          const hint = why.includes('exec of') ? ' (is iputils-ping installed?)' : '';
          throw new Error(`ping could not run in ${fromNs}: ${why}${hint}`);
        }
      }
    }
    return { rttMs: undefined, attempts };
  }

  /** Every pod pings every other pod over each of the cluster's families (a few pings in flight at once). */
  async connectivityMatrix(
    opts: { concurrency?: number; pods?: TestbedPod<F>[] } = {},
  ): Promise<ConnectivityMatrix> {
    const pods = opts.pods ?? this.pods();
    const jobs: { from: TestbedPod<F>; to: TestbedPod<F>; family: Family }[] = [];
    for (const from of pods)
      for (const to of pods)
        if (from !== to) for (const family of this.families) jobs.push({ from, to, family });
    const cells = await pool(jobs, opts.concurrency ?? 8, async (j): Promise<MatrixCell> => {
      const r = await this.ping(j.from.ns, addrOf(j.to, j.family));
      return {
        from: j.from.name,
        to: j.to.name,
        family: j.family,
        ok: r.rttMs !== undefined,
        attempts: r.attempts,
        ...(r.rttMs !== undefined ? { rttMs: r.rttMs } : {}),
      };
    });
    return summarizeMatrix(
      pods.map((p) => ({ name: p.name, node: p.node, v4: p.v4, v6: p.v6 })),
      cells,
    );
  }

  // ---- echo (masquerade checks) ----

  /** A UDP echo that answers with the source address it saw, in any of our namespaces. */
  async startEcho(ns: string, port = ECHO_PORT): Promise<EchoServer> {
    if (!ns.startsWith(`${this.prefix}-`)) throw new Error(`refusing to run outside the test bed: ${ns}`);
    const child = this.spawnIn(ns, `echo in ${ns}`, [process.execPath, ECHO_SCRIPT, 'serve', String(port)]);
    await firstLine(child, `echo server in ${ns}`, 10_000);
    const exited = trackExit(child);
    return {
      ns,
      port,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
  }

  /** Sends one datagram from a namespace to an echo server: the source it saw, and the answer's source. */
  async askEcho(fromNs: string, host: string, port = ECHO_PORT): Promise<EchoAnswer> {
    const { stdout } = await execFileP('ip', [
      'netns',
      'exec',
      fromNs,
      process.execPath,
      ECHO_SCRIPT,
      'ask',
      host,
      String(port),
    ]);
    return JSON.parse(stdout.trim()) as EchoAnswer;
  }

  // ---- teardown ----

  /**
   * Tears down on SIGINT/SIGTERM/SIGHUP, then exits 128 + the signal's number (for the demo): `before`
   * runs first, `after` gets leftovers() once teardown finished. The handlers stay installed until
   * then: a second Ctrl-C or a closed terminal during teardown would otherwise take Node's default
   * action and leave the agents (in sessions of their own) running in their namespaces. Returns the
   * uninstaller.
   */
  installSignalHandlers(
    hooks: {
      before?: (signal: NodeJS.Signals) => void;
      repeated?: (signal: NodeJS.Signals) => void;
      after?: (leftovers: string[]) => void;
    } = {},
  ): () => void {
    let tearingDown = false;
    const handler = (signal: NodeJS.Signals): void => {
      if (tearingDown) {
        hooks.repeated?.(signal);
        return;
      }
      tearingDown = true;
      hooks.before?.(signal);
      this.teardown().then(
        () => {
          hooks.after?.(this.leftovers());
          process.exit(128 + (osConstants.signals[signal] ?? 0));
        },
        (err: unknown) => {
          process.stderr.write(`teardown failed: ${err instanceof Error ? err.message : String(err)}\n`);
          hooks.after?.(this.leftovers());
          process.exit(1);
        },
      );
    };
    this.signalHandler = handler;
    for (const signal of TEARDOWN_SIGNALS) process.on(signal, handler);
    return () => this.removeSignalHandlers();
  }

  private removeSignalHandlers(): void {
    if (this.signalHandler === undefined) return;
    for (const signal of TEARDOWN_SIGNALS) process.off(signal, this.signalHandler);
    this.signalHandler = undefined;
  }

  /** Kills what we started, deletes every `trl-<tag>-` namespace and the temp dir. Idempotent. */
  teardown(): Promise<void> {
    this.teardownPromise ??= this.doTeardown();
    return this.teardownPromise;
  }

  private async doTeardown(): Promise<void> {
    this.tornDown = true;
    const errors: unknown[] = [];
    // Agents first (SIGTERM, as the kubelet would), so they do not log API errors for the others.
    await Promise.all(
      this.nodes().map((n) =>
        this.stopAgent(n.name).catch((err: unknown) => {
          errors.push(err);
        }),
      ),
    );
    for (const t of this.tracked) {
      if (isRunning(t.child)) t.child.kill('SIGTERM');
    }
    await Promise.race([Promise.all(this.tracked.map((t) => t.exited)), sleep(3000)]);
    for (const t of this.tracked) {
      if (isRunning(t.child)) t.child.kill('SIGKILL');
    }
    await Promise.all(this.tracked.map((t) => t.exited));
    // Whatever still runs inside our namespaces (a stray ping) and the namespaces themselves;
    // listed from the kernel, so a half-built test bed is cleaned as well. Pods before nodes.
    const ours = this.ourNamespaces().sort((a, b) => this.nsOrder(a) - this.nsOrder(b));
    for (const ns of ours) {
      try {
        this.killNsProcesses(ns);
        delNetns(ns);
      } catch (err) {
        errors.push(err);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    this.removeSignalHandlers();
    this.unregisterUndo();
    if (errors.length > 0) {
      throw new AggregateError(errors, `teardown of ${this.prefix} had ${errors.length} error(s)`);
    }
  }

  private nsOrder(ns: string): number {
    const rest = ns.slice(this.prefix.length + 1);
    if (rest.startsWith('p')) return 0;
    if (rest.startsWith('n')) return 1;
    if (rest === 'fab') return 3;
    return 2;
  }

  private ourNamespaces(): string[] {
    return namespacesWithPrefix(this.prefix);
  }

  /** SIGKILLs whatever runs inside one of our namespaces (never anyone else's). */
  private killNsProcesses(ns: string): void {
    if (ns.startsWith(`${this.prefix}-`)) killNamespaceProcesses(ns);
  }

  /**
   * What is left of this test bed: namespaces with the prefix, processes we started (or any
   * process whose command line names the prefix) still alive, and temp dirs. Empty after teardown.
   */
  leftovers(): string[] {
    const left: string[] = [];
    for (const ns of this.ourNamespaces()) left.push(`namespace ${ns}`);
    for (const t of this.tracked) {
      if (isRunning(t.child)) left.push(`process ${t.child.pid} (${t.what})`);
    }
    for (const n of this.nodes()) {
      const c = n.agent?.child;
      if (c !== undefined && c.exitCode === null && c.signalCode === null)
        left.push(`agent ${c.pid} (${n.name})`);
    }
    for (const p of processesMentioning(`${this.prefix}-`))
      left.push(`process ${p.pid}: ${p.cmdline.slice(0, 200)}`);
    for (const d of readdirSync(tmpdir()))
      if (d.startsWith(`${this.prefix}-`)) left.push(`dir ${join(tmpdir(), d)}`);
    return left;
  }

  get isTornDown(): boolean {
    return this.tornDown;
  }
}
