import { closeSync, constants, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { constants as os } from 'node:os';
import { join } from 'node:path';
import { errnoName } from '../errno.ts';
import { LockHeldError } from './errors.ts';
import { AF_UNIX, getLibc, LOCK_EX, LOCK_NB, LOCK_UN, SOCK_CLOEXEC, SOCK_STREAM } from './libc.ts';
import { abstractNameOwners } from './unix-socket-owner.ts';

export interface FileLock {
  /** Unlocks and closes; idempotent. The kernel also drops the lock when the process dies. */
  release(): void;
  /** Set when part of the lock could not be taken (lockNetns: its name squatted), saying why. */
  warning?: string;
}

/**
 * The lock file, opened for flock: read-write (created if missing), or read-only where its file
 * system takes no writes (EROFS) and the file is there. flock needs no write access, and an agent
 * on a state directory remounted read-only must still start (ADD and DEL then fail naming EROFS).
 */
function openLockFile(path: string): number {
  try {
    return openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EROFS') throw err;
    try {
      return openSync(path, constants.O_RDONLY);
    } catch {
      throw err; // not there to lock: the read-only file system is the reason
    }
  }
}

/**
 * An exclusive, non-blocking flock(2) on path (created 0600 if missing; libuv opens with O_CLOEXEC): one agent per state
 * directory. Throws LockHeldError when another open file description holds it, even one in this
 * process.
 */
export function lockFile(path: string): FileLock {
  const fd = openLockFile(path);
  const r = getLibc().flock(fd, LOCK_EX | LOCK_NB);
  if (r.value !== 0) {
    closeSync(fd);
    if (r.errno === os.errno.EWOULDBLOCK) throw new LockHeldError(path);
    throw new Error(`flock ${path}: ${errnoName(r.errno)}`);
  }
  let held = true;
  return {
    release(): void {
      if (!held) return;
      held = false;
      getLibc().flock(fd, LOCK_UN);
      closeSync(fd);
    },
  };
}

/** The uid the kernel reports for an owner it cannot map into this user namespace (65534 by default). */
function overflowUid(): number {
  try {
    return Number(readFileSync('/proc/sys/kernel/overflowuid', 'utf8').trim());
  } catch {
    return 65534;
  }
}

/** EADDRINUSE on Linux. */
const EADDRINUSE = 98;

/**
 * A lock on the network namespace the process is in: a unix socket bound to the abstract name `name`
 * (abstract names are per network namespace, and the kernel frees one when its last fd closes, also
 * when the process dies). The state directory's lock does not see a second agent given another
 * --state-dir (or a node whose state directory was lost): that one would take the first one's pod
 * veths for half-done work and delete them. Throws LockHeldError naming `@name`. With it, a lock file
 * named by the namespace in `fallbackDir` (a directory every agent of the node shares), which alone
 * holds the namespace while the name is squatted by another user's process.
 */
export function lockNetns(name: string, opts: { fallbackDir: string }): FileLock {
  const libc = getLibc();
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd.value < 0) throw new Error(`socket(AF_UNIX): ${errnoName(fd.errno)}`);
  // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }, the path's first byte NUL.
  const address = Buffer.alloc(3 + Buffer.byteLength(name));
  address.writeUInt16LE(AF_UNIX, 0);
  address.write(name, 3);
  const r = libc.bind(fd.value, address);
  if (r.value !== 0) {
    closeSync(fd.value);
    if (r.errno !== EADDRINUSE) throw new Error(`bind @${name}: ${errnoName(r.errno)}`);
    // Abstract names have no permissions: any process of the namespace may bind the name first. An
    // agent runs as root (or as this process's user); a name held only by other users' sockets is
    // squatted, and waiting for it would keep the node's pods without a network. Who holds it unknown
    // (an owner the kernel cannot map into our user namespace reads as the overflow uid): held.
    const owners = abstractNameOwners(name);
    const unknown = new Set([0, process.geteuid?.() ?? 0, overflowUid()]);
    if (owners === undefined || owners.length === 0 || owners.some((u) => unknown.has(u))) {
      throw new LockHeldError(`@${name} (this network namespace)`);
    }
    const squatted = `@${name} is held by a process of uid ${owners.join(', ')}, not a trellis agent`;
    // One agent per namespace all the same: the file lock every agent takes (below), alone.
    const file = lockNamespaceFile(opts.fallbackDir);
    return {
      release: () => file.release(),
      warning: `${squatted}: the lock file ${file.path} alone holds it`,
    };
  }
  // The file lock too, so that an agent started while the name was squatted (it holds the file alone)
  // keeps a later one out once the squatter is gone.
  let file: FileLock & { path: string };
  try {
    file = lockNamespaceFile(opts.fallbackDir);
  } catch (err) {
    closeSync(fd.value);
    throw err;
  }
  let held = true;
  return {
    release(): void {
      if (!held) return;
      held = false;
      closeSync(fd.value);
      file.release();
    },
  };
}

/** A file lock named by this network namespace (its nsfs device and inode) in `dir`, a directory of root's. */
function lockNamespaceFile(dir: string): FileLock & { path: string } {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const ns = statSync('/proc/thread-self/ns/net');
  const path = join(dir, `.netns-${ns.dev}-${ns.ino}.lock`);
  return { ...lockFile(path), path };
}

/**
 * `take` (lockFile, lockNetns), retried every `pollMs` while another process holds the lock, for up to
 * `waitMs`; then the LockHeldError. For `uninstall`, which must not pull the node from under an agent
 * that is still shutting down (its pod deleted moments before).
 */
export async function lockWaiting(
  take: () => FileLock,
  waitMs: number,
  opts: { pollMs?: number; onWait?: () => void } = {},
): Promise<FileLock> {
  const deadline = Date.now() + waitMs;
  for (let first = true; ; first = false) {
    try {
      return take();
    } catch (err) {
      if (!(err instanceof LockHeldError) || Date.now() >= deadline) throw err;
      if (first) opts.onWait?.();
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
    }
  }
}
