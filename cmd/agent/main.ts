/**
 * trellis-agent: wires the validated config to the real adapters and runs until SIGTERM/SIGINT.
 * Subcommands: install-cni (the init container), uninstall, and the operator commands (status,
 * routes, leases, doctor, coverage: pkg/ops). The only place that calls process.exit.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, type AgentHooks } from '../../pkg/agent/agent.ts';
import { ConfigError, parseAgentConfig, subcommandUsage, USAGE } from '../../pkg/agent/config.ts';
import { configPathProblem } from '../../pkg/agent/config-paths.ts';
import {
  cniSourceDirProblem,
  describeCniInstall,
  installCniBinaries,
  uninstallTrellis,
} from '../../pkg/agent/host-setup.ts';
import { IdleTrim } from '../../pkg/agent/idle-trim.ts';
import { needsTable, tableRules } from '../../pkg/agent/table-rules.ts';
import { errorText } from '../../pkg/error-text.ts';
import {
  deleteOwnAccepts,
  type FirewallCommand,
  hostLegacyIptables,
  type LegacyIptables,
  readForwardRuleset,
} from '../../pkg/firewall/index.ts';
import { createK8sClient, K8sError, K8sReason, loadKubeConfig } from '../../pkg/k8s/index.ts';
import { DEFAULT_TABLE, MasqSyncer, NftRunner } from '../../pkg/masq/index.ts';
import { NftSetWriter } from '../../pkg/netlink/index.ts';
import {
  createNetlinkEvents,
  createNetnsPort,
  type FileLock,
  hostProcProblem,
  LockHeldError,
  lockFile,
  lockNetns,
  lockWaiting,
  openHostNetlink,
  trimMalloc,
} from '../../pkg/netns/index.ts';
import { createLogger } from '../../pkg/observe/logger.ts';
import { AgentObserver } from '../../pkg/observe/observer.ts';
import { OPS_COMMANDS, OPS_USAGE, runOpsCommand } from '../../pkg/ops/cli.ts';
import { trellisVersion } from '../../pkg/version.ts';
import { isVxlanDeviceName } from '../../pkg/vxlan/constants.ts';

const SUBCOMMANDS = ['run', 'install-cni', 'uninstall'] as const;
/** The abstract unix socket name that holds one agent per network namespace (pkg/netns lockNetns). */
const NETNS_LOCK = 'trellis-agent';
/** Quiet this long after a CNI call or a pass before malloc_trim; at most one trim per interval. */
const TRIM_IDLE_MS = 2000;
const TRIM_MIN_INTERVAL_MS = 10_000;

