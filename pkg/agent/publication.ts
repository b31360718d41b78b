import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ChainVersionProbe, CONFLIST_FILE_NAME, publishConflist, renderConflist } from '../cniconf/index.ts';
import type { NetlinkHandle } from '../datapath/ports.ts';
import type { Logger } from '../observe/logger.ts';
import { nodeLinkOf } from '../routes/node-link.ts';
import { listDefaultRoutes, readLocalLinks } from '../routes/reconciler.ts';
import type { ClusterNode } from './cluster.ts';
import type { AgentConfig } from './config.ts';
import { chooseMtu, encapOverhead, type MtuChoice } from './mtu.ts';

/** Binaries the published config list needs in the CNI bin dir (containerd also runs loopback). */
export const REQUIRED_CNI_BINARIES = ['trellis', 'portmap', 'loopback'] as const;

/**
 * Gathers the interfaces, and the default routes when no interface holds an InternalIP on a subnet (none
 * does, or only lo as a /32), then lets the pure chooseMtu decide. It runs after every pass: listing the
 * whole route table each time (5,000 routes at 5,000 nodes) to find a default route that is rarely
 * needed was most of a resync's garbage.
 */
export async function detectMtu(
  host: NetlinkHandle,
  self: ClusterNode,
  mode: AgentConfig['mode'],
): Promise<MtuChoice & { overhead: number }> {
  const [links, localLinks] = await Promise.all([host.listLinks(), readLocalLinks(host)]);
  const nodeLink = nodeLinkOf(localLinks, self.internalIPs, links);
  const needDefaults = nodeLink === undefined || !links.some((l) => l.index === nodeLink.ifindex);
  const defaultRoutes = needDefaults ? await listDefaultRoutes(host) : [];
  const overhead = encapOverhead(mode, self.internalIPs);
  const choice = chooseMtu({
    configured: 0,
    internalIPs: self.internalIPs,
    localLinks,
    links,
    defaultRoutes,
    overhead,
  });
  return { ...choice, overhead };
}

/**
 * Writes the config list once the binaries it names are in place (the runtime would fail every pod
 * otherwise). Returns the missing binaries, empty when published or unchanged.
 */
const chainProbe = new ChainVersionProbe();

export async function publishCniConfig(config: AgentConfig, mtu: number, log: Logger): Promise<string[]> {
  const missing = REQUIRED_CNI_BINARIES.filter((b) => !existsSync(join(config.cniBinDir, b)));
  if (missing.length > 0) {
    log.warn({ missing, dir: config.cniBinDir }, 'not publishing the CNI config yet: binaries missing');
    return missing;
  }
  // The versions every plugin of the chain speaks (our own shim speaks all of them): 1.1.0 only when the
  // installed portmap does too.
  const cniVersions = await chainProbe.versions([join(config.cniBinDir, 'portmap')]);
  const text = renderConflist({ socket: config.socket, spoolDir: config.spoolDir, mtu, cniVersions });
  if ((await publishConflist(config.cniConfDir, CONFLIST_FILE_NAME, text)) === 'written') {
    log.info({ file: join(config.cniConfDir, CONFLIST_FILE_NAME) }, 'CNI config published');
  }
  return [];
}
