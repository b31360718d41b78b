/**
 * This node's VXLAN devices: which ones it should have (pure) and making one exist with exactly those
 * parameters (thin, over the netlink port and its VXLAN operations, link-tool.ts).
 *
 * A device's VNI, port, local address and learning flag are fixed at creation, so a difference recreates it
 * (its neighbours, FDB entries and routes go with it; the same pass programs them again). MAC, MTU and up
 * are changed in place. The VTEP address (/32 or /128) is added; the port cannot delete addresses, so a
 * device holding a stale one (our pod CIDR changed) is recreated too.
 */

import {
  type AddressInfo,
  type Family,
  IPV6_MIN_MTU,
  type LinkInfo,
  type NetlinkHandle,
  type RouteLookup,
} from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import { vtepAddress } from '../routes/desired.ts';
import { nodeLinkOf, usableInternalIPsOf, wayOutLink } from '../routes/node-link.ts';
import type { LocalLink, Problem, RoutingMode, SelfNode } from '../routes/types.ts';
import { VXLAN_OVERHEAD, vxlanDeviceName } from './constants.ts';
import type { VxlanLinkTool } from './link-tool.ts';
import { vtepMac } from './mac.ts';

export interface VxlanSettings {
  vni: number;
  port: number;
  /** Device MTU; 0 = the underlay interface's MTU minus the encapsulation overhead. */
  mtu: number;
}

export interface DeviceSpec {
  family: Family;
  name: string;
  vni: number;
  port: number;
  /** This node's InternalIP of the family: the outer source address. */
  localIp: string;
  /**
   * The interface toward the other nodes, whose MTU the device's derives from (log only: the device is
   * not bound to it): the one holding an InternalIP of the family on a subnet, else the one of smallest
   * MTU the route off the node takes (an InternalIP on lo; see wayOutLink); undefined without either:
   * the device keeps the MTU it has, a new one gets 1500 less the overhead.
   */
  underlay: string | undefined;
  mac: string;
  mtu: number;
  /** Our VTEP address on the device (network address of our first pod CIDR of the family). */
  vtepIP: string;
}

export interface DeviceState {
  family: Family;
  name: string;
  ifindex: number;
  mac: string;
  mtu: number;
  /** 'created', 'recreated (<why>)', 'updated (<what>)' or 'unchanged'. */
  action: string;
}

/**
 * The devices this node should have: none in host-gw; otherwise one per family in which it has a pod CIDR,
 * provided it has an InternalIP of that family held by one of its interfaces (a problem otherwise). The
 * device's MTU derives from the underlay (see DeviceSpec.underlay); `waysOut` (the kernel's routes off
 * the node, local-links.ts findWaysOut) are needed only for the families familiesNeedingWayOut names.
 * `previous`: the specs the last pass ensured, which keep a device whose InternalIP is off the
 * interfaces for a moment (below).
 */
