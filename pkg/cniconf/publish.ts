/**
 * Publishing what the container runtime needs on the host: the config list in its conf dir and the CNI
 * binaries in its bin dir. Each is one atomic replacement, skipped when nothing changed, so the agent can
 * call these on every start without the runtime ever seeing a half-written file or a needless change.
 */

import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { copyFileAtomic, copyFileIfAbsent, removeFile, sameContent, writeFileAtomic } from './atomic.ts';

/** File extensions libcni loads from the conf dir; the config list must use one of them to be seen. */
export const CNI_CONF_EXTENSIONS = ['.conf', '.conflist', '.json'] as const;

/**
 * The config files among a conf dir's entries that the runtime loads before `ours`: containerd and
 * CRI-O take the first by name (libcni's ConfFiles, sorted bytewise), so the first of these, not
 * trellis, gives new pods their network. [] when ours is first, or not there at all.
 */
export function configsBefore(entries: readonly string[], ours: string): string[] {
  const confs = entries.filter((n) => CNI_CONF_EXTENSIONS.some((e) => n.endsWith(e))).sort();
  const at = confs.indexOf(ours);
  return at < 0 ? [] : confs.slice(0, at);
}

/** Plugin types that take a pod's default network from another config (they delegate). */
const META_PLUGIN_TYPES: ReadonlySet<string> = new Set(['multus', 'multus-shim']);

/**
 * The config files that take new pods from `ours` (`network`: its name): those before it
 * (configsBefore), from the first that does. A meta-plugin first (Multus's 00-multus.conf, type
 * multus or multus-shim: a supported setup) takes the pod and hands its default network on: to ours
 * when its clusterNetwork or first delegate names it (by network name, file name or path, or a
 * trellis plugin), to another network when it names one (it shadows ours then), and, naming none (its
 * daemon's config decides, auto-generated from the next config by name), to the next file, which is
 * judged the same way. `read` gives a file's parsed JSON, undefined when unreadable (which counts as
 * another network's: the runtime may load it). [] when ours is first or not there.
 */
export function configsShadowing(
  entries: readonly string[],
  ours: string,
  network: string,
  read: (name: string) => unknown,
): string[] {
  const before = configsBefore(entries, ours);
  for (const [i, name] of before.entries()) {
    const to = delegatesTo(read(name), ours, network);
    if (to === 'ours') return [];
    if (to !== 'next') return before.slice(i);
  }
  return [];
}

type Delegation = 'ours' | 'other' | 'next' | undefined;

/** A meta-plugin's config (Multus: type multus or multus-shim, first in a list or alone), its first plugin. */
function metaPlugin(conf: unknown): Record<string, unknown> | undefined {
  if (!isObject(conf)) return undefined;
  const first = Array.isArray(conf.plugins) ? conf.plugins[0] : conf;
  return isObject(first) && typeof first.type === 'string' && META_PLUGIN_TYPES.has(first.type)
    ? first
    : undefined;
}

/** Whether a parsed config is a meta-plugin's (Multus), which hands pods' default network on. */
export function isMetaPluginConfig(conf: unknown): boolean {
  return metaPlugin(conf) !== undefined;
}

/** Where a config sends a pod's default network: undefined when it is not a meta-plugin's. */
function delegatesTo(conf: unknown, ours: string, network: string): Delegation {
  const first = metaPlugin(conf);
  if (first === undefined) return undefined;
  const cluster = first.clusterNetwork;
  if (typeof cluster === 'string' && cluster !== '') {
    const base = cluster.slice(cluster.lastIndexOf('/') + 1);
    return cluster === network || base === ours ? 'ours' : 'other';
  }
  const delegates = first.delegates;
  if (Array.isArray(delegates) && delegates.length > 0) {
    const d: unknown = delegates[0];
    if (!isObject(d)) return 'other';
    const types = Array.isArray(d.plugins)
      ? d.plugins.map((p) => (isObject(p) ? p.type : undefined))
      : [d.type];
    return d.name === network || types[0] === 'trellis' ? 'ours' : 'other';
  }
  return 'next';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkConfName(fileName: string): void {
  if (!CNI_CONF_EXTENSIONS.some((ext) => fileName.endsWith(ext))) {
    throw new Error(
      `config file name ${JSON.stringify(fileName)} must end with ${CNI_CONF_EXTENSIONS.join(', ')}`,
    );
  }
}

/** Writes dir/fileName (mode 0644) atomically; 'unchanged' (and no write at all) when the bytes match. */
export async function publishConflist(
  dir: string,
  fileName: string,
  content: string,
): Promise<'written' | 'unchanged'> {
  checkConfName(fileName);
  return writeFileAtomic(dir, fileName, content, 0o644);
}

/** Removes our config list (uninstall); other files in the directory are never touched. */
export async function removeConflist(dir: string, fileName: string): Promise<'removed' | 'absent'> {
  checkConfName(fileName);
  return removeFile(dir, fileName);
}

/**
 * Installs src as destDir/name with mode 0755: copied to a temp name in destDir, fsynced, renamed over the
 * old binary. Running copies keep executing the old inode, so a busy binary never fails with ETXTBSY.
 * 'unchanged' when the installed file has the same size, SHA-256 and mode. `check` runs on the copy
 * before the rename (copyFileAtomic): a new binary that fails it never replaces the old one.
 */
export async function installBinary(
  src: string,
  destDir: string,
  name: string,
  check?: (copy: string) => Promise<string | undefined>,
): Promise<'installed' | 'unchanged'> {
  const dest = join(destDir, name);
  if (await sameContent(src, dest)) {
    const st = await stat(dest);
    if ((st.mode & 0o7777) === 0o755) return 'unchanged';
  }
  await copyFileAtomic(src, destDir, name, 0o755, check);
  return 'installed';
}

/**
 * Installs src as destDir/name (mode 0755, atomically) only when destDir has no entry of that name;
 * 'kept' leaves whatever is there (any content, mode or symlink) untouched. For binaries the node may
 * already have in a build of its own, which ours must not replace. `check` runs the complete copy
 * first, as installBinary's does: a refused one is not placed (BinaryRefusedError).
 */
export async function installBinaryIfAbsent(
  src: string,
  destDir: string,
  name: string,
  check?: (copy: string) => Promise<string | undefined>,
): Promise<'installed' | 'kept'> {
  return (await copyFileIfAbsent(src, destDir, name, 0o755, check)) === 'copied' ? 'installed' : 'kept';
}
