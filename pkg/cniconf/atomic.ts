/**
 * Writing host files so a reader (the container runtime, a kubelet, a running pod) only ever sees the old
 * file or the new one: temp file in the SAME directory (rename is atomic only within a filesystem), fsync,
 * rename over the target, fsync the directory so the rename survives a crash. A file that must not replace
 * an existing one is hard-linked into place instead (link(2) fails if the name exists).
 *
 * Temp names are `.<name>.<pid>.<random>.tmp`: libcni loads only `.conf`, `.conflist` and `.json` files, so
 * a runtime listing the directory mid-write never picks one up. Nothing else in the directory is touched,
 * apart from stale temp files of the same target left by a crashed writer.
 */

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { KeyedMutex } from '../datapath/keyed-mutex.ts';

export class HostFileError extends Error {
  readonly path: string;

  constructor(path: string, what: string, cause?: unknown) {
    super(
      `${what} ${path}${cause instanceof Error ? `: ${cause.message}` : ''}`,
      cause === undefined ? {} : { cause },
    );
    this.name = 'HostFileError';
    this.path = path;
  }
}

/** A new binary that failed the check it had to pass before it replaced the installed one. */
export class BinaryRefusedError extends Error {
  readonly path: string;
  readonly problem: string;

  /** `kept`: an installed binary was there, and stays. */
  readonly kept: boolean;

  constructor(path: string, problem: string, kept: boolean) {
    super(`the new ${path} ${problem}: ${kept ? 'the installed one was kept' : 'none was installed'}`);
    this.kept = kept;
    this.name = 'BinaryRefusedError';
    this.path = path;
    this.problem = problem;
  }
}

/** A plain file name: no directory parts, not hidden, not a temp name. */
export function checkFileName(name: string): string {
  if (
    typeof name !== 'string' ||
    name === '' ||
    name.includes('/') ||
    name.includes('\0') ||
    name.startsWith('.') ||
    name.endsWith('.tmp') ||
    name.length > 200
  ) {
    throw new HostFileError(String(name), 'invalid file name');
  }
  return name;
}

/**
 * One change at a time per target in this process, in the order asked: two writers of one file (the
 * config list from memory and the first API pass's, both behind VERSION probes of seconds) would
 * otherwise race, one removing the other's temp file as stale, or the older content renamed last.
 */
const changing = new KeyedMutex();

function oneAtATime<T>(dir: string, name: string, fn: () => Promise<T>): Promise<T> {
  return changing.run(join(dir, name), fn);
}

