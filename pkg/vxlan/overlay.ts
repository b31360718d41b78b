/**
 * The VXLAN backend behind pkg/routes' OverlayPort. Per pass (the RouteReconciler calls these in order):
 *   prepare  devices match the mode and settings (host-gw: ours are deleted), returns the usable ones
 *   program  neighbours, then FDB entries the VXLAN decisions need (before the routes)
 *   prune    entries on our devices nobody needs (after the routes; only once the node list is synced)
 * Level-triggered like the routes: desired vs listed every pass, nothing remembered between passes except
 * the last pass's device states for status and the VTEP annotation.
 */

import type {
  DeletedEntry,
  Family,
  FdbEntry,
  LinkInfo,
  NeighbourEntry,
  NetlinkHandle,
} from '../datapath/ports.ts';
import { canonicalIp } from '../ip/index.ts';
import { findWaysOut } from '../routes/local-links.ts';
import type { OverlayPort, OverlayReport, TunnelHop } from '../routes/reconciler.ts';
import type {
  LocalLink,
  OverlayDevice,
  PeerDecision,
  Problem,
  RoutingMode,
  SelfNode,
} from '../routes/types.ts';
import { isVxlanDeviceName } from './constants.ts';
import {
  type DeviceSpec,
  type DeviceState,
  DeviceUnusableError,
  desiredDevices,
  ensureDevice,
  familiesNeedingWayOut,
  specsInKernel,
  type VxlanSettings,
  type VxlanSysctls,
} from './device.ts';
import { desiredEntries, diffFdb, diffNeighbours } from './entries.ts';
import type { VxlanLinkTool } from './link-tool.ts';

export interface VxlanOverlayOptions extends VxlanSettings {
  handle: NetlinkHandle;
  tool: VxlanLinkTool;
  nodeName: string;
  /** Device changes are logged (created, recreated and why, removed), and a missing underlay. */
  log?: { info(obj: object, msg: string): void; warn?(obj: object, msg: string): void };
  /** Told of each entry prune deletes, so its notification is not taken for someone else's. */
  own?: { expectEntryDelete(entry: DeletedEntry): void };
  /**
   * The node's /proc/sys: IPv6 turned on on the IPv6 device where the node's default leaves it off
   * (device.ts ensureDevice). Without it, the device keeps what the kernel gave it.
   */
  sysctl?: VxlanSysctls;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

export class VxlanOverlay implements OverlayPort {
  private readonly opts: VxlanOverlayOptions;
  private states: DeviceState[] = [];
  /**
   * The devices the last pass wanted (desiredDevices' `previous`); before the first pass, undefined:
   * that pass takes the ones the kernel holds (specsInKernel).
   */
  private specs: DeviceSpec[] | undefined;
  private errors: OverlayReport['errors'] = [];
  private added = 0;
  private removed = 0;
  private pending: { neighbours: NeighbourEntry[]; fdb: FdbEntry[] } = { neighbours: [], fdb: [] };
  /** Devices whose MTU no underlay tells now (warned once until one does again). */
  private withoutUnderlay = new Set<string>();
  /** The last devices this overlay deleted (removed, or to recreate them), by index. */
  private readonly deletedHere: number[] = [];
  /** The MTU this overlay last set on each device, by index (one entry per device it ever resized). */
  private readonly mtuSetHere = new Map<number, number>();

  constructor(opts: VxlanOverlayOptions) {
    this.opts = opts;
  }

  /**
   * Whether this overlay deleted the link at `index` itself (recreating or removing a device): its
   * going down and away is then no one else's doing, and no news for the link watches.
   */
  deletedItself(index: number): boolean {
    return this.deletedHere.includes(index);
  }

  /** Whether `mtu` on device `index` is the last MTU this overlay set there itself (a pass's change). */
  setMtuItself(index: number, mtu: number): boolean {
    return this.mtuSetHere.get(index) === mtu;
  }

  private noteDeleted(index: number): void {
    this.deletedHere.push(index);
    if (this.deletedHere.length > 8) this.deletedHere.shift();
  }

  /** The devices after the last pass (status CLI, VTEP annotation). */
  devices(): readonly DeviceState[] {
    return this.states;
  }

  /** The MAC to publish per family: only for devices that exist. */
  vtepMacs(): Partial<Record<Family, string>> {
    const out: Partial<Record<Family, string>> = {};
    for (const d of this.states) out[d.family] = d.mac;
    return out;
  }

