/**
 * The thin, impure half of doctor: read the agent's admin socket, the CNI directories, /proc/sys and
 * the links of the network namespace doctor runs in, into DoctorFacts. Nothing here judges.
 */
import { execFile } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { REQUIRED_CNI_BINARIES } from '../agent/publication.ts';
import { rememberedPodCIDRs } from '../agent/remembered-node.ts';
import { configsBefore } from '../cniconf/index.ts';
import type { NetlinkHandle } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { findWaysOut } from '../routes/local-links.ts';
import { adminGet } from './admin-client.ts';
import { ADMIN_SOCKET_OFF, ANSWERED_PREFIX, type DoctorFacts, type Gathered } from './doctor.ts';
import type { LeasesView, RoutesView, StatusView } from './views.ts';

/** Route lookups in flight at once while finding the VXLAN peers' uplinks. */
const LOOKUP_BATCH = 64;

export interface GatherOptions {
  adminSocket: string;
  /** Used when the agent cannot be asked for its own. */
  cniConfDir: string;
  cniBinDir: string;
  /** The agent's state directory: the pod CIDRs its last run saved, when it cannot be asked. */
  stateDir: string;
  conflistName: string;
  openHost(): NetlinkHandle;
  /** /proc/sys by default (tests never need another). */
  procSys?: string;
}

function gathered<T>(fn: () => T): Gathered<T> {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    return { ok: false, error: errorText(err) };
  }
}