/** The CNI shim next to this build: dist/bin/trellis (from dist/cmd/agent or from a checkout). */
function findShim(sourceDir: string): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    sourceDir === '' ? undefined : join(sourceDir, 'trellis'),
    join(here, '..', '..', 'bin', 'trellis'),
    join(here, '..', '..', 'dist', 'bin', 'trellis'),
  ].filter((c): c is string => c !== undefined);
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--version') || argv.includes('-v')) {
    process.stdout.write(`trellis-agent ${trellisVersion()}\n`);
    return 0;
  }
  const ops = OPS_COMMANDS.find((c) => c === argv[0]);
  if (argv.includes('--help') || argv.includes('-h')) {
    const maintenance = (['install-cni', 'uninstall'] as const).find((s) => s === argv[0]);
    process.stdout.write(
      ops !== undefined
        ? OPS_USAGE
        : maintenance !== undefined
          ? subcommandUsage(maintenance)
          : `${USAGE}\n${OPS_USAGE}`,
    );
    return 0;
  }
  if (ops !== undefined) {
    return runOpsCommand(ops, argv.slice(1), {
      stdout: (t) => process.stdout.write(t),
      stderr: (t) => process.stderr.write(t),
      env: process.env,
      openHost: openHostNetlink,
      nodeReader: (kubeconfig, env) =>
        createK8sClient(
          loadKubeConfig({ env, ...(kubeconfig === undefined ? {} : { kubeconfigPath: kubeconfig }) }),
        ),
    });
  }
  const sub = SUBCOMMANDS.find((s) => s === argv[0]) ?? 'run';
  const rest = sub === argv[0] ? argv.slice(1) : argv;
  // A ConfigError (or an unusable kubeconfig) ends the process with exit 2 at the bottom of this file.
  const config = parseAgentConfig(rest, process.env, { requireNode: sub === 'run' });
  // The node the agent runs as (standalone: the host name), so every line, CNI calls' included, names it.
  const log = createLogger({ level: config.logLevel, base: { node: config.nodeName ?? hostname() } });

  if (sub === 'install-cni') {
    // Set by the operator (or the image): it must be what it claims, not silently replaced by the defaults.
    const sourceProblem = config.cniSourceDir === '' ? undefined : cniSourceDirProblem(config.cniSourceDir);
    if (sourceProblem !== undefined) {
      throw new ConfigError(`${config.names.cniSourceDir} ${config.cniSourceDir} ${sourceProblem}`);
    }
    mkdirSync(config.cniBinDir, { recursive: true });
    const results = await installCniBinaries({
      binDir: config.cniBinDir,
      shimPath: findShim(config.cniSourceDir),
      sourceDir: config.cniSourceDir,
    });
    const { fields, message } = describeCniInstall(results);
    log.info({ dir: config.cniBinDir, ...fields }, message);
    return 0;
  }
  if (sub === 'uninstall') {
    // Never from under a running agent (it would put its routes and table back, and serve on without
    // a socket): wait for the one whose pod was just deleted to finish shutting down. Both of its
    // locks: the network namespace's, and the state directory's (all an older agent takes).
    const locks: FileLock[] = [];
    const statePath = join(config.stateDir, 'agent.lock');
    const takes: [string, () => FileLock][] = [[`@${NETNS_LOCK}`, () => lockNetns(NETNS_LOCK)]];
    if (existsSync(config.stateDir)) takes.push([statePath, () => lockFile(statePath)]);
    const deadline = Date.now() + config.uninstallWaitMs;
    for (const [lock, take] of takes) {
      try {
        locks.push(
          await lockWaiting(take, Math.max(0, deadline - Date.now()), {
            onWait: () =>
              log.info(
                { lock, waitMs: config.uninstallWaitMs },
                'a trellis agent is running on this node; waiting for it to stop',
              ),
          }),
        );
      } catch (err) {
        if (!(err instanceof LockHeldError)) throw err;
        for (const l of locks) l.release();
        log.fatal(
          { lock, waitedMs: config.uninstallWaitMs },
          'a trellis agent is still running on this node; stop it (delete its DaemonSet) before uninstalling',
        );
        return 1;
      }
    }
    const nft = new NftRunner();
    const firewall = firewallTools();
    const report = await uninstallTrellis({
      host: openHostNetlink(),
      cniConfDir: config.cniConfDir,
      cniBinDir: config.cniBinDir,
      stateDir: config.stateDir,
      socket: config.socket,
      adminSocket: config.adminSocket,
      spoolDir: config.spoolDir,
      isTrellisDevice: isVxlanDeviceName,
      deleteNftTable: () => nft.deleteTableIfPresent(),
      deleteForwardAccepts: () => deleteOwnAccepts(firewall.run, firewall.legacy, iptablesNftSave(firewall)),
    });
    for (const l of locks) l.release();
    // What the agent turned on stays: other networks need forwarding too, and what it was before is
    // not recorded.
    const kept =
      'IP forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) and accept_ra=2 on uplinks stay as the agent set them';
    if (report.failed.length > 0) {
      log.error({ ...report, kept }, 'trellis uninstall left something behind; run it again');
      return 1;
    }
    log.info({ ...report, kept }, 'trellis uninstalled from this node');
    return 0;
  }

  const standalone = config.podCIDRs.length > 0;
  log.info({ version: trellisVersion(), runtime: process.version, standalone }, 'starting');
  const hostProc = config.hostProc === '' ? undefined : hostProcProblem(config.hostProc);
  if (hostProc !== undefined) throw new ConfigError(`--host-proc ${config.hostProc} ${hostProc}`);
  const pathProblem = configPathProblem(config);
  if (pathProblem !== undefined) throw new ConfigError(pathProblem);
  const conn = standalone
    ? undefined
    : loadKubeConfig(config.kubeconfig === undefined ? {} : { kubeconfigPath: config.kubeconfig });
  if (conn !== undefined) {
    // transport 'native' is pkg/k8s's own node:https client; 'client-node' the fallback library.
    log.info(
      {
        server: conn.server,
        source: conn.source,
        ...(conn.file === undefined ? {} : { kubeconfig: conn.file }),
        transport: conn.transport,
        ...(conn.transportReason === '' ? {} : { transportReason: conn.transportReason }),
      },
      'kubernetes API client',
    );
  }
  const kube = conn === undefined ? undefined : createK8sClient(conn);
  const observer = new AgentObserver({
    nodeName: config.nodeName ?? hostname(),
    version: trellisVersion(),
    metricsAddr: config.metricsAddr,
    adminSocket: config.adminSocket,
    kube,
    log: log.child({ component: 'observe' }),
  });
  const trim = idleTrim(log.child({ component: 'memory' }));
  // Reads and writes other programs' forward chains (pkg/firewall); never the masquerade table.
  const firewall = firewallTools();
  const agent = new Agent(
    config,
    {
      netns: createNetnsPort({ hostProc: config.hostProc }),
      // Sockets with the options netlink@0.3.0 cannot set: a kernel drop becomes an 'overflow'
      // event (the controller resyncs) instead of aborting the process.
      openHostNetlink,
      events: createNetlinkEvents(),
      lockStateDir: (dir) => {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const state = lockFile(join(dir, 'agent.lock'));
        try {
          const netns = lockNetns(NETNS_LOCK);
          return {
            release: () => {
              netns.release();
              state.release();
            },
          };
        } catch (err) {
          state.release();
          throw err;
        }
      },
      masq: needsTable(tableRules(config, standalone)) ? masqSyncer(log) : undefined,
      removeMasqLeftovers: () => new NftRunner().deleteTableIfPresent(),
      readForwardFirewall: (podCIDRs, vxlan) =>
        readForwardRuleset((args) => firewall.run({ tool: 'nft', args }), podCIDRs, DEFAULT_TABLE, {
          legacy: firewall.legacy,
          vxlan,
          iptablesNftSave: iptablesNftSave(firewall),
        }),
      writeForwardFirewall: firewall.run,
      kube,
    },
    log,
    withTrim(observer.hooks(), trim),
  );
  observer.attach(agent);
  // The metrics and health listener first: an address that cannot be bound stops the start before the
  // agent takes the node (socket, routes, rules, config list).
  try {
    await observer.listen();
  } catch (err) {
    log.fatal(
      {
        error: `${config.names.metricsAddr} ${config.metricsAddr} cannot be bound: ${errorText(err)}${
          (err as { code?: unknown }).code === 'EADDRINUSE'
            ? ' (is another trellis agent running on this node?)'
            : ''
        }`,
      },
      'agent failed to start',
    );
    await observer.stop().catch(() => {});
    return 1;
  }
  // Heard from here on: a SIGTERM while the agent starts (its pod deleted at once) stops it as one
  // after the start would, in-flight calls finished, rather than killing it halfway.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  try {
    await agent.start();
    await observer.start();
  } catch (err) {
    log.fatal({ error: errorText(err) }, 'agent failed to start');
    await observer.stop().catch(() => {});
    await agent.stop().catch(() => {});
    return 1;
  }
  const signal = await signalled;
  log.info({ signal }, 'stopping: finishing in-flight CNI calls; routes, config and rules stay in place');
  trim.stop();
  await observer.stop();
  await agent.stop();
  return 0;
}