  async prepare(
    self: SelfNode,
    localLinks: LocalLink[],
    mode: RoutingMode,
    listed?: readonly LinkInfo[],
  ): Promise<{ devices: OverlayDevice[]; problems: Problem[]; linksChanged: boolean }> {
    const { handle, tool, nodeName, log } = this.opts;
    let linksChanged = false;
    this.errors = [];
    this.added = 0;
    this.removed = 0;
    this.pending = { neighbours: [], fdb: [] };
    const links = listed ?? (await handle.listLinks());
    const waysOut = await findWaysOut(handle, familiesNeedingWayOut(self, localLinks, links, mode));
    const previous =
      this.specs ?? (mode === 'host-gw' ? [] : await specsInKernel(handle, tool, nodeName, links, this.opts));
    const { specs, problems } = desiredDevices(
      nodeName,
      self,
      localLinks,
      links,
      mode,
      this.opts,
      waysOut,
      previous,
    );
    this.specs = specs;
    this.warnWithoutUnderlay(specs);
    for (const l of links) {
      if (!isVxlanDeviceName(l.name) || specs.some((s) => s.name === l.name)) continue;
      try {
        this.noteDeleted(l.index);
        linksChanged = true;
        await handle.deleteLink(l.index);
        log?.info({ device: l.name, mode }, 'VXLAN device removed');
      } catch (e) {
        this.errors.push({ op: 'delete device', what: l.name, scope: 'device', error: asError(e) });
      }
    }
    const states: DeviceState[] = [];
    for (const spec of specs) {
      try {
        const state = await ensureDevice(
          handle,
          tool,
          spec,
          (index) => this.noteDeleted(index),
          (index, mtu) => this.mtuSetHere.set(index, mtu),
          this.opts.sysctl,
        );
        states.push(state);
        if (state.action !== 'unchanged') {
          linksChanged = true;
          log?.info(
            {
              device: spec.name,
              action: state.action,
              vni: spec.vni,
              port: spec.port,
              local: spec.localIp,
              underlay: spec.underlay,
              vtep: spec.vtepIP,
              mac: spec.mac,
              mtu: spec.mtu,
            },
            'VXLAN device',
          );
        }
      } catch (e) {
        this.errors.push({ op: 'ensure device', what: spec.name, scope: 'device', error: asError(e) });
        // A check that failed (a netlink request) says nothing about the device itself. Dropping it
        // here would take every tunnel route of its family off this node and withdraw its VTEP MAC
        // from the whole cluster until the retry; the device the last pass made, still in the
        // kernel under the same index, is kept instead. The pass reports the error and is retried.
        // `links` was listed before the check: a device it deleted on the way (to recreate it) is gone.
        // A write that was to make the device usable failing is another matter: the device is known
        // not to carry the traffic (no IPv6 on it, no VTEP address, down), and kept, it would have
        // its MAC published and peers tunnel into it, same-subnet ones leaving a direct path that
        // works, pass after pass while the write keeps failing. Not kept, its routes go and its MAC
        // is withdrawn until a pass completes it.
        if (e instanceof DeviceUnusableError) continue;
        const last = this.states.find((d) => d.name === spec.name);
        if (
          last !== undefined &&
          !this.deletedItself(last.ifindex) &&
          links.some((l) => l.name === last.name && l.index === last.ifindex)
        ) {
          states.push({ ...last, action: 'kept (its check failed)' });
        } else if (last === undefined) {
          // A restarted agent's first pass has no device of its own yet: the one a previous agent made,
          // as the kernel lists it (a VXLAN link of this name and MAC), is kept the same way.
          const listed = links.find(
            (l) =>
              l.name === spec.name &&
              l.kind === 'vxlan' &&
              l.mac === spec.mac &&
              !this.deletedItself(l.index),
          );
          if (listed !== undefined) {
            states.push({
              family: spec.family,
              name: listed.name,
              ifindex: listed.index,
              mac: listed.mac,
              mtu: listed.mtu,
              action: 'kept (its check failed)',
            });
          }
        }
      }
    }
    this.states = states;
    return {
      devices: states.map((s) => ({ family: s.family, ifindex: s.ifindex, name: s.name })),
      problems,
      linksChanged,
    };
  }

