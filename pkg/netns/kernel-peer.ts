import { errorFromErrno } from '../netlink/index.ts';
import { AF_NETLINK, getLibc } from './libc.ts';

/** struct sockaddr_nl of the kernel: family AF_NETLINK, port id 0, no groups. */
const KERNEL = (() => {
  const a = Buffer.alloc(12);
  a.writeUInt16LE(AF_NETLINK, 0);
  return a;
})();

/**
 * Connects a netlink socket to the kernel (port id 0): the kernel then refuses datagrams other
 * processes send to it (ECONNREFUSED at their end). Unconnected, any process with CAP_NET_ADMIN in
 * the socket's namespace (a pod's NET_ADMIN container, in the pod namespaces the agent opens
 * sockets in) could fill its receive queue, so that the kernel's own replies overran it (ENOBUFS,
 * which the netlink package's native poll turns into an abort of the agent), or send it forged
 * replies. Multicast from the kernel still arrives: connect restricts unicast senders only.
 */
export function connectToKernel(fd: number): void {
  const r = getLibc().connect(fd, KERNEL);
  if (r.value !== 0) throw errorFromErrno(r.errno, 'connect(netlink socket, kernel)');
}
