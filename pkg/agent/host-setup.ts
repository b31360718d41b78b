import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  CONFLIST_FILE_NAME,
  entryExists,
  installBinary,
  installBinaryIfAbsent,
  removeConflist,
  removeStaleTemps,
} from '../cniconf/index.ts';
import { isHostVethName } from '../datapath/names.ts';
import { type NetlinkHandle, TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { isPreparedName } from '../datapath/prepared-pairs.ts';
import { errorText } from '../error-text.ts';
import { removeReadyMark } from './ready-mark.ts';

/** Route dumps uninstall takes at most per family, each deleting what it lists (uninstallTrellis). */
const UNINSTALL_ROUTE_ROUNDS = 4;

/** Debian's reference plugins (containernetworking-plugins), in the image and on test hosts. */
export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';

/**
 * The plugins the config list and containerd need besides trellis. The node usually has its own (static
 * upstream builds, from its packages or the installer); the image's are Debian bookworm builds, linked
 * against glibc >= 2.34, that cannot run on older hosts (Ubuntu 20.04, RHEL 8, Amazon Linux 2). So
 * install-cni only fills in a missing one and never replaces what the node has.
 */
const NODE_PLUGINS = ['loopback', 'portmap'] as const;

/** installed: written now; unchanged: trellis, already identical; kept: the node's own plugin, untouched. */
export type CniBinaryOutcome = 'installed' | 'unchanged' | 'kept';

/** One binary install-cni handled; `from` is the file it was copied (or compared) from, none when kept. */
export interface CniBinaryResult {
  name: string;
  outcome: CniBinaryOutcome;
  from?: string;
}

/**
 * Why an explicitly set source directory (--cni-source-dir, $TRELLIS_CNI_SOURCE_DIR) cannot be used,
 * undefined when it can: it must exist and hold the trellis binary. Without it install-cni would
 * silently take the shim next to the agent and the plugins of /usr/lib/cni instead.
 */
export function cniSourceDirProblem(dir: string): string | undefined {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : `cannot be read: ${(err as Error).message}`;
  }
  if (!isDir) return 'is not a directory';
  if (!existsSync(join(dir, 'trellis'))) return 'holds no trellis binary';
  return undefined;
}

/**
 * `trellis-agent install-cni` (the init container). The trellis shim is always brought up to date:
 * replaced atomically (temp file + rename) unless identical, and only by one that passes
 * `checkBinary` (BinaryRefusedError otherwise, the installed shim kept). loopback and portmap are
 * installed only where the bin dir has no entry of that name, again atomically, never over one that
 * appears meanwhile, and only when they pass `checkBinary` too: one the node cannot run would be kept
 * as the node's own from then on. An existing one, whatever its bytes, mode or link target, is left
 * exactly as it is.
 */
export async function installCniBinaries(opts: {
  binDir: string;
  shimPath: string;
  /** Looked in first for loopback and portmap (the image stages all three in one directory). */
  sourceDir?: string;
  referenceDir?: string;
  /** Runs a new binary (its complete copy in binDir) before it is put in place: a problem, or undefined. */
  checkBinary?: (copy: string) => Promise<string | undefined>;
}): Promise<CniBinaryResult[]> {
  const ref = opts.referenceDir ?? REFERENCE_PLUGIN_DIR;
  const pick = (name: string): string => {
    const staged =
      opts.sourceDir === undefined || opts.sourceDir === '' ? undefined : join(opts.sourceDir, name);
    return staged !== undefined && existsSync(staged) ? staged : join(ref, name);
  };
  const plugins = await Promise.all(
    // A symlink counts, dangling or not.
    NODE_PLUGINS.map(async (name) => ({
      name,
      kept: await entryExists(join(opts.binDir, name)),
      src: pick(name),
    })),
  );
  // Only what will be copied needs a source; check them all before writing anything.
  const sources = [opts.shimPath, ...plugins.filter((p) => !p.kept).map((p) => p.src)];
  const missing = sources.filter((src) => !existsSync(src));
  if (missing.length > 0) {
    throw new Error(`cannot install CNI binaries: missing ${missing.join(', ')}`);
  }
  const out: CniBinaryResult[] = [
    {
      name: 'trellis',
      outcome: await installBinary(opts.shimPath, opts.binDir, 'trellis', opts.checkBinary),
      from: opts.shimPath,
    },
  ];
  for (const p of plugins) {
    out.push(
      p.kept
        ? { name: p.name, outcome: 'kept' }
        : {
            name: p.name,
            outcome: await installBinaryIfAbsent(p.src, opts.binDir, p.name, opts.checkBinary),
            from: p.src,
          },
    );
  }
  return out;
}