process.on('unhandledRejection', (reason) => {
  process.stderr.write(
    `trellis-agent: unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}\n`,
  );
});

/** A setting the operator has to fix (a flag, a variable, the kubeconfig): its message, for exit 2. */
function usageError(err: unknown): string | undefined {
  if (err instanceof ConfigError) return err.message;
  if (err instanceof K8sError && err.reason === K8sReason.CONFIG) return err.message;
  return undefined;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const usage = usageError(err);
    process.stderr.write(`trellis-agent: ${usage ?? (err instanceof Error ? err.stack : String(err))}\n`);
    process.exit(usage === undefined ? 1 : 2);
  },
);

/** The table's syncer; Node events change set elements over netlink when the socket opens, else by nft. */
function masqSyncer(log: ReturnType<typeof createLogger>): MasqSyncer {
  let writer: NftSetWriter | undefined;
  try {
    writer = new NftSetWriter();
  } catch (err) {
    log.warn(
      { error: errorText(err) },
      'cannot open an nf_tables netlink socket: every masquerade change runs nft',
    );
  }
  return new MasqSyncer(new NftRunner(), writer);
}

/**
 * The programs that read and edit the host's own firewall: nft, and legacy iptables where the kernel
 * holds its tables (pkg/firewall/legacy-host.ts). NftRunner runs any of them: argv, timeout, stderr.
 */
