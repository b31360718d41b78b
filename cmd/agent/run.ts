/** `trellis-agent [run]`: the agent itself, wired to the real adapters, until SIGTERM or SIGINT. */
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { Agent } from '../../pkg/agent/agent.ts';
import { type AgentConfig, ConfigError } from '../../pkg/agent/config.ts';
import { configPathProblem } from '../../pkg/agent/config-paths.ts';
import { needsTable, tableRules } from '../../pkg/agent/table-rules.ts';
import { errorText } from '../../pkg/error-text.ts';
import { type ForwardRead, readForwardRuleset, readOnChange } from '../../pkg/firewall/index.ts';
import { createK8sClient, loadKubeConfig, proxyFromEnvironment } from '../../pkg/k8s/index.ts';
import { DEFAULT_TABLE, NftRunner } from '../../pkg/masq/index.ts';
import {
  createNetlinkEvents,
  createNetnsPort,
  hostProcProblem,
  openHostNetlink,
} from '../../pkg/netns/index.ts';
import type { Logger } from '../../pkg/observe/logger.ts';
import { AgentObserver } from '../../pkg/observe/observer.ts';
import { trellisVersion } from '../../pkg/version.ts';
import {
  firewallTools,
  idleTrim,
  iptablesNftSave,
  lockAgentState,
  masqSyncer,
  nftSocket,
  unmapStartupPages,
  withTrim,
} from './adapters.ts';
import { stopSignal } from './stop-signal.ts';

/** `root`: the process's logger, without a component; each part gets a child naming its own. */
export async function runAgent(config: AgentConfig, root: Logger): Promise<number> {
  const log = root.child({ component: 'agent' });
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
    const viaProxy = envProxyIgnored(conn.server, conn.transportReason);
    if (viaProxy !== undefined) {
      log.warn(
        { server: conn.server, ...viaProxy },
        `${viaProxy.variable} names a proxy for the API server, which trellis does not go through: it connects directly (client-go would use the proxy; a kubeconfig's proxy-url is honoured, or exempt the server in NO_PROXY)`,
      );
    }
  }
  const kube = conn === undefined ? undefined : createK8sClient(conn);
  const observer = new AgentObserver({
    nodeName: config.nodeName ?? hostname(),
    version: trellisVersion(),
    metricsAddr: config.metricsAddr,
    adminSocket: config.adminSocket,
    kube,
    log: root.child({ component: 'observe' }),
  });
  const trim = idleTrim(root.child({ component: 'memory' }));
  // Reads and writes other programs' forward chains (pkg/firewall); never the masquerade table.
  const firewall = firewallTools();
  const masqNeeded = needsTable(tableRules(config, standalone));
  const nft = masqNeeded || config.firewallCheckMs > 0 ? nftSocket(log) : undefined;
  const readFirewall: ForwardRead = (podCIDRs, vxlan) =>
    readForwardRuleset((args) => firewall.run({ tool: 'nft', args }), podCIDRs, DEFAULT_TABLE, {
      legacy: firewall.legacy,
      vxlan,
      iptablesNftSave: iptablesNftSave(firewall),
    });
  const agent = new Agent(
    config,
    {
      netns: createNetnsPort({ hostProc: config.hostProc }),
      // Sockets with the options netlink@0.3.0 cannot set: a kernel drop becomes an 'overflow'
      // event (the controller resyncs) instead of aborting the process.
      openHostNetlink,
      events: createNetlinkEvents(),
      lockStateDir: (dir) => lockAgentState(dir, dirname(config.socket)),
      masq: masqNeeded ? masqSyncer(nft) : undefined,
      removeMasqLeftovers: () => new NftRunner().deleteTableIfPresent(),
      // Read again only once a transaction was committed (or with legacy iptables tables about).
      readForwardFirewall:
        nft === undefined
          ? readFirewall
          : readOnChange({
              read: readFirewall,
              generation: () => nft.generation(),
              legacyTables: firewall.legacy.tables,
            }),
      writeForwardFirewall: firewall.run,
      kube,
    },
    root,
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
  unmapStartupPages(root.child({ component: 'memory' }));
  // Heard since the process started (stop-signal.ts): a SIGTERM while the agent starts (its pod
  // deleted at once) stops it once started, in-flight calls finished, rather than killing it halfway.
  try {
    await agent.start();
    await observer.start();
  } catch (err) {
    log.fatal({ error: errorText(err) }, 'agent failed to start');
    await observer.stop().catch(() => {});
    // What the failed start leaves (a lock, the socket) is the next start's to find: said, not hidden.
    await agent.stop().catch((e: unknown) => {
      log.error({ error: errorText(e) }, 'stopping after the failed start failed');
    });
    return 1;
  }
  const stop = await Promise.race([
    stopSignal.then((signal) => ({ signal, restart: undefined })),
    agent.restartWanted.then((restart) => ({ signal: undefined, restart })),
  ]);
  log.info(
    stop.restart === undefined ? { signal: stop.signal } : { restart: stop.restart },
    'stopping: finishing in-flight CNI calls; routes, config and rules stay in place',
  );
  trim.stop();
  await observer.stop();
  await agent.stop();
  // Non-zero: a container that exits is restarted, and its hostPath mounts made afresh.
  return stop.restart === undefined ? 0 : 1;
}

/**
 * The proxy the environment names for the API server (pkg/k8s/proxy-env.ts), which the agent's
 * transports do not use, unless the kubeconfig's own proxy-url is in charge. The proxy's
 * credentials are left out of the log.
 */
function envProxyIgnored(
  server: string,
  transportReason: string,
): { variable: string; proxy: string } | undefined {
  if (transportReason.includes('proxy-url')) return undefined;
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    return undefined;
  }
  const found = proxyFromEnvironment(url, process.env);
  if (found === undefined) return undefined;
  let proxy = '(not a URL)';
  try {
    const p = new URL(found.proxy);
    proxy = `${p.protocol}//${p.host}`;
  } catch {}
  return { variable: found.variable, proxy };
}
