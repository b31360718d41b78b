import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ChainVersionProbe, CONFLIST_FILE_NAME, publishConflist, renderConflist } from '../cniconf/index.ts';
import type { Family, NetlinkHandle } from '../datapath/ports.ts';
import { parseIp } from '../ip/index.ts';
import type { Logger } from '../observe/logger.ts';
import { nodeLinkOf } from '../routes/node-link.ts';
import { findWaysOut, readLocalLinks } from '../routes/reconciler.ts';
import type { ClusterNode } from './cluster.ts';
import type { AgentConfig } from './config.ts';
import { chooseMtu, encapOverhead, type MtuChoice } from './mtu.ts';

/** Binaries the published config list needs in the CNI bin dir (containerd also runs loopback). */
export const REQUIRED_CNI_BINARIES = ['trellis', 'portmap', 'loopback'] as const;

/**
 * Gathers the interfaces, and the ways out of the node when no interface holds an InternalIP on a
 * subnet (none does, or only lo as a /32), then lets the pure chooseMtu decide. It runs after every
 * pass, so the ways out are a route lookup per family (findWaysOut), never a dump of the route table.
 * `last` is the choice in force (kept when nothing tells the MTU now); a warning is logged when
 * that starts: the first pass assuming 1500, or keeping the last MTU.
 */
export async function detectMtu(
  host: NetlinkHandle,
  self: ClusterNode,
  mode: AgentConfig['mode'],
  opts: { last?: MtuChoice & { overhead: number }; log?: { warn(obj: object, msg: string): void } } = {},
): Promise<MtuChoice & { overhead: number }> {
  const [links, localLinks] = await Promise.all([host.listLinks(), readLocalLinks(host)]);
  const nodeLink = nodeLinkOf(localLinks, self.internalIPs, links);
  const needWaysOut = nodeLink === undefined || !links.some((l) => l.index === nodeLink.ifindex);
  const waysOut = needWaysOut ? await findWaysOut(host, familiesOf(self.internalIPs)) : [];
  const overhead = encapOverhead(mode, self.internalIPs);
  const choice = chooseMtu({
    configured: 0,
    internalIPs: self.internalIPs,
    localLinks,
    links,
    waysOut,
    overhead,
    ...(opts.last === undefined ? {} : { last: opts.last }),
  });
  const { last, log } = opts;
  if (choice.fallback === true && !(last?.fallback === true && last.source === choice.source)) {
    log?.warn(
      { mtu: choice.mtu + overhead, routeMtu: choice.mtu, internalIPs: self.internalIPs },
      'no way out of the node found: the pod MTU assumes 1500 (set --mtu if the network differs)',
    );
  } else if (choice.kept === true && last?.kept !== true) {
    log?.warn(
      { mtu: choice.mtu + overhead, routeMtu: choice.mtu, source: choice.source },
      'no way out of the node found now: keeping the pod MTU found before',
    );
  }
  return { ...choice, overhead };
}

/** The families of the InternalIPs, both without any (standalone mode): where to look for a way out. */
function familiesOf(internalIPs: readonly string[]): Family[] {
  const families = new Set(internalIPs.map((t) => parseIp(t)?.family).filter((f) => f !== undefined));
  return families.size === 0 ? [4, 6] : ([4, 6] as Family[]).filter((f) => families.has(f));
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