function tempName(name: string): string {
  return `.${name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function fsyncPath(path: string, flags: string): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Removes `.<name>.<pid>.<hex>.tmp` files left behind by an earlier writer that crashed mid-write. */
export async function removeStaleTemps(dir: string, name: string): Promise<void> {
  const re = new RegExp(`^\\.${escapeRe(name)}\\.[0-9]+\\.[0-9a-f]{8}\\.tmp$`);
  for (const entry of await readdir(dir)) {
    if (re.test(entry)) await unlink(join(dir, entry)).catch(() => undefined);
  }
}

/**
 * Puts a file at dir/name atomically, produced by `fill(tmpPath)`, with the given mode. The temp file is
 * removed on any failure. With `exclusive`, an existing dir/name (any kind of entry) is never replaced:
 * the complete temp file is hard-linked to the name, which fails if something got there first, and
 * the result is false.
 */
async function placeAtomically(
  dir: string,
  name: string,
  mode: number,
  fill: (tmp: string) => Promise<void>,
  exclusive = false,
  check?: (tmp: string) => Promise<string | undefined>,
): Promise<boolean> {
  checkFileName(name);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await removeStaleTemps(dir, name);
  const tmp = join(dir, tempName(name));
  const dest = join(dir, name);
  let placed = true;
  try {
    await fill(tmp);
    await chmod(tmp, mode); // explicit: the process umask must not decide what the runtime may read
    await fsyncPath(tmp, 'r');
    const problem = await check?.(tmp);
    if (problem !== undefined) throw new BinaryRefusedError(dest, problem, await entryExists(dest));
    if (!exclusive) await rename(tmp, dest);
    else {
      placed = await linkNoReplace(tmp, dest);
      // Gone already when the fallback renamed it.
      await unlink(tmp).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    }
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e instanceof BinaryRefusedError ? e : new HostFileError(dest, 'could not write', e);
  }
  await syncDir(dir, `${name} is in place, but`);
  return placed;
}

/** fsync of a directory (a rename or unlink in it survives a crash), its failure naming it. */
async function syncDir(dir: string, context: string): Promise<void> {
  try {
    await fsyncPath(dir, 'r');
  } catch (e) {
    throw new HostFileError(dir, `${context} could not sync the directory`, e);
  }
}

/** Any directory entry at path, a dangling symlink included. */
export async function entryExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * link(2) never replaces: false when dest exists. A filesystem without hard links falls back to a
 * rename after one more look (a narrow window, but never a half-written file).
 */
async function linkNoReplace(tmp: string, dest: string): Promise<boolean> {
  try {
    await link(tmp, dest);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
  }
  if (await entryExists(dest)) return false;
  await rename(tmp, dest);
  return true;
}

/** Writes content to dir/name atomically unless the file already holds exactly that content. */
export async function writeFileAtomic(
  dir: string,
  name: string,
  content: string | Uint8Array,
  mode = 0o644,
): Promise<'written' | 'unchanged'> {
  const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content);
  return oneAtATime(dir, checkFileName(name), async () => {
    const current = await readFile(join(dir, name)).catch(() => undefined);
    if (current?.equals(data)) {
      const st = await stat(join(dir, name));
      if ((st.mode & 0o7777) === mode) return 'unchanged';
    }
    await placeAtomically(dir, name, mode, async (tmp) => {
      const fh = await open(tmp, 'wx', mode);
      try {
        await fh.writeFile(data);
      } finally {
        await fh.close();
      }
    });
    return 'written';
  });
}

/** Removes dir/name; 'absent' when it was not there. */
export function removeFile(dir: string, name: string): Promise<'removed' | 'absent'> {
  return oneAtATime(dir, checkFileName(name), async () => {
    try {
      await unlink(join(dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw new HostFileError(join(dir, name), 'could not remove', e);
    }
    await syncDir(dir, `${name} is removed, but`);
    return 'removed';
  });
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Same size and same SHA-256: the file is identical. undefined stats mean "missing". */
export async function sameContent(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a), stat(b).catch(() => undefined)]);
  if (sb === undefined || sa.size !== sb.size) return false;
  const [ha, hb] = await Promise.all([sha256(a), sha256(b)]);
  return ha === hb;
}

/**
 * Copies src to dir/name atomically with mode (rename over a running binary is safe: no ETXTBSY).
 * `check`: run on the complete copy before it takes the name; a problem it returns throws
 * BinaryRefusedError, the copy removed and dir/name left as it was.
 */
export async function copyFileAtomic(
  src: string,
  dir: string,
  name: string,
  mode: number,
  check?: (copy: string) => Promise<string | undefined>,
): Promise<void> {
  await oneAtATime(dir, checkFileName(name), () =>
    placeAtomically(dir, name, mode, (tmp) => copyFile(src, tmp), false, check),
  );
}

/**
 * Copies src to dir/name with mode, atomically, only if nothing is at dir/name (a file, a symlink, even a
 * dangling one): 'exists' leaves that entry exactly as it was, also when it appears while copying.
 * `check`: as copyFileAtomic's.
 */
export async function copyFileIfAbsent(
  src: string,
  dir: string,
  name: string,
  mode: number,
  check?: (copy: string) => Promise<string | undefined>,
): Promise<'copied' | 'exists'> {
  return oneAtATime(dir, checkFileName(name), async () => {
    if (await entryExists(join(dir, name))) return 'exists';
    const placed = await placeAtomically(dir, name, mode, (tmp) => copyFile(src, tmp), true, check);
    return placed ? 'copied' : 'exists';
  });
}