/**
 * install-cni's log line: the names by outcome, where each installed or compared file came from
 * (`from`), and a message that says them in words.
 */
export function describeCniInstall(results: CniBinaryResult[]): {
  fields: {
    installed: string[];
    unchanged: string[];
    kept: string[];
    from: Record<string, string>;
  };
  message: string;
} {
  const by = (o: CniBinaryOutcome) => results.filter((r) => r.outcome === o).map((r) => r.name);
  const from: Record<string, string> = {};
  for (const r of results) if (r.from !== undefined) from[r.name] = r.from;
  const fields = { installed: by('installed'), unchanged: by('unchanged'), kept: by('kept'), from };
  const parts: string[] = [];
  const plugins = fields.installed.filter((n) => n !== 'trellis');
  if (fields.installed.includes('trellis')) parts.push(`installed trellis from ${dirname(from.trellis!)}`);
  if (fields.unchanged.length > 0) parts.push(`${fields.unchanged.join(', ')} already up to date`);
  if (plugins.length > 0) {
    // By source directory: an explicit one may lack a plugin, which then comes from Debian's.
    const dirs = new Map<string, string[]>();
    for (const n of plugins) {
      const d = dirname(from[n]!);
      dirs.set(d, [...(dirs.get(d) ?? []), n]);
    }
    const where = [...dirs].map(([d, names]) => `${names.join(', ')} from ${d}`).join(' and ');
    parts.push(
      `installed ${where}, as the node had none (the image's are Debian builds: they need glibc >= 2.34 on the node)`,
    );
  }
  if (fields.kept.length > 0) parts.push(`kept the node's own ${fields.kept.join(', ')} (never replaced)`);
  return { fields, message: `CNI binaries: ${parts.join('; ')}` };
}

export interface UninstallReport {
  conflist: 'removed' | 'absent';
  binary: boolean;
  routes: number;
  links: string[];
  nftTable: boolean;
  /** Accept rules trellis had inserted into other programs' forward chains, deleted. */
  forwardAccepts: number;
  /** Pods whose hostPort rules (the chained portmap's, for trellis's network) were deleted. */
  portmapRules: number;
  stateDir: boolean;
  /** Steps that failed, "what: why"; every other step ran all the same. Empty: all done. */
  failed: string[];
}

/**
 * `trellis-agent uninstall`: removes everything trellis created on this node, and nothing else: its
 * config list, its binary (loopback and portmap stay, also any install-cni put on a node that had none:
 * the runtime and other networks use them, and which ones came from trellis is not recorded), and the
 * temp files of an install-cni cut short, every route carrying its protocol, its veths and devices,
 * its nftables table, the accept rules it inserted into the host firewall's forward chains, the
 * hostPort rules the chained portmap made for its pods (their DELs would come under the next
 * network's name, which never finds them), its state,
 * its sockets and its spool. A step that fails does not stop the others (a pod deleted meanwhile takes
 * its veth with it): they are all tried, and the failures listed.
 */