export function desiredDevices(
  nodeName: string,
  self: SelfNode,
  localLinks: readonly LocalLink[],
  links: readonly LinkInfo[],
  mode: RoutingMode,
  settings: VxlanSettings,
  waysOut: readonly RouteLookup[] = [],
  previous: readonly DeviceSpec[] = [],
): { specs: DeviceSpec[]; problems: Problem[] } {
  const specs: DeviceSpec[] = [];
  const problems: Problem[] = [];
  if (mode === 'host-gw') return { specs, problems };
  for (const family of [4, 6] as Family[]) {
    const vtepIP = vtepAddress(self.podCIDRs, family);
    if (vtepIP === undefined) continue; // Not this family's node: no pods to reach.
    const { usable: ips, unusable } = usableInternalIPsOf(self.internalIPs, family);
    if (ips.length === 0) {
      // A node without any InternalIP (standalone mode) has no peers either: nothing to report.
      if (self.internalIPs.length === 0) continue;
      const which = unusable.length === 0 ? 'no' : 'no usable';
      const why = unusable.map((u) => ` (${u.ip}: ${u.why})`).join('');
      problems.push({
        node: nodeName,
        problem: `${which} IPv${family} InternalIP${why}: no IPv${family} VXLAN device, IPv${family} pod traffic can only use direct routes`,
      });
      continue;
    }
    const localIp = ips.find((ip) =>
      localLinks.some((l) => l.addresses.some((a) => canonicalIp(a.address) === ip)),
    );
    if (localIp === undefined) {
      // The address off its interface for a moment (a DHCP renewal, NetworkManager re-applying a
      // profile, `ip addr flush` and add): the device made for it stays as it is. Deleted, its
      // neighbours, FDB entries and tunnel routes would go, and its VTEP MAC off the Node, which
      // every peer acts on, twice; the InternalIP changed on the Node, the device follows it.
      const kept = previous.find(
        (p) =>
          p.family === family &&
          p.vtepIP === vtepIP &&
          ips.includes(p.localIp) &&
          links.some((l) => l.name === p.name),
      );
      problems.push({
        node: nodeName,
        problem:
          kept === undefined
            ? `InternalIP ${ips.join(', ')} is not an address of this node's interfaces: no IPv${family} VXLAN device`
            : `InternalIP ${ips.join(', ')} is not an address of this node's interfaces: the IPv${family} VXLAN device is kept as it was until it is back`,
      });
      if (kept !== undefined) specs.push(kept);
      continue;
    }
    const nodeLink = nodeLinkOf(localLinks, ips, links);
    const underlay =
      nodeLink === undefined
        ? wayOutLink(waysOut, links, family)?.link
        : links.find((l) => l.index === nodeLink.ifindex);
    const name = vxlanDeviceName(family);
    // Without an underlay (its route off the node missing for a moment, say) the device keeps the MTU
    // it has rather than drop to 1500's and back; only a new one gets that.
    const unknownMtu = links.find((l) => l.name === name)?.mtu ?? 1500 - VXLAN_OVERHEAD[family];
    const mtu =
      settings.mtu > 0
        ? settings.mtu
        : underlay === undefined
          ? unknownMtu
          : underlay.mtu - VXLAN_OVERHEAD[family];
    if (family === 6 && mtu < IPV6_MIN_MTU) {
      // The kernel takes IPv6 off a link below 1280: the device would hold no VTEP address and no
      // neighbour, and every pass would fail writing them. Said once per pass instead.
      const from =
        settings.mtu > 0
          ? `--mtu ${settings.mtu}`
          : `${underlay?.name ?? 'the underlay'}'s MTU ${underlay?.mtu ?? mtu + VXLAN_OVERHEAD[6]} less ${VXLAN_OVERHEAD[6]} bytes of encapsulation`;
      problems.push({
        node: nodeName,
        problem: `the IPv6 VXLAN device would get MTU ${mtu} (${from}), below the ${IPV6_MIN_MTU} IPv6 needs: no IPv6 VXLAN device, IPv6 pod traffic can only use direct routes (raise the underlay's MTU to ${IPV6_MIN_MTU + VXLAN_OVERHEAD[6]} or more${settings.mtu > 0 ? `, or --mtu to ${IPV6_MIN_MTU} or more` : ''})`,
      });
      continue;
    }
    specs.push({
      family,
      name,
      vni: settings.vni,
      port: settings.port,
      localIp,
      underlay: underlay?.name ?? nodeLink?.name,
      mac: vtepMac(nodeName, family),
      mtu,
      vtepIP,
    });
  }
  return { specs, problems };
}

/**
 * The families whose InternalIPs are on no interface with a subnet (a /32 on lo): desiredDevices needs
 * the way out of the node for those. Asked every pass, so the caller looks up no more than it must.
 */
export function familiesNeedingWayOut(
  self: SelfNode,
  localLinks: readonly LocalLink[],
  links: readonly LinkInfo[],
  mode: RoutingMode,
): Family[] {
  if (mode === 'host-gw') return [];
  return ([4, 6] as Family[]).filter((family) => {
    if (vtepAddress(self.podCIDRs, family) === undefined) return false; // no device of the family
    const ips = usableInternalIPsOf(self.internalIPs, family).usable;
    return ips.length > 0 && nodeLinkOf(localLinks, ips, links) === undefined;
  });
}