  /** Warns once when a device's MTU stops deriving from an underlay (kept, or 1500's when new). */
  private warnWithoutUnderlay(specs: readonly DeviceSpec[]): void {
    const now = new Set<string>();
    for (const spec of specs) {
      if (spec.underlay !== undefined || this.opts.mtu > 0) continue;
      now.add(spec.name);
      if (this.withoutUnderlay.has(spec.name)) continue;
      this.opts.log?.warn?.(
        { device: spec.name, mtu: spec.mtu },
        'no way out of the node found for the VXLAN device: its MTU is kept, or 1500 less the overhead when new (set --mtu if the network differs)',
      );
    }
    this.withoutUnderlay = now;
  }

  async program(decisions: readonly PeerDecision[]): Promise<TunnelHop[]> {
    const { handle } = this.opts;
    const ours = new Set(this.states.map((s) => s.ifindex));
    if (ours.size === 0) return [];
    const want = desiredEntries(decisions);
    const [neighbours, fdb] = await Promise.all([handle.listNeighbours(), handle.listFdb()]);
    const nd = diffNeighbours(want.neighbours, neighbours, ours);
    const fd = diffFdb(want.fdb, fdb, ours);
    const unwritten: TunnelHop[] = [];
    for (const n of nd.write) {
      const ok = await this.try(
        'replace neighbour',
        `${n.address} lladdr ${n.mac}`,
        () => handle.replaceNeighbour(n),
        1,
      );
      if (!ok) unwritten.push({ ifindex: n.ifindex, address: n.address });
    }
    // A unicast MAC has one remote, which the write re-points (fd.replaced: the entries it moves).
    for (const f of fd.write) {
      if (await this.try('replace fdb', `${f.mac} dst ${f.dst}`, () => handle.replaceFdb(f), 1)) continue;
      // The hops behind that MAC: the neighbours that resolve to it.
      for (const n of want.neighbours) {
        if (n.ifindex === f.ifindex && n.mac.toLowerCase() === f.mac.toLowerCase()) {
          unwritten.push({ ifindex: n.ifindex, address: n.address });
        }
      }
    }
    this.pending = { neighbours: nd.remove, fdb: fd.remove };
    return unwritten;
  }

  async prune(
    _decisions: readonly PeerDecision[],
    synced: boolean,
    stillRouted: readonly TunnelHop[] = [],
  ): Promise<OverlayReport> {
    const { handle } = this.opts;
    const { neighbours, fdb } = this.pending;
    this.pending = { neighbours: [], fdb: [] };
    if (synced) {
      // Entries a route still in the kernel goes through (its change refused or held back) stay with
      // it, the FDB entry of their MAC included: deleting them would cut that peer off until a retry.
      const routed = new Set(stillRouted.map((h) => `${h.ifindex} ${canonicalIp(h.address) ?? h.address}`));
      const kept = neighbours.filter((n) =>
        routed.has(`${n.ifindex} ${canonicalIp(n.address) ?? n.address}`),
      );
      const keptMacs = new Set(kept.map((n) => `${n.ifindex} ${n.mac.toLowerCase()}`));
      for (const n of neighbours) {
        if (kept.includes(n)) continue;
        this.opts.own?.expectEntryDelete(n);
        await this.try('delete neighbour', n.address, () => handle.deleteNeighbour(n), 0, 1);
      }
      for (const f of fdb) {
        if (keptMacs.has(`${f.ifindex} ${f.mac.toLowerCase()}`)) continue;
        this.opts.own?.expectEntryDelete(f);
        await this.try('delete fdb', `${f.mac} dst ${f.dst}`, () => handle.deleteFdb(f), 0, 1);
      }
    }
    return {
      devices: this.states.map((s) => ({ ...s })),
      added: this.added,
      removed: this.removed,
      removalsDeferred: synced ? 0 : neighbours.length + fdb.length,
      errors: this.errors,
    };
  }

  /** Runs one entry write; false (the error kept for the report) when it failed. */
  private async try(
    op: string,
    what: string,
    fn: () => Promise<void>,
    add: number,
    remove = 0,
  ): Promise<boolean> {
    try {
      await fn();
      this.added += add;
      this.removed += remove;
      return true;
    } catch (e) {
      this.errors.push({ op, what, scope: 'entry', error: asError(e) });
      return false;
    }
  }
}
