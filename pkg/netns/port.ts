import type { NetnsPort } from '../datapath/ports.ts';
import { type ExtendedNetlinkHandle, openNetlink } from '../netlink/index.ts';
import { closeFd, isNetns, openNetnsFd, withNetns, withNetnsFd } from './netns.ts';
import { readSysctlSync, writeSysctlSync } from './sysctl.ts';

/** NetnsPort with openNetlinkIn's richer return type (VXLAN, settled route bursts). */
export interface ExtendedNetnsPort extends NetnsPort {
  openNetlinkIn(path: string): ExtendedNetlinkHandle;
  openNetlinkInFd(fd: number, path: string): ExtendedNetlinkHandle;
}

/** The real NetnsPort: setns via ffi-rs, rtnetlink sockets opened inside the target namespace. */
export function createNetnsPort(): ExtendedNetnsPort {
  return {
    isNetns,
    // Pod handles make a dozen requests, far below what the default receive buffer holds, so
    // they skip prepareFd's /proc lookup (a few hundred microseconds on the CNI ADD path).
    openNetlinkIn: (path) => withNetns(path, () => openNetlink()),
    openNetlinkInFd: (fd, path) => withNetnsFd(fd, path, () => openNetlink()),
    openNetnsFd,
    closeFd,
    writeSysctlIn: (path, key, value) => withNetns(path, () => writeSysctlSync(key, value)),
    writeSysctlInFd: (fd, path, key, value) => withNetnsFd(fd, path, () => writeSysctlSync(key, value)),
    writeSysctl: writeSysctlSync,
    readSysctl: readSysctlSync,
  };
}