export async function uninstallTrellis(opts: {
  host: NetlinkHandle;
  cniConfDir: string;
  cniBinDir: string;
  stateDir: string;
  socket: string;
  /** The admin socket, and the spool directory (both may live outside the state directory). */
  adminSocket?: string;
  spoolDir?: string;
  deleteNftTable: () => Promise<boolean>;
  /**
   * Deletes the accept rules the agent inserted into other programs' forward chains (their comment:
   * pkg/firewall/accept.ts) and resolves with how many; absent: none are looked for.
   */
  deleteForwardAccepts?: () => Promise<number>;
  /**
   * Deletes the hostPort rules the chained portmap made for trellis's pods (pkg/firewall/
   * portmap-leftovers.ts) and resolves with for how many pods; absent: none are looked for.
   */
  deletePortmapRules?: () => Promise<number>;
  /** Devices trellis creates besides pod veths (VXLAN). */
  isTrellisDevice?: (name: string) => boolean;
}): Promise<UninstallReport> {
  const failed: string[] = [];
  const step = async <T>(what: string, fallback: T, fn: () => Promise<T> | T): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      failed.push(`${what}: ${errorText(err)}`);
      return fallback;
    }
  };
  const conflist = await step('removing the config list', 'absent' as const, () =>
    removeConflist(opts.cniConfDir, CONFLIST_FILE_NAME),
  );
  const binPath = join(opts.cniBinDir, 'trellis');
  // A list left in place must keep its binary: without it every ADD and DEL fails ("failed to find
  // plugin"), and a DEL can no longer be spooled. The next uninstall removes both.
  // Unsure whether it is there (lstat failing otherwise) counts as there.
  const listStays =
    failed.length > 0 && (await entryExists(join(opts.cniConfDir, CONFLIST_FILE_NAME)).catch(() => true));
  const binary = existsSync(binPath) && !listStays;
  await step('removing the binary', undefined, async () => {
    if (listStays) throw new Error('kept: the config list naming it could not be removed');
    rmSync(binPath, { force: true });
    // What an install-cni cut short left (a temp file of up to the binary's size), ours alone.
    const temps = async (d: string, name: string): Promise<void> =>
      removeStaleTemps(d, name).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err; // no such directory: nothing was installed there
      });
    for (const name of ['trellis', 'loopback', 'portmap']) await temps(opts.cniBinDir, name);
    await temps(opts.cniConfDir, CONFLIST_FILE_NAME);
  });
  let routes = 0;
  for (const family of [4, 6] as const) {
    await step(`removing IPv${family} routes`, undefined, async () => {
      // Listed again until a dump finds none: an IPv6 dump the table changed under (the kubelet
      // deleting pods meanwhile) can leave routes out, unflagged. Bounded: a route that keeps
      // coming back is someone else's doing.
      for (let round = 0; round < UNINSTALL_ROUTE_ROUNDS; round++) {
        let found = 0;
        for (const r of await opts.host.listRoutes({ family, protocol: TRELLIS_ROUTE_PROTOCOL })) {
          if (r.protocol !== TRELLIS_ROUTE_PROTOCOL) continue;
          await opts.host.deleteRoute(r);
          found++;
        }
        routes += found;
        if (found === 0) break;
      }
    });
  }
  // The routes' nexthop objects went with them; this catches any a crash left without a route.
  const host = opts.host as Partial<{ pruneNexthops(): Promise<number> }>;
  if (typeof host.pruneNexthops === 'function') {
    await step('pruning nexthop objects', 0, () => host.pruneNexthops!());
  }
  const links: string[] = [];
  for (const l of await step('listing links', [], () => opts.host.listLinks())) {
    const ours = isHostVethName(l.name) || isPreparedName(l.name) || opts.isTrellisDevice?.(l.name) === true;
    if (!ours) continue;
    await step(`deleting ${l.name}`, undefined, async () => {
      try {
        await opts.host.deleteLink(l.index);
      } catch (err) {
        // Gone since the listing (its pod deleted, the peer taking the pair with it): done already.
        const now = await opts.host.getLinkByIndex(l.index);
        if (now !== undefined && now.name === l.name) throw err;
      }
      links.push(l.name);
    });
  }
  const nftTable = await step('deleting the nftables table', false, () => opts.deleteNftTable());
  const forwardAccepts = await step('deleting the firewall accepts', 0, async () =>
    opts.deleteForwardAccepts === undefined ? 0 : opts.deleteForwardAccepts(),
  );
  const portmapRules = await step("deleting portmap's hostPort rules for trellis's pods", 0, async () =>
    opts.deletePortmapRules === undefined ? 0 : opts.deletePortmapRules(),
  );
  const stateDir = existsSync(opts.stateDir);
  // Each on its own: a state dir that cannot go (a mount point: EBUSY) must not leave the sockets.
  await step('removing the state directory', undefined, () =>
    rmSync(opts.stateDir, { recursive: true, force: true }),
  );
  if (opts.spoolDir !== undefined) {
    const spoolDir = opts.spoolDir;
    await step('removing the spool directory', undefined, () =>
      rmSync(spoolDir, { recursive: true, force: true }),
    );
  }
  await step('removing the CNI socket', undefined, () => rmSync(opts.socket, { force: true }));
  if (opts.adminSocket !== undefined && opts.adminSocket !== '') {
    const adminSocket = opts.adminSocket;
    await step('removing the admin socket', undefined, () => rmSync(adminSocket, { force: true }));
  }
  await step('removing the ready mark', undefined, () => removeReadyMark(opts.socket));
  return { conflist, binary, routes, links, nftTable, forwardAccepts, portmapRules, stateDir, failed };
}
