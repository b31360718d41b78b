import { randomBytes } from 'node:crypto';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { type CniCall, type PluginRun, runPlugin, SHIM_BINARY } from '../../support/cni-driver.ts';
import { ipJson, NetnsPool, type TestNetns } from '../../support/netns.ts';

export const V4_CIDR = '10.244.1.0/24';
export const V6_CIDR = 'fd00:10:244:1::/64';

/** One "node": a host namespace running a real agent, plus pod namespaces created on demand. */
export class NodeHarness {
  readonly pool = new NetnsPool();
  host!: TestNetns;
  agent!: AgentProcess;
  private readonly podCIDRs: string[];

  constructor(podCIDRs: string[] = [V4_CIDR, V6_CIDR]) {
    this.podCIDRs = podCIDRs;
  }

  /**
   * `prepare` runs in the new host namespace's name before the agent starts there; `env` is added to
   * the agent's environment (a PATH that finds a stand-in tool first).
   */
  async start(
    extraArgs: string[] = [],
    prepare?: (host: string) => void,
    env?: Record<string, string>,
  ): Promise<void> {
    this.host = this.pool.add('host');
    prepare?.(this.host.name);
    this.agent = startAgent({
      ns: this.host.name,
      podCIDRs: this.podCIDRs,
      extraArgs,
      ...(env === undefined ? {} : { env }),
    });
    await this.agent.ready();
  }

  /** Stops the agent (SIGTERM) and starts a new one on the same state directory. */
  async restart(): Promise<void> {
    await this.agent.stop();
    await this.startAgain();
  }

  async startAgain(extraArgs: string[] = []): Promise<void> {
    this.agent = startAgent({ ns: this.host.name, podCIDRs: this.podCIDRs, dir: this.agent.dir, extraArgs });
    await this.agent.ready();
  }

  async stop(): Promise<void> {
    try {
      await this.agent?.kill();
    } finally {
      this.pool.cleanup();
      if (this.agent !== undefined) removeAgentDir(this.agent.dir);
    }
  }

  /** A fresh pod namespace as a runtime creates it: lo down, no interfaces. */
  podNs(): TestNetns {
    return this.pool.add('pod', { loUp: false });
  }

  conf(extra: Record<string, unknown> = {}, cniVersion = '1.0.0'): Record<string, unknown> {
    return {
      cniVersion,
      name: 'trellis',
      type: 'trellis',
      socket: this.agent.socket,
      spoolDir: this.agent.spoolDir,
      ...extra,
    };
  }

  call(call: CniCall, conf: Record<string, unknown> = this.conf()): Promise<PluginRun> {
    return runPlugin(SHIM_BINARY, { hostNetns: this.host.name, ...call }, JSON.stringify(conf));
  }

  add(
    pod: TestNetns,
    containerId: string,
    conf?: Record<string, unknown>,
    ifname = 'eth0',
  ): Promise<PluginRun> {
    return this.call(
      {
        command: 'ADD',
        containerId,
        netns: pod.path,
        ifname,
        args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${containerId}`,
      },
      conf,
    );
  }

  /** A fresh pod namespace ADDed as eth0 through the shim; throws unless the ADD succeeded. */
  async addPod(
    conf?: Record<string, unknown>,
  ): Promise<{ pod: TestNetns; id: string; result: AddResult; hostIf: string }> {
    const pod = this.podNs();
    const id = containerId();
    const add = await this.add(pod, id, conf);
    if (add.code !== 0) throw new Error(`ADD failed (exit ${add.code}): ${add.stdout}${add.stderr}`);
    return { pod, id, result: add.json as AddResult, hostIf: hostVethName(id, 'eth0') };
  }

  /** CHECK of eth0 against the ADD's result, as a runtime sends it. */
  check(containerId: string, pod: TestNetns, prevResult: AddResult): Promise<PluginRun> {
    return this.call(
      { command: 'CHECK', containerId, netns: pod.path, ifname: 'eth0' },
      this.conf({ prevResult }),
    );
  }

  del(containerId: string, netns: string | undefined, conf?: Record<string, unknown>): Promise<PluginRun> {
    return this.call({ command: 'DEL', containerId, netns: netns ?? '', ifname: 'eth0' }, conf);
  }

  /** Host veths trellis created (kernel view). */
  hostVeths(): string[] {
    return ipJson<{ ifname: string }[]>(this.host.name, 'link', 'show')
      .map((l) => l.ifname)
      .filter((n) => n.startsWith('trl'));
  }

  /** Per-pod host routes (trellis's protocol, via a veth) in the host namespace (kernel view). */
  hostRoutes(family: 4 | 6): { dst: string; dev?: string; type?: string }[] {
    return ipJson<{ dst: string; dev?: string; type?: string }[]>(
      this.host.name,
      `-${family}`,
      'route',
      'show',
      'proto',
      '126',
    ).filter((r) => r.dev?.startsWith('trl') === true);
  }

  /** The first agent log line matching `pred`, waiting for it: lines arrive through a pipe after the call returned. */
  async logLine(
    pred: (l: Record<string, unknown>) => boolean,
    timeoutMs = 3000,
  ): Promise<Record<string, unknown> | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.agent.logs.find(pred);
      if (found !== undefined || Date.now() > deadline) return found;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Waits until the background veth deletions finished (they run right after DEL answers). */
  async waitForVeths(expected: number, timeoutMs = 5000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    let veths = this.hostVeths();
    while (veths.length !== expected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      veths = this.hostVeths();
    }
    return veths;
  }
}

export function containerId(): string {
  return randomBytes(32).toString('hex');
}

export interface AddResult {
  interfaces: { name: string; mac?: string; mtu?: number; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface?: number }[];
  routes: { dst: string; gw?: string }[];
  dns?: unknown;
  cniVersion: string;
}

export function podAddr(result: AddResult, family: 4 | 6): string {
  const ip = result.ips.find((i) => (family === 4 ? !i.address.includes(':') : i.address.includes(':')));
  if (ip === undefined) throw new Error(`no IPv${family} address in ${JSON.stringify(result)}`);
  return ip.address.split('/')[0]!;
}
