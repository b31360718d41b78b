/**
 * The MTU of this node's pod traffic as the host shows it: reads the links and the ways out of the node
 * through the netlink port, then leaves the choice to the pure chooseMtu (mtu.ts).
 */

import type { Family, NetlinkHandle } from '../datapath/ports.ts';
import { parseIp } from '../ip/index.ts';
import { findWaysOut, readLocalLinks } from '../routes/local-links.ts';
import { nodeLinkOf } from '../routes/node-link.ts';
import type { ClusterNode } from './cluster.ts';
import type { AgentConfig } from './config.ts';
import { chooseMtu, encapOverhead, type MtuChoice } from './mtu.ts';

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
  const links = await host.listLinks();
  const localLinks = await readLocalLinks(host, links);
  const nodeLink = nodeLinkOf(localLinks, self.internalIPs, links);
  const needWaysOut = nodeLink === undefined || !links.some((l) => l.index === nodeLink.ifindex);
  const waysOut = needWaysOut ? await findWaysOut(host, familiesOf(self.internalIPs)) : [];
  const overhead = encapOverhead(mode, self.internalIPs, self.podCIDRs);
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
