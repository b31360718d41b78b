/**
 * The VXLAN packets this node receives, for the host firewall's input check (pkg/firewall/vxlan-input.ts):
 * per underlay family, the peers the routes tunnel to (their InternalIPs, where their packets
 * come from) and the devices they come in on, which are the ones the node's routes to them leave by
 * (a reverse path like the forward one; a few lookups, never a dump).
 */
import type { Family, NetlinkHandle } from '../datapath/ports.ts';
import type { VxlanInKind } from '../firewall/index.ts';
import type { PeerDecision } from '../routes/types.ts';

/** Lookups per family: the peers of one node usually share one or two ways out. */
const SAMPLE = 8;

/** The underlay addresses of the peers a pass tunnels to, per family (those of the VXLAN decisions). */
export function tunnelledPeers(decisions: readonly PeerDecision[]): Map<Family, string[]> {
  const sets = new Map<Family, Set<string>>();
  for (const d of decisions) {
    if (d.path !== 'vxlan') continue;
    const family: Family = d.nodeIP.includes(':') ? 6 : 4;
    const set = sets.get(family) ?? new Set<string>();
    set.add(d.nodeIP);
    sets.set(family, set);
  }
  return new Map([...sets].map(([f, set]) => [f, [...set]]));
}

/** Evenly spread picks of at most n of xs. */
function sample<T>(xs: readonly T[], n: number): T[] {
  if (xs.length <= n) return [...xs];
  return Array.from({ length: n }, (_, i) => xs[Math.floor((i * xs.length) / n)]!);
}

/** One kind per family with tunnelled peers; the devices from the routes to a sample of them. */
export async function vxlanInKinds(
  host: Pick<NetlinkHandle, 'routeTo' | 'listLinks'>,
  peers: ReadonlyMap<Family, readonly string[]>,
  port: number,
): Promise<VxlanInKind[]> {
  if (peers.size === 0) return [];
  const names = new Map((await host.listLinks()).map((l) => [l.index, l.name]));
  const kinds: VxlanInKind[] = [];
  for (const [family, sources] of [...peers].sort(([a], [b]) => a - b)) {
    const devices = new Set<string>();
    for (const ip of sample(sources, SAMPLE)) {
      const way = await host.routeTo(ip).catch(() => undefined);
      for (const i of way?.ifindexes ?? []) {
        const name = names.get(i);
        if (name !== undefined) devices.add(name);
      }
    }
    kinds.push({ family, port, sources: [...sources], devices: [...devices].sort() });
  }
  return kinds;
}
