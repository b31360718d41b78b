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
 * 'unchanged' when the installed file has the same size, SHA-256 and mode.
 */
export async function installBinary(
  src: string,
  destDir: string,
  name: string,
): Promise<'installed' | 'unchanged'> {
  const dest = join(destDir, name);
  if (await sameContent(src, dest)) {
    const st = await stat(dest);
    if ((st.mode & 0o7777) === 0o755) return 'unchanged';
  }
  await copyFileAtomic(src, destDir, name, 0o755);
  return 'installed';
}

/**
 * Installs src as destDir/name (mode 0755, atomically) only when destDir has no entry of that name;
 * 'kept' leaves whatever is there (any content, mode or symlink) untouched. For binaries the node may
 * already have in a build of its own, which ours must not replace.
 */
export async function installBinaryIfAbsent(
  src: string,
  destDir: string,
  name: string,
): Promise<'installed' | 'kept'> {
  return (await copyFileIfAbsent(src, destDir, name, 0o755)) === 'copied' ? 'installed' : 'kept';
}
