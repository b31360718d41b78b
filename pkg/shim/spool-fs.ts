/**
 * The DEL spool on disk. The shim writes (writeSpooledDel); the agent replays on start
 * (listSpooled, then removeSpooled after each DEL succeeded).
 *
 * A spooled DEL must survive a node crash right after the shim reported success, so a write is:
 * temp file in the same directory (0600) -> fsync -> rename -> fsync the directory.
 *
 * node:fs is loaded on first use, not imported: the Bun bundler hoists a static import into the
 * shim's start-up (~3 ms on every call) although only a DEL with the agent down needs it. And loaded
 * with process.getBuiltinModule, not a dynamic import(): for an import() `bun build --compile` embeds
 * another 1.5 MB in the executable (which its start-up never touches: the same time per call).
 */
import { CniCode, CniError } from '../cni/errors.ts';
import type { AgentRequest } from './protocol.ts';
import {
  decodeSpoolEntry,
  isSpoolFileName,
  SPOOL_BAD_SUFFIX,
  SPOOL_TMP_SUFFIX,
  spoolFileName,
} from './spool.ts';

export interface SpooledDel {
  /** Absolute path of the spool file; pass it to removeSpooled once the DEL succeeded. */
  file: string;
  request: AgentRequest;
}

export interface BadSpoolFile {
  /** Where the file was. */
  file: string;
  /** Where it was moved (`<file>.bad`), or undefined when even moving it failed. */
  movedTo: string | undefined;
  reason: string;
}

export interface SpoolListing {
  entries: SpooledDel[];
  bad: BadSpoolFile[];
  /**
   * Files that could not be read this time (no fd, an I/O error): left in place for the next drain.
   * The runtime was told the DEL succeeded and never sends it again, so only bad content sets one aside.
   */
  unreadable: { file: string; reason: string }[];
}

/** Read errors that no later read will get past: the entry is no spool file the shim wrote. */
const UNREADABLE_FOR_GOOD = new Set(['EISDIR', 'ELOOP', 'EINVAL', 'ENXIO', 'ERR_FS_FILE_TOO_LARGE']);

/** A temp file older than this is a leftover of a shim that died mid-write, not a write in flight. */
const STALE_TMP_MS = 10 * 60 * 1000;

type Fs = typeof import('node:fs');
let fsModule: Fs | undefined;
function loadFs(): Fs {
  fsModule ??= process.getBuiltinModule('node:fs');
  return fsModule;
}

function join(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;
}

function fsyncDir(fs: Fs, dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates the spool directory (0700) when missing. */
function ensureDir(fs: Fs, dir: string): void {
  try {
    fs.statSync(dir);
    return;
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Records a DEL request line durably. Returns the spool file path. A second DEL for the same pair
 * replaces the first (the newer config wins; both would do the same). Throws CniError IO_FAILURE.
 */
export function writeSpooledDel(
  dir: string,
  containerId: string,
  ifname: string,
  requestLine: string,
): string {
  const fs = loadFs();
  const name = spoolFileName(containerId, ifname);
  const file = join(dir, name);
  const tmp = join(
    dir,
    `${name}.${process.pid}.${Math.random().toString(36).slice(2, 10)}${SPOOL_TMP_SUFFIX}`,
  );
  try {
    ensureDir(fs, dir);
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      fs.fchmodSync(fd, 0o600); // exact mode whatever the umask
      const bytes = new TextEncoder().encode(requestLine.endsWith('\n') ? requestLine : `${requestLine}\n`);
      let at = 0;
      while (at < bytes.length) at += fs.writeSync(fd, bytes, at, bytes.length - at);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    fsyncDir(fs, dir);
    return file;
  } catch (err) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // Nothing was created, or it was renamed already.
    }
    throw new CniError(
      CniCode.IO_FAILURE,
      `could not spool the DEL to ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      undefined,
      { cause: err },
    );
  }
}

/**
 * The spooled DELs, sorted by file name. Corrupt files are moved aside (`.bad`) and reported in
 * `bad`, never thrown; files that cannot be read now are left for the next drain (`unreadable`); leftover temp files older than ten minutes are deleted. A missing
 * directory is an empty spool. Throws only when the directory itself cannot be read.
 */
export async function listSpooled(dir: string, now: number = Date.now()): Promise<SpoolListing> {
  const fs = loadFs();
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if (errno(err) === 'ENOENT') return { entries: [], bad: [], unreadable: [] };
    throw err;
  }
  names.sort();
  const entries: SpooledDel[] = [];
  const bad: BadSpoolFile[] = [];
  const unreadable: SpoolListing['unreadable'] = [];
  for (const name of names) {
    const file = join(dir, name);
    if (name.endsWith(SPOOL_TMP_SUFFIX)) {
      removeStaleTmp(fs, file, now);
      continue;
    }
    if (!isSpoolFileName(name)) continue;
    let content: string;
    try {
      content = fs.readFileSync(file, 'utf8');
    } catch (err) {
      const code = errno(err);
      if (code === 'ENOENT') continue; // removed while we listed
      const reason = err instanceof Error ? err.message : String(err);
      if (code !== undefined && UNREADABLE_FOR_GOOD.has(code)) bad.push(moveAside(fs, file, reason));
      else unreadable.push({ file, reason });
      continue;
    }
    try {
      entries.push({ file, request: decodeSpoolEntry(name, content) });
    } catch (err) {
      bad.push(moveAside(fs, file, err instanceof Error ? err.message : String(err)));
    }
  }
  return { entries, bad, unreadable };
}

function removeStaleTmp(fs: Fs, file: string, now: number): void {
  try {
    if (now - fs.statSync(file).mtimeMs > STALE_TMP_MS) fs.unlinkSync(file);
  } catch {
    // Renamed or removed meanwhile: nothing to clean.
  }
}

/** Moves a spooled DEL the agent refuses for good aside (`.bad`), never throwing. */
export function setSpooledAside(file: string, reason: string): BadSpoolFile {
  return moveAside(loadFs(), file, reason);
}

function moveAside(fs: Fs, file: string, reason: string): BadSpoolFile {
  const movedTo = `${file}${SPOOL_BAD_SUFFIX}`;
  try {
    fs.renameSync(file, movedTo);
    return { file, movedTo, reason };
  } catch (err) {
    return { file, movedTo: undefined, reason: `${reason}; moving it aside failed: ${String(err)}` };
  }
}

/**
 * Deletes a replayed spool file, durably. Already gone is fine (idempotent). The directory is synced
 * because a removal a crash undoes would replay the DEL at the next start, and by then a runtime that
 * reuses container IDs may have ADDed the same attachment again (its lease is durable): the replay
 * would delete that pod's network. On the leases' filesystem their own syncs would often carry the
 * unlink along; on another one nothing would.
 */
export async function removeSpooled(file: string): Promise<void> {
  const fs = loadFs();
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
    return;
  }
  fsyncDir(fs, file.slice(0, Math.max(1, file.lastIndexOf('/'))));
}