/**
 * The devices a previous agent left, as specs, for desiredDevices' `previous` on this agent's first
 * pass: an agent restarted while its InternalIP is off the interfaces keeps them as the running one
 * would have. Only a device made with today's VNI and port, without learning, holding one VTEP address
 * of its family, is taken; anything else was going to be recreated anyway. Its MTU is the one it has
 * (no underlay tells another now).
 */
export async function specsInKernel(
  handle: NetlinkHandle,
  tool: VxlanLinkTool,
  nodeName: string,
  links: readonly LinkInfo[],
  settings: VxlanSettings,
): Promise<DeviceSpec[]> {
  const specs: DeviceSpec[] = [];
  for (const family of [4, 6] as Family[]) {
    const name = vxlanDeviceName(family);
    const link = links.find((l) => l.name === name);
    if (link === undefined) continue;
    try {
      const params = await tool.vxlanParams(name);
      if (params === undefined || params === null || params.learning) continue;
      if (params.vni !== settings.vni || params.port !== settings.port) continue;
      const localIp = params.localIp === undefined ? undefined : canonicalIp(params.localIp);
      const full = family === 4 ? 32 : 128;
      const vteps = (await handle.listAddresses(family, link.index)).filter(
        (a) => a.scope !== 'link' && a.prefixLen === full,
      );
      const vtepIP = vteps.length === 1 ? canonicalIp(vteps[0]!.address) : undefined;
      if (localIp === undefined || vtepIP === undefined) continue;
      specs.push({
        family,
        name,
        vni: params.vni,
        port: params.port,
        localIp,
        underlay: undefined,
        mac: vtepMac(nodeName, family),
        mtu: link.mtu,
        vtepIP,
      });
    } catch {
      // Only an aid to the first pass: a device that could not be read is checked again by it.
    }
  }
  return specs;
}

const VANISHED = 'vanished';

/** Why the existing device cannot be kept ('vanished' when it is gone already), or undefined. */
async function mismatch(
  handle: NetlinkHandle,
  tool: VxlanLinkTool,
  link: LinkInfo,
  spec: DeviceSpec,
): Promise<string | undefined> {
  const params = await tool.vxlanParams(spec.name);
  if (params === undefined) return VANISHED;
  if (params === null) return `${spec.name} exists but is not a VXLAN device`;
  if (params.vni !== spec.vni) return `VNI ${params.vni} -> ${spec.vni}`;
  if (params.port !== spec.port) return `port ${params.port} -> ${spec.port}`;
  if (params.localIp === undefined || canonicalIp(params.localIp) !== spec.localIp) {
    return `local ${params.localIp ?? 'none'} -> ${spec.localIp}`;
  }
  if (params.learning) return 'learning on';
  const stale = (await handle.listAddresses(undefined, link.index)).filter(
    (a) => a.scope !== 'link' && !isVtepAddress(a, spec),
  );
  if (stale.length > 0) return `stale address ${stale.map((a) => `${a.address}/${a.prefixLen}`).join(', ')}`;
  return undefined;
}

function isVtepAddress(a: AddressInfo, spec: DeviceSpec): boolean {
  return (
    a.family === spec.family &&
    canonicalIp(a.address) === spec.vtepIP &&
    a.prefixLen === (spec.family === 4 ? 32 : 128)
  );
}

/** /proc/sys in the node's namespace (the agent's NetnsPort readSysctl/writeSysctl), by slash-separated key. */
export interface VxlanSysctls {
  readSysctl(key: string): string;
  writeSysctl(key: string, value: string): void;
}

/**
 * A write that was to make the device usable failed (created, its MAC, IPv6 on it, its VTEP address,
 * up): the device is known not to carry traffic as it is, unlike a check that failed (a read says
 * nothing about the device). The overlay keeps no such device (overlay.ts prepare). An MTU that could
 * not be set is not one of them: the device carries traffic at the MTU it has.
 */
