import { fstatSync, readFileSync } from 'node:fs';
import type { NetnsPort, PodNetlink } from '../datapath/ports.ts';
import {
  type ExtendedNetlinkHandle,
  getLinkVia,
  listRoutesVia,
  openNetlink,
  setUpVia,
} from '../netlink/index.ts';
import { agentNetnsPath } from './host-proc.ts';
import { connectToKernel } from './kernel-peer.ts';
import { closeFd, isNetns, openNetnsFd, throwIfAgentSide, withNetns, withNetnsFd } from './netns.ts';
import { openOffThreadNetlink } from './off-thread-netlink.ts';
import { readSysctlSync, writeSysctlSync } from './sysctl.ts';

/** NetnsPort with openNetlinkIn's richer return type (VXLAN, settled route bursts). */
export interface ExtendedNetnsPort extends NetnsPort {
  openNetlinkIn(path: string): ExtendedNetlinkHandle;
}

/**
 * A pod's ADD handle on a plain socket opened in its namespace: requests sent on the JS thread and
 * answered in the same turn, no event-loop round trip per datagram; opening and closing it are one
 * system call each (the package's socket: six, and a close that cost ~70 us).
 */
function openPodNetlink(fd: number, path: string): PodNetlink {
  const sock = withNetnsFd(fd, path, () => openOffThreadNetlink());
  return {
    getLink: (name) => getLinkVia(sock.exchangeInline, name),
    listRoutes: (filter) => listRoutesVia(sock.exchangeInline, filter),
    setUp: (steps) => setUpVia(sock.exchangeInline, steps),
    close: () => sock.close(),
  };
}

/**
 * The real NetnsPort: setns via ffi-rs, rtnetlink sockets opened inside the target namespace.
 * `hostProc`: where the host's /proc is mounted, for runtimes that name /proc/PID/ns/net
 * (host-proc.ts); '' opens every path as given.
 */
export function createNetnsPort(opts: { hostProc?: string } = {}): ExtendedNetnsPort {
  const hostProc = opts.hostProc ?? '';
  const at = (path: string): string => agentNetnsPath(path, hostProc);
  const bootId = readBootId();
  return {
    ...(bootId === undefined ? {} : { bootId }),
    isNetns: (path) => isNetns(at(path)),
    // Pod handles (CHECK, a repeated ADD, the lease rebuild) make a dozen requests, far below what
    // the default receive buffer holds; their socket is connected to the kernel all the same
    // (kernel-peer.ts: a NET_ADMIN container in the pod could flood it), which costs the /proc
    // lookup of its fd (a few hundred microseconds; an ADD's own socket is openPodNetlink's).
    openNetlinkIn: (path) =>
      withNetns(at(path), () =>
        openNetlink({
          prepareFd: (fd) => {
            connectToKernel(fd);
            return undefined;
          },
        }),
      ),
    openPodNetlink,
    openNetnsFd: (path) => openNetnsFd(at(path)),
    closeFd,
    processStart: (path) => processStartOf(at(path)),
    namespaceId: (fd) => {
      const st = fstatSync(fd);
      return `${st.dev}:${st.ino}`;
    },
    writeSysctlIn: (path, key, value) => withNetns(at(path), () => writeSysctlSync(key, value)),
    writeSysctlsInFd: (fd, path, entries) =>
      withNetnsFd(fd, path, () => {
        for (const [key, value] of entries) writeSysctlSync(key, value);
      }),
    writeSysctl: writeSysctlSync,
    readSysctl: readSysctlSync,
  };
}

/** The kernel's id of this boot; undefined when it cannot be read. */
function readBootId(): string | undefined {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return id === '' ? undefined : id;
  } catch {
    return undefined;
  }
}

/**
 * The start time of the process whose namespace `path` (…/PID/ns/net) names: field 22 of its stat,
 * counted after the command's closing parenthesis (a command may hold spaces and parentheses).
 */
export function processStartOf(path: string): string | undefined {
  const m = /^(.*)\/ns\/net$/.exec(path);
  if (m === null) return undefined;
  let stat: string;
  try {
    stat = readFileSync(`${m[1]}/stat`, 'utf8');
  } catch (e) {
    throwIfAgentSide(path, e); // out of descriptors: no answer, not a process gone
    return undefined;
  }
  // After "pid (comm) ": state is field 3, starttime field 22.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields[22 - 3];
  return start !== undefined && /^[0-9]+$/.test(start) ? start : undefined;
}
