/** `trellis-agent uninstall`: removes what the agent put on the node, once no agent runs there. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { AgentConfig } from '../../pkg/agent/config.ts';
import { uninstallTrellis } from '../../pkg/agent/host-setup.ts';
import { PUBLISHED_NETWORK_NAME } from '../../pkg/cniconf/render.ts';
import { deleteOwnAccepts, deletePortmapLeftovers } from '../../pkg/firewall/index.ts';
import { NftRunner } from '../../pkg/masq/index.ts';
import {
  type FileLock,
  LockHeldError,
  lockFile,
  lockNetns,
  lockWaiting,
  openHostNetlink,
} from '../../pkg/netns/index.ts';
import type { Logger } from '../../pkg/observe/logger.ts';
import { isVxlanDeviceName } from '../../pkg/vxlan/constants.ts';
import { firewallTools, iptablesNftSave, NETNS_LOCK } from './adapters.ts';

export async function runUninstall(config: AgentConfig, log: Logger): Promise<number> {
  // Never from under a running agent (it would put its routes and table back, and serve on without
  // a socket): wait for the one whose pod was just deleted to finish shutting down. Both of its
  // locks: the network namespace's, and the state directory's (all an older agent takes).
  const locks: FileLock[] = [];
  const statePath = join(config.stateDir, 'agent.lock');
  const takes: [string, () => FileLock][] = [
    [`@${NETNS_LOCK}`, () => lockNetns(NETNS_LOCK, { fallbackDir: dirname(config.socket) })],
  ];
  if (existsSync(config.stateDir)) takes.push([statePath, () => lockFile(statePath)]);
  const deadline = Date.now() + config.uninstallWaitMs;
  for (const [lock, take] of takes) {
    try {
      const taken = await lockWaiting(take, Math.max(0, deadline - Date.now()), {
        onWait: () =>
          log.info(
            { lock, waitMs: config.uninstallWaitMs },
            'a trellis agent is running on this node; waiting for it to stop',
          ),
      });
      if (taken.warning !== undefined) log.warn({ lock }, taken.warning);
      locks.push(taken);
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
    deletePortmapRules: () => deletePortmapLeftovers(firewall.runTool, PUBLISHED_NETWORK_NAME),
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