export class DeviceUnusableError extends Error {
  readonly device: string;
  constructor(device: string, step: string, cause: unknown) {
    super(`${step}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'DeviceUnusableError';
    this.device = device;
  }
}

async function step<T>(device: string, what: string, fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw new DeviceUnusableError(device, what, e);
  }
}

/**
 * IPv6 on an IPv6 device: a node hardened with net.ipv6.conf.default.disable_ipv6=1 (IPv6 turned on
 * again only on its uplink) makes the device without it, and its VTEP address, neighbours and onlink
 * routes are then refused ("IPv6 is disabled on this device"). Read first: most nodes need no write.
 */
function ensureIpv6On(sysctl: VxlanSysctls, name: string): boolean {
  const key = `net/ipv6/conf/${name}/disable_ipv6`;
  if (sysctl.readSysctl(key).trim() !== '1') return false;
  sysctl.writeSysctl(key, '0');
  return true;
}

/**
 * Makes the device match spec; returns it as it now is. `onDelete` hears of a device it deletes, and
 * `onMtu` of an MTU it sets, first (the agent's watches tell its own changes from someone else's).
 * `sysctl` turns IPv6 on on an IPv6 device that lacks it (without it, the device is left as made).
 * A failed write that leaves the device unusable throws DeviceUnusableError.
 */
export async function ensureDevice(
  handle: NetlinkHandle,
  tool: VxlanLinkTool,
  spec: DeviceSpec,
  onDelete?: (index: number) => void,
  onMtu?: (index: number, mtu: number) => void,
  sysctl?: VxlanSysctls,
): Promise<DeviceState> {
  let link = await handle.getLink(spec.name);
  let action = 'unchanged';
  if (link !== undefined) {
    const why = await mismatch(handle, tool, link, spec);
    if (why !== undefined) {
      // Deleted between the lookup and the check (by hand, say): nothing to delete, only to create.
      if (why !== VANISHED) {
        onDelete?.(link.index);
        await handle.deleteLink(link.index);
      }
      link = undefined;
      action = `recreated (${why})`;
    }
  }
  if (link === undefined) {
    const { createVxlan } = handle;
    if (createVxlan === undefined) throw new Error('this netlink handle cannot create VXLAN devices');
    link = await step(spec.name, 'create', () =>
      createVxlan.call(handle, {
        name: spec.name,
        vni: spec.vni,
        port: spec.port,
        localIp: spec.localIp,
        learning: false,
        mtu: spec.mtu,
        mac: spec.mac, // in the creating request: a random one would race udev (CreateVxlan.mac)
      }),
    );
    if (action === 'unchanged') action = 'created';
  }
  const changed: string[] = [];
  const index = link.index;
  if (link.mac !== spec.mac) {
    await step(spec.name, 'set MAC', () => tool.setMac(index, spec.mac));
    changed.push('mac');
  }
  if (link.mtu !== spec.mtu) {
    onMtu?.(index, spec.mtu);
    await handle.setLinkMtu(index, spec.mtu);
    changed.push('mtu');
  }
  if (spec.family === 6 && sysctl !== undefined) {
    if (await step(spec.name, 'turn IPv6 on', () => ensureIpv6On(sysctl, spec.name))) changed.push('ipv6');
  }
  const hasVtep = (await handle.listAddresses(spec.family, index)).some((a) => isVtepAddress(a, spec));
  if (!hasVtep) {
    await step(spec.name, 'add VTEP address', () =>
      handle.addAddress({
        family: spec.family,
        ifindex: index,
        address: spec.vtepIP,
        prefixLen: spec.family === 4 ? 32 : 128,
        ...(spec.family === 6 ? { noDad: true } : {}),
      }),
    );
    changed.push('address');
  }
  if (!link.up) {
    await step(spec.name, 'set up', () => handle.setLinkUp(index));
    changed.push('up');
  }
  if (action === 'unchanged' && changed.length > 0) action = `updated (${changed.join(', ')})`;
  return { family: spec.family, name: spec.name, ifindex: link.index, mac: spec.mac, mtu: spec.mtu, action };
}
