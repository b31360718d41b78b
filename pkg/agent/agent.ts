import { join } from 'node:path';
import { BackgroundDeleter } from '../datapath/background-deleter.ts';
import { sweepOrphans } from '../datapath/gc.ts';
import { KeyedMutex } from '../datapath/keyed-mutex.ts';
import type { NetlinkHandle, NetnsPort } from '../datapath/ports.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import { type Ipam, openIpam } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';
import { CniServer } from './cni-server.ts';
import { type CniCallRecord, createCniService } from './cni-service.ts';
import type { AgentConfig } from './config.ts';
import { drainSpool } from './spool-drain.ts';

/** The kernel and host edges the agent is built on; cmd/agent passes the real adapters. */
export interface AgentPorts {
  netns: NetnsPort;
  openHostNetlink(): NetlinkHandle;
  /** Exclusive lock on the state directory: one agent per node. */
  lockStateDir(dir: string): { release(): void };
}

export interface AgentHooks {
  onCniCall?: (record: CniCallRecord) => void;
}

const SPOOL_DRAIN_INTERVAL_MS = 30_000;

/** Host sysctls the routed datapath needs; stated in the docs. */
export const HOST_SYSCTLS: readonly [string, string][] = [
  ['net/ipv4/ip_forward', '1'],
  ['net/ipv6/conf/all/forwarding', '1'],
];

/**
 * One node's agent: owns IPAM, the host netlink socket and the CNI socket. Start order matters:
 * state lock -> sysctls -> IPAM -> spooled DELs -> orphan sweep -> socket. Readiness (what STATUS and
 * ADD check) needs pod CIDRs; in standalone mode they come from flags.
 */
export class Agent {
  private readonly config: AgentConfig;
  private readonly ports: AgentPorts;
  private readonly log: Logger;
  private readonly hooks: AgentHooks;
  private lock: { release(): void } | undefined;
  private host: NetlinkHandle | undefined;
  private server: CniServer | undefined;
  private deleter: BackgroundDeleter | undefined;
  ipam: Ipam | undefined;
  datapath: DatapathDeps | undefined;
  private mtu = 1500;
  private spoolTimer: NodeJS.Timeout | undefined;

  constructor(config: AgentConfig, ports: AgentPorts, log: Logger, hooks: AgentHooks = {}) {
    this.config = config;
    this.ports = ports;
    this.log = log;
    this.hooks = hooks;
  }

  notReadyReason(): string | undefined {
    if (this.ipam === undefined || this.ipam.ranges().length === 0) return 'pod CIDRs are not known yet';
    if (this.server === undefined) return 'the CNI socket is not listening yet';
    return undefined;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    this.lock = this.ports.lockStateDir(config.stateDir);
    for (const [key, value] of HOST_SYSCTLS) this.ports.netns.writeSysctl(key, value);
    this.ipam = openIpam({ dir: join(config.stateDir, 'ipam'), ranges: [...config.podCIDRs] });
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
    this.datapath = { host: this.host, netns: this.ports.netns, ipam: this.ipam, deleter: this.deleter };
    if (config.mtu > 0) this.mtu = config.mtu;

    const service = createCniService({
      datapath: this.datapath,
      mutex: new KeyedMutex(),
      log: log.child({ component: 'cni' }),
      readiness: { notReadyReason: () => this.notReadyReason() },
      defaultMtu: () => this.mtu,
      onCall: this.hooks.onCniCall,
    });
    await drainSpool(config.spoolDir, service.handle, log);
    const swept = await sweepOrphans(this.datapath);
    if (swept.releasedLeases.length > 0 || swept.removedLinks.length > 0) {
      log.info(
        { releasedLeases: swept.releasedLeases.length, removedLinks: swept.removedLinks },
        'start-up sweep removed half-done work',
      );
    }
    const server = new CniServer({ socketPath: config.socket, handler: service.handle, log });
    await server.listen();
    this.server = server;
    // The shim also spools a DEL when a running agent answered too slowly or a DEL fell between
    // the drain above and listen(); those leases stay held (never reused) until drained here.
    const drainAgain = (): void => {
      drainSpool(config.spoolDir, service.handle, log).catch((err: unknown) =>
        log.warn({ error: err instanceof Error ? err.message : String(err) }, 'spool drain failed'),
      );
    };
    drainAgain();
    this.spoolTimer = setInterval(drainAgain, SPOOL_DRAIN_INTERVAL_MS);
    this.spoolTimer.unref();
    log.info(
      {
        podCIDRs: this.ipam.ranges(),
        socket: config.socket,
        stateDir: config.stateDir,
        mode: config.mode,
        mtu: this.mtu,
        leases: this.ipam.list().length,
      },
      'trellis agent ready',
    );
  }

  /** SIGTERM: finish in-flight calls, close the socket; routes, config and rules stay in place. */
  async stop(): Promise<void> {
    clearInterval(this.spoolTimer);
    await this.server?.close();
    await this.deleter?.drain();
    this.host?.close();
    this.lock?.release();
    this.log.info('trellis agent stopped');
  }
}