function firewallTools(): {
  run: (cmd: FirewallCommand) => Promise<string>;
  runTool: (tool: string, args: string[]) => Promise<string>;
  legacy: LegacyIptables;
} {
  const runners = new Map<string, NftRunner>();
  const run = (tool: string, args: string[]): Promise<string> => {
    let r = runners.get(tool);
    if (r === undefined) {
      r = new NftRunner({ nftPath: tool });
      runners.set(tool, r);
    }
    return r.run(args);
  };
  return { run: (cmd) => run(cmd.tool, cmd.args), runTool: run, legacy: hostLegacyIptables(run) };
}

/** malloc's free memory back to the kernel after a burst of work (pkg/agent/idle-trim.ts). */
function idleTrim(log: ReturnType<typeof createLogger>): IdleTrim {
  const mb = (bytes: number) => Math.round(bytes / 1e5) / 10;
  return new IdleTrim({
    trim: trimMalloc,
    idleMs: TRIM_IDLE_MS,
    minIntervalMs: TRIM_MIN_INTERVAL_MS,
    rss: () => process.memoryUsage.rss(),
    onTrim: (o) =>
      log.debug(
        {
          durationMs: Math.round(o.durationMs * 100) / 100,
          rssMbBefore: mb(o.rssBefore),
          rssMbAfter: mb(o.rssAfter),
        },
        'malloc trimmed after a burst of work',
      ),
    onError: (err) =>
      log.warn(
        { error: errorText(err) },
        'could not hand malloc memory back to the kernel; not trying again',
      ),
  });
}

/** The agent's hooks, each CNI call and pass also counted as work for the trim. */
function withTrim(hooks: AgentHooks, trim: IdleTrim): AgentHooks {
  return {
    ...hooks,
    onCniCall: (record) => {
      hooks.onCniCall?.(record);
      trim.noteWork();
    },
    onPass: (outcome) => {
      hooks.onPass?.(outcome);
      trim.noteWork();
    },
  };
}

/** `iptables-nft-save -t filter` (ip6tables-nft-save for 6): what nft shows of iptables-nft's xt matches by name only. */
function iptablesNftSave(firewall: ReturnType<typeof firewallTools>): (family: 4 | 6) => Promise<string> {
  return (family) =>
    firewall.runTool(family === 4 ? 'iptables-nft-save' : 'ip6tables-nft-save', ['-t', 'filter']);
}
