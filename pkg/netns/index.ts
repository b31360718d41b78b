/**
 * The netns adapter: the only importer of `ffi-rs`. setns-based withNetns, nsfs checks, flock,
 * /proc/sys access, and the NetnsPort built on them (and the memory calls that are not about
 * namespaces: malloc_trim, and madvise on the process's clean file pages).
 */
export { LockHeldError, NetnsNotFoundError, SysctlError } from './errors.ts';
export { fileBackedRssKb, type UnmappedPages, unmapCleanFilePages } from './file-pages.ts';
export { agentNetnsPath, hostProcProblem } from './host-proc.ts';
export { trimMalloc } from './libc.ts';
export { type FileLock, lockFile, lockNetns, lockWaiting } from './lock.ts';
export {
  createNetlinkEvents,
  openHostNetlink,
  prepareEventSocket,
  prepareRequestSocket,
} from './netlink-sockets.ts';
export { closeFd, isNetns, openNetnsFd, withNetns, withNetnsFd } from './netns.ts';
export { type OffThreadNetlink, openOffThreadNetlink } from './off-thread-netlink.ts';
export { createNetnsPort, type ExtendedNetnsPort } from './port.ts';
export { readSysctlSync, sysctlPath, writeSysctlSync } from './sysctl.ts';
