import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * What /proc tells about our own netlink sockets. The `netlink` package does not expose a socket's
 * fd, but it does expose its port id, and /proc/thread-self/net/netlink maps (protocol, port id)
 * to the socket inode, which /proc/self/fd maps back to the fd. Port ids are unique per network
 * namespace and /proc/thread-self/net shows the calling thread's namespace, so the lookup must run
 * in the namespace the socket was opened in (inside withNetns, right after opening it).
 */

const NETLINK_ROUTE = 0;

interface NetlinkRow {
  protocol: number;
  portId: number;
  inode: number;
}

function rows(): NetlinkRow[] {
  let text: string;
  try {
    text = readFileSync('/proc/thread-self/net/netlink', 'utf8');
  } catch {
    return [];
  }
  const out: NetlinkRow[] = [];
  for (const line of text.split('\n').slice(1)) {
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    const c = line.trim().split(/\s+/);
    if (c.length < 10) continue;
    out.push({ protocol: Number(c[1]), portId: Number(c[2]), inode: Number(c[9]) });
  }
  return out;
}

/** The inode of our netlink socket of `protocol` bound to portId in the calling thread's namespace. */
export function netlinkInode(portId: number, protocol = NETLINK_ROUTE): number | undefined {
  return rows().find((r) => r.protocol === protocol && r.portId === portId)?.inode;
}

/** The fd of this process that refers to the socket inode. */
export function fdOfSocket(inode: number): number | undefined {
  const want = `socket:[${inode}]`;
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === want) return Number(name);
    } catch {
      // The fd closed while we looked (readdir's own fd, say).
    }
  }
  return undefined;
}