function readSysctl(root: string, key: string): string | undefined {
  try {
    return readFileSync(join(root, key), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function runVersion(binary: string): Promise<Gathered<string>> {
  return new Promise((resolve) => {
    execFile(binary, ['--version'], { timeout: 5000, env: {} }, (err, stdout, stderr) => {
      if (err !== null) resolve({ ok: false, error: `${err.message.trim()} ${stderr.trim()}`.trim() });
      else resolve({ ok: true, value: stdout.trim() });
    });
  });
}

/**
 * The agent's three documents. An empty socket path asks nothing (ADMIN_SOCKET_OFF); one request
 * failing where another was answered says which (ANSWERED_PREFIX): the agent runs then.
 */
async function askAgent(socket: string): Promise<DoctorFacts['agent']> {
  if (socket === '') return { ok: false, error: ADMIN_SOCKET_OFF };
  const paths = ['/status', '/routes', '/leases'] as const;
  const [status, routes, leases] = await Promise.allSettled([
    adminGet<StatusView>(socket, paths[0]),
    adminGet<RoutesView>(socket, paths[1]),
    adminGet<LeasesView>(socket, paths[2]),
  ]);
  if (status.status === 'fulfilled' && routes.status === 'fulfilled' && leases.status === 'fulfilled')
    return { ok: true, value: { status: status.value, routes: routes.value, leases: leases.value } };
  const outcomes = [status, routes, leases];
  const failed = outcomes.flatMap((o, i) =>
    o.status === 'rejected' ? [`${paths[i]}: ${(o.reason as Error).message}`] : [],
  );
  if (failed.length === outcomes.length) {
    return { ok: false, error: (outcomes[0] as PromiseRejectedResult).reason.message as string };
  }
  return { ok: false, error: `${ANSWERED_PREFIX} ${failed.join('; ')}` };
}

export async function gatherDoctorFacts(opts: GatherOptions): Promise<DoctorFacts> {
  const procSys = opts.procSys ?? '/proc/sys';
  const agent = await askAgent(opts.adminSocket);
  // The agent's own paths win: doctor checks what the running agent uses.
  const confDir = agent.ok ? agent.value.status.cniConfDir : opts.cniConfDir;
  const binDir = agent.ok ? agent.value.status.cniBinDir : opts.cniBinDir;

  const confFiles = gathered(() => readdirSync(confDir));
  // Read only when something sorts first: a meta-plugin's (Multus) hands pods on to trellis.
  const confsBefore: Record<string, unknown> = {};
  for (const name of confFiles.ok ? configsBefore(confFiles.value, opts.conflistName) : []) {
    const conf = gathered((): unknown => JSON.parse(readFileSync(join(confDir, name), 'utf8')));
    confsBefore[name] = conf.ok ? conf.value : undefined;
  }
  const confPath = join(confDir, opts.conflistName);
  const ourConflist = existsSync(confPath)
    ? gathered(() => {
        const parsed = JSON.parse(readFileSync(confPath, 'utf8')) as {
          plugins?: { type?: unknown; mtu?: unknown }[];
        };
        const plugins = Array.isArray(parsed.plugins) ? parsed.plugins : [];
        // Other tools may chain plugins into the list (pkg/cniconf/chained.ts): trellis's entry is found by type.
        const trellis = plugins.find((p) => p?.type === 'trellis');
        return {
          types: plugins.map((p) => (typeof p?.type === 'string' ? p.type : String(p?.type))),
          mtu: typeof trellis?.mtu === 'number' ? trellis.mtu : undefined,
        };
      })
    : undefined;

  const binaries: DoctorFacts['binaries'] = {};
  for (const name of REQUIRED_CNI_BINARIES) {
    const p = join(binDir, name);
    let executable = false;
    try {
      accessSync(p, constants.X_OK);
      executable = true;
    } catch {
      // Not executable or absent.
    }
    let danglingTo: string | undefined;
    try {
      if (lstatSync(p).isSymbolicLink() && !existsSync(p)) danglingTo = readlinkSync(p);
    } catch {
      // Absent.
    }
    binaries[name] = {
      present: existsSync(p) || danglingTo !== undefined,
      executable,
      ...(danglingTo === undefined ? {} : { danglingTo }),
    };
  }
  const shim = join(binDir, 'trellis');
  const shimVersion = binaries.trellis?.executable === true ? await runVersion(shim) : undefined;

  const host = opts.openHost();
  let links: DoctorFacts['links'];
  let defaultRouteIfaces: string[];
  const peerUplinks: Record<string, string> = {};
  try {
    const all = await host.listLinks();
    links = all.map((l) => ({
      name: l.name,
      mtu: l.mtu,
      kind: l.kind,
      up: l.up,
      lowerUp: l.lowerUp === true,
    }));
    const byIndex = new Map(all.map((l) => [l.index, l.name]));
    const names = (ifindexes: readonly number[]): string[] =>
      ifindexes.map((i) => byIndex.get(i)).filter((n): n is string => n !== undefined);
    // The kernel's own lookups, as the agent's MTU detection makes them: ECMP and nexthop-group
    // default routes (which a dump's parser skips or cannot name a device for) and policy rules included.
    const waysOut = await findWaysOut(host, [4, 6]);
    defaultRouteIfaces = [...new Set(waysOut.flatMap((w) => names(w.ifindexes)))];
    // Where the underlay traffic of VXLAN peers comes and goes (the rp-filter check, IPv4; the MTU
    // check); a lookup that fails leaves that peer out. A multipath route names its first leg. In
    // batches: one round trip each, 5,000 at 5,000 nodes.
    const vxlanPeers = (agent.ok ? agent.value.routes.peers : []).filter((p) => p.path === 'vxlan');
    for (let i = 0; i < vxlanPeers.length; i += LOOKUP_BATCH) {
      const batch = vxlanPeers.slice(i, i + LOOKUP_BATCH);
      const ways = await Promise.all(batch.map((p) => host.routeTo(p.nodeIP).catch(() => undefined)));
      for (const [j, way] of ways.entries()) {
        const iface = way === undefined ? undefined : names(way.ifindexes)[0];
        if (iface !== undefined) peerUplinks[batch[j]!.nodeIP] = iface;
      }
    }
  } finally {
    host.close();
  }
  // Asked again after the links (DoctorFacts.leasesAfterLinks); without an answer, the first list.
  const leasesAfterLinks = agent.ok
    ? await adminGet<LeasesView>(opts.adminSocket, '/leases').catch(() => undefined)
    : undefined;

  const rpAll = readSysctl(procSys, 'net/ipv4/conf/all/rp_filter');
  const byIface: Record<string, number | undefined> = {};
  for (const l of links) {
    const v = readSysctl(procSys, `net/ipv4/conf/${l.name}/rp_filter`);
    byIface[l.name] = v === undefined ? undefined : Number(v);
  }
  const netnsExists: Record<string, boolean> = {};
  if (agent.ok) {
    // The agent's verdict where it gives one: it sees the host's /proc (--host-proc) and tells a
    // namespace from a leftover file; this process may not.
    for (const l of agent.value.leases.leases) {
      // No verdict from the agent (out of descriptors) is none here either: this process may not see
      // the host's /proc, and its "no such file" would call a running pod's lease leaked.
      if (l.netns !== '' && l.netnsUnknown !== true)
        netnsExists[l.netns] = l.netnsAlive ?? existsSync(l.netns);
    }
  }
  return {
    agent,
    confDir,
    expectedConflist: opts.conflistName,
    confFiles,
    confsBefore,
    ourConflist,
    binDir,
    binaries,
    shimVersion,
    ...(agent.ok ? {} : { rememberedPodCIDRs: rememberedPodCIDRs(opts.stateDir) }),
    forwarding: {
      v4: readSysctl(procSys, 'net/ipv4/ip_forward'),
      v6: readSysctl(procSys, 'net/ipv6/conf/all/forwarding'),
    },
    rpFilter: { all: rpAll === undefined ? undefined : Number(rpAll), byIface },
    links,
    defaultRouteIfaces,
    peerUplinks,
    leasesAfterLinks,
    netnsExists,
    // Peer links are the underlay (direct) or the VXLAN device itself, whose MTU already excludes it.
    overhead: 0,
  };
}
