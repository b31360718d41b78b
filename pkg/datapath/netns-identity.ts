import { CniCode, CniError } from '../cni/errors.ts';
import { errorText } from '../error-text.ts';
import type { Lease } from '../ipam/index.ts';
import type { NetnsPort } from './ports.ts';

/**
 * Which network namespace a pod's path names, as "<boot id>/<nsfs dev>:<ino>", and for a path named by
 * process id "/<the process's start>" after it. A path alone does not say: cri-dockerd names a pod's
 * namespace /proc/PID/ns/net, which names another process's namespace once the PID is reused; nsfs
 * inode numbers start over at every boot, and within one the kernel hands a freed one out again (the
 * lowest free), so a PID reused by a process in a later sandbox that got the old inode would pass for
 * the pod without its start time. ADD records the identity in the lease (netnsId); the sweeps and the
 * veth repair then take a lease's pod for alive only while its path still names that namespace.
 */
type IdentityPort = Pick<NetnsPort, 'bootId' | 'namespaceId' | 'processStart'>;

/**
 * The identity of the namespace an fd from openNetnsFd(path) is open on; undefined without a boot id,
 * or for a path named by process id whose process's start cannot be read.
 */
export function netnsIdentityOfFd(netns: IdentityPort, fd: number, path: string): string | undefined {
  if (netns.bootId === undefined) return undefined;
  const id = `${netns.bootId}/${netns.namespaceId(fd)}`;
  if (!namedByPid(path)) return id;
  const start = netns.processStart?.(path);
  return start === undefined ? undefined : `${id}/${start}`;
}

/**
 * The identity of the namespace `path` names now; undefined when it names none (or without a boot id).
 * Throws when the agent cannot tell (out of file descriptors: openNetnsFd's CniError IO_FAILURE).
 */
export function netnsIdentityOf(
  netns: IdentityPort & Pick<NetnsPort, 'openNetnsFd' | 'closeFd'>,
  path: string,
): string | undefined {
  if (netns.bootId === undefined) return undefined;
  let fd: number;
  try {
    fd = netns.openNetnsFd(path);
  } catch (e) {
    // Gone, or not a network namespace. The agent's own trouble (EMFILE) is no answer: thrown.
    if (e instanceof CniError && e.code === CniCode.NETNS_NOT_FOUND) return undefined;
    throw e;
  }
  try {
    return netnsIdentityOfFd(netns, fd, path);
  } finally {
    netns.closeFd(fd);
  }
}

/**
 * Whether a lease's pod namespace is still there: its path names a network namespace and, where the
 * lease records which one ADD used, that one. A lease without a path: false. Throws when the agent
 * cannot tell (out of file descriptors or memory): a caller that would free the pod's address on
 * false must not take that for gone.
 */
export function leaseNetnsLive(
  lease: Pick<Lease, 'netns' | 'netnsId'>,
  netns: IdentityPort & Pick<NetnsPort, 'openNetnsFd' | 'closeFd' | 'isNetns'>,
): boolean {
  if (lease.netns === undefined || lease.netns === '') return false;
  if (lease.netnsId === undefined || netns.bootId === undefined) return netns.isNetns(lease.netns);
  return netnsIdentityOf(netns, lease.netns) === lease.netnsId;
}

/**
 * leaseNetnsLive, or, where the agent cannot tell (out of file descriptors or memory), why: no verdict,
 * which every caller keeps apart from "gone" (a lease freed on it would hand a running pod's address
 * out again).
 */
export function judgeLeaseNetns(
  lease: Pick<Lease, 'netns' | 'netnsId'>,
  netns: IdentityPort & Pick<NetnsPort, 'openNetnsFd' | 'closeFd' | 'isNetns'>,
): { live: boolean } | { unjudged: string } {
  try {
    return { live: leaseNetnsLive(lease, netns) };
  } catch (err) {
    return { unjudged: errorText(err) };
  }
}

/**
 * A path a runtime names by process id (cri-dockerd: /proc/PID/ns/net): without a recorded identity
 * it may name another process's namespace now, so nothing is made in it on the lease's word alone.
 */
export function namedByPid(path: string): boolean {
  return /^\/proc\/[0-9]+\/ns\/net$/.test(path);
}
