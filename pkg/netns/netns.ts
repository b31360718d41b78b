import { closeSync, constants, openSync, statfsSync, writeSync } from 'node:fs';
import { CniCode, CniError } from '../cni/errors.ts';
import { errnoName } from '../errno.ts';
import { NetnsNotFoundError } from './errors.ts';
import { CLONE_NEWNET, getLibc, NS_GET_NSTYPE } from './libc.ts';

/**
 * Entering network namespaces on the JS thread.
 *
 * setns(2) moves only the calling thread; everything Node runs elsewhere (libuv's pool: async fs,
 * dns, crypto) stays where it was. So withNetns accepts synchronous work only: open a netlink
 * socket (it stays bound to the namespace it was created in), write a /proc/sys file with
 * writeFileSync. Async work then uses the socket opened inside.
 */

// libuv adds O_CLOEXEC itself; O_NONBLOCK keeps a FIFO at `path` from blocking the open.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/** The namespace the thread started in, opened once, before the first switch. */
let homeFd: number | undefined;
/** The namespace the JS thread is in right now (homeFd or the target of the innermost withNetns). */
let currentFd: number | undefined;

function home(): number {
  if (homeFd === undefined) {
    homeFd = openSync('/proc/thread-self/ns/net', OPEN_FLAGS);
    currentFd = homeFd;
  }
  return homeFd;
}

/**
 * True when fd refers to a network namespace. The kernel answers NS_GET_NSTYPE only for nsfs files,
 * which covers both /proc/PID/ns/net and bind mounts like /var/run/netns/NAME (whose fd links show
 * the mount path, not "net:[inode]").
 */
function fdIsNetns(fd: number): boolean {
  return getLibc().ioctl(fd, NS_GET_NSTYPE).value === CLONE_NEWNET;
}

/** Errors reaching a namespace file that come from the agent's side, not from what the path names. */
const AGENT_SIDE_OPEN_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOMEM']);

/**
 * The agent's own trouble (out of file descriptors or memory) is not the namespace's absence: said as an
 * IO failure, so neither the runtime nor the operator looks for a missing namespace, and no sweep takes
 * a running pod's namespace for gone (its lease released, its address handed out again).
 */
export function throwIfAgentSide(path: string, e: unknown): void {
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== undefined && AGENT_SIDE_OPEN_ERRORS.has(code)) {
    throw new CniError(CniCode.IO_FAILURE, `cannot open network namespace ${path}: ${code}`, undefined, {
      cause: e,
    });
  }
}

/** statfs(2)'s f_type of the namespace file system (linux/magic.h). */
const NSFS_MAGIC = 0x6e736673;

/**
 * Why `path` cannot be a namespace file, asked of the file system before anything opens it: opening
 * is not harmless for every path a runtime could name (a watchdog device arms at open, and its close
 * without the magic character reboots the node). undefined when it is on nsfs.
 */
function notNsfs(path: string): { why: string; cause?: unknown } | undefined {
  try {
    return statfsSync(path).type === NSFS_MAGIC ? undefined : { why: 'not a network namespace' };
  } catch (e) {
    throwIfAgentSide(path, e);
    return { why: (e as NodeJS.ErrnoException).code ?? 'cannot stat', cause: e };
  }
}

/**
 * Opens path as a namespace fd for setns or IFLA_NET_NS_FD; NetnsNotFoundError when it is none, a
 * CniError IO_FAILURE when the agent cannot open it for want of file descriptors or memory.
 */
export function openNetnsFd(path: string): number {
  const refused = notNsfs(path);
  if (refused !== undefined) {
    throw new NetnsNotFoundError(
      path,
      refused.why,
      refused.cause === undefined ? {} : { cause: refused.cause },
    );
  }
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (e) {
    throwIfAgentSide(path, e);
    throw new NetnsNotFoundError(path, (e as NodeJS.ErrnoException).code ?? 'cannot open', { cause: e });
  }
  let isNet: boolean;
  try {
    isNet = fdIsNetns(fd);
  } catch (e) {
    closeSync(fd); // libc could not be loaded: the fd would keep the pod's namespace alive
    throw e;
  }
  if (!isNet) {
    closeSync(fd);
    throw new NetnsNotFoundError(path, 'not a network namespace');
  }
  return fd;
}

export function closeFd(fd: number): void {
  closeSync(fd);
}

/**
 * True when path exists and is a network namespace (a bind-mounted nsfs file or /proc/PID/ns/net). A
 * CniError IO_FAILURE when the agent cannot tell for want of file descriptors or memory.
 */
export function isNetns(path: string): boolean {
  if (notNsfs(path) !== undefined) return false;
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (e) {
    throwIfAgentSide(path, e);
    return false;
  }
  try {
    return fdIsNetns(fd);
  } finally {
    closeSync(fd);
  }
}

function enter(fd: number, path: string): void {
  const r = getLibc().setns(fd, CLONE_NEWNET);
  if (r.value === 0) return;
  // The fd was checked to be a network namespace, and holds it: only EINVAL says it is none. ENOMEM,
  // EPERM (no CAP_SYS_ADMIN) and the rest are the agent's trouble, not a pod without a namespace.
  const errno = errnoName(r.errno);
  if (errno === 'EINVAL') throw new NetnsNotFoundError(path, `setns: ${errno}`);
  throw new CniError(CniCode.IO_FAILURE, `cannot enter network namespace ${path}: setns: ${errno}`);
}

/** Continuing in the wrong namespace would program the pod's view into the host, or the reverse. */
function switchBackOrAbort(fd: number): void {
  const r = getLibc().setns(fd, CLONE_NEWNET);
  if (r.value === 0) return;
  writeSync(
    2,
    `trellis: FATAL: cannot switch back to the original network namespace (setns: ${errnoName(r.errno)}); aborting\n`,
  );
  process.abort();
}

/**
 * Runs fn with the JS thread inside the network namespace at path and switches back in `finally`
 * (to the enclosing withNetns's namespace when nested). fn must be synchronous: a returned
 * promise is rejected with a TypeError (its continuation would run in the wrong namespace).
 */
export function withNetns<T>(path: string, fn: () => T): T {
  const target = openNetnsFd(path);
  try {
    return withNetnsFd(target, path, fn);
  } finally {
    closeSync(target);
  }
}

/**
 * withNetns for a namespace fd the caller opened with openNetnsFd (and still owns): a CNI ADD opens
 * the pod's namespace once and uses the one fd for IFLA_NET_NS_FD, its sockets and its sysctls,
 * instead of an open and an NS_GET_NSTYPE check (an ffi call) per use. `path` names it in errors.
 */
export function withNetnsFd<T>(fd: number, path: string, fn: () => T): T {
  home();
  const previous = currentFd!;
  enter(fd, path);
  currentFd = fd;
  let result: T;
  try {
    result = fn();
  } finally {
    switchBackOrAbort(previous);
    currentFd = previous;
  }
  if (typeof (result as { then?: unknown } | null)?.then === 'function') {
    (result as Promise<unknown>).then(undefined, () => undefined);
    throw new TypeError('withNetns accepts only synchronous work; the callback returned a promise');
  }
  return result;
}
