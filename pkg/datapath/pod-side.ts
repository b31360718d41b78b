/**
 * What a pod's own interface gets at ADD, as steps for one setUp in the pod's namespace: loopback up,
 * the interface renamed and sized (a prepared pair's), up, its host-length addresses, a link route to
 * the IPv4 gateway, then the routes through the gateways (pod-routes.ts).
 */
import type { LeasedAddress } from '../ipam/index.ts';
import { GATEWAY_V4, hostPrefixLen } from './gateway.ts';
import type { PodRoute } from './pod-routes.ts';
import type { RouteInfo, SetUpStep } from './ports.ts';

export interface PodSideInput {
  /** The pod interface's index. */
  index: number;
  /** Loopback's index when it must be set up (down, or not looked at), else undefined. */
  loopback: number | undefined;
  /** A prepared pair's pod end: renamed to `ifname` (and given `mtu` and `mac`) first. */
  rename?: { ifname: string; mtu: number | undefined; mac?: string };
  addresses: readonly LeasedAddress[];
  routes: readonly PodRoute[];
}

/** The steps, and where the routes through the gateways start among them (their outcomes say which were made). */
export function podSideSteps(p: PodSideInput): { steps: SetUpStep[]; firstRouteStep: number } {
  const steps: SetUpStep[] = [];
  if (p.loopback !== undefined) steps.push({ kind: 'up', index: p.loopback });
  if (p.rename !== undefined)
    steps.push({
      kind: 'link',
      index: p.index,
      name: p.rename.ifname,
      mtu: p.rename.mtu,
      ...(p.rename.mac === undefined ? {} : { mac: p.rename.mac }),
    });
  steps.push({ kind: 'up', index: p.index });
  for (const a of p.addresses) {
    steps.push({
      kind: 'address',
      address: {
        family: a.family,
        ifindex: p.index,
        address: a.address,
        prefixLen: hostPrefixLen(a.family),
        noDad: a.family === 6,
      },
    });
  }
  if (p.addresses.some((a) => a.family === 4)) {
    steps.push({
      kind: 'route',
      route: { family: 4, dst: `${GATEWAY_V4}/32`, ifindex: p.index, scope: 'link' },
      keepExisting: true,
    });
  }
  const firstRouteStep = steps.length;
  for (const r of p.routes) {
    const route: RouteInfo = { family: r.family, dst: r.dst, gateway: r.gateway, ifindex: p.index };
    // onlink: valid before (and independent of) the link route above, even when that one is kept.
    if (r.family === 4) route.onlink = true;
    if (r.mtu !== undefined) route.mtu = r.mtu;
    steps.push({ kind: 'route', route, keepExisting: true });
  }
  return { steps, firstRouteStep };
}
