import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CONFLIST_FILE_NAME, installBinary, removeConflist } from '../cniconf/index.ts';
import { isHostVethName } from '../datapath/names.ts';
import { type NetlinkHandle, TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';

/** Debian's reference plugins (containernetworking-plugins), in the image and on test hosts. */
export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';

/**
 * `trellis-agent install-cni` (the init container): the trellis shim plus the reference loopback and
 * portmap plugins the config list and containerd need, each replaced atomically and skipped when
 * identical, so a running runtime never sees a half-copied or busy binary.
 */
export async function installCniBinaries(opts: {
  binDir: string;
  shimPath: string;
  /** Looked in first for loopback and portmap (the image stages all three in one directory). */
  sourceDir?: string;
  referenceDir?: string;
}): Promise<{ name: string; outcome: 'installed' | 'unchanged' }[]> {
  const ref = opts.referenceDir ?? REFERENCE_PLUGIN_DIR;
  const pick = (name: string): string => {
    const staged =
      opts.sourceDir === undefined || opts.sourceDir === '' ? undefined : join(opts.sourceDir, name);
    return staged !== undefined && existsSync(staged) ? staged : join(ref, name);
  };
  const sources: [string, string][] = [
    ['trellis', opts.shimPath],
    ['loopback', pick('loopback')],
    ['portmap', pick('portmap')],
  ];
  const missing = sources.filter(([, src]) => !existsSync(src));
  if (missing.length > 0) {
    throw new Error(`cannot install CNI binaries: missing ${missing.map(([, src]) => src).join(', ')}`);
  }
  const out: { name: string; outcome: 'installed' | 'unchanged' }[] = [];
  for (const [name, src] of sources) out.push({ name, outcome: await installBinary(src, opts.binDir, name) });
  return out;
}

export interface UninstallReport {
  conflist: 'removed' | 'absent';
  binary: boolean;
  routes: number;
  links: string[];
  nftTable: boolean;
  stateDir: boolean;
}

/**
 * `trellis-agent uninstall`: removes everything trellis created on this node, and nothing else: its
 * config list, its binary (the reference plugins may serve other networks and stay), every route
 * carrying its protocol, its veths and devices, its nftables table and its state.
 */
export async function uninstallTrellis(opts: {
  host: NetlinkHandle;
  cniConfDir: string;
  cniBinDir: string;
  stateDir: string;
  socket: string;
  deleteNftTable: () => Promise<boolean>;
  /** Devices trellis creates besides pod veths (VXLAN). */
  isTrellisDevice?: (name: string) => boolean;
}): Promise<UninstallReport> {
  const conflist = await removeConflist(opts.cniConfDir, CONFLIST_FILE_NAME);
  const binPath = join(opts.cniBinDir, 'trellis');
  const binary = existsSync(binPath);
  rmSync(binPath, { force: true });
  let routes = 0;
  for (const family of [4, 6] as const) {
    for (const r of await opts.host.listRoutes({ family, protocol: TRELLIS_ROUTE_PROTOCOL })) {
      if (r.protocol !== TRELLIS_ROUTE_PROTOCOL) continue;
      await opts.host.deleteRoute(r);
      routes++;
    }
  }
  // The routes' nexthop objects went with them; this catches any a crash left without a route.
  const host = opts.host as Partial<{ pruneNexthops(): Promise<number> }>;
  if (typeof host.pruneNexthops === 'function') await host.pruneNexthops();
  const links: string[] = [];
  for (const l of await opts.host.listLinks()) {
    if (isHostVethName(l.name) || opts.isTrellisDevice?.(l.name) === true) {
      await opts.host.deleteLink(l.index);
      links.push(l.name);
    }
  }
  const nftTable = await opts.deleteNftTable();
  const stateDir = existsSync(opts.stateDir);
  rmSync(opts.stateDir, { recursive: true, force: true });
  rmSync(opts.socket, { force: true });
  return { conflist, binary, routes, links, nftTable, stateDir };
}
