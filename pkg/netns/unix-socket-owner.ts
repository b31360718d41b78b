/**
 * Who holds an abstract unix socket name in this network namespace: the owners' uids of the sockets
 * bound to it, asked of the kernel's sock_diag (UNIX_DIAG with UDIAG_SHOW_UID, Linux 5.3+). It sees
 * every process of the namespace, whatever PID namespace it is in, which /proc may not.
 */
import { closeSync } from 'node:fs';
import { NLM_F, NLMSG_DONE, NLMSG_ERROR } from '../netlink/constants.ts';
import { decodeAttrs, decodeMessages, encodeMessage } from '../netlink/wire.ts';
import { AF_NETLINK, AF_UNIX, getLibc, SOCK_CLOEXEC, SOCK_RAW, SOCK_STREAM } from './libc.ts';

const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const UDIAG_SHOW_NAME = 0x01;
const UDIAG_SHOW_UID = 0x40;
const UNIX_DIAG_NAME = 0;
const UNIX_DIAG_UID = 7;
/** struct unix_diag_msg: family, type, state, pad (u8 each), ino, cookie[2] (u32 each). */
const UNIX_DIAG_MSG_LEN = 16;

/** The uids owning sockets bound to `\0name`; undefined when the kernel cannot be asked. */
export function abstractNameOwners(name: string): number[] | undefined {
  const libc = getLibc();
  const opened = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (opened.value < 0) return undefined;
  const fd = opened.value;
  try {
    // struct unix_diag_req: family, protocol (u8), pad (u16), states, ino, show, cookie[2] (u32).
    const req = Buffer.alloc(24);
    req.writeUInt8(AF_UNIX, 0);
    req.writeUInt32LE(0xffffffff, 4); // every state
    req.writeUInt32LE(UDIAG_SHOW_NAME | UDIAG_SHOW_UID, 12);
    const seq = 1;
    if (libc.send(fd, encodeMessage(SOCK_DIAG_BY_FAMILY, NLM_F.REQUEST | NLM_F.DUMP, seq, [req])).value < 0)
      return undefined;
    const wanted = Buffer.concat([Buffer.from([0]), Buffer.from(name)]);
    const owners: number[] = [];
    const buf = Buffer.alloc(64 * 1024);
    // A dump of this namespace's unix sockets ends with NLMSG_DONE; bounded all the same.
    for (let parts = 0; parts < 100_000; parts++) {
      const got = libc.recv(fd, buf, 0);
      if (got.value <= 0) return undefined;
      for (const m of decodeMessages(buf.subarray(0, got.value))) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_DONE) return owners;
        if (m.type === NLMSG_ERROR) return undefined;
        if (m.type !== SOCK_DIAG_BY_FAMILY || m.payload.length < UNIX_DIAG_MSG_LEN) continue;
        // Names are per socket type: only stream sockets' collide with the lock's.
        if (m.payload[1] !== SOCK_STREAM) continue;
        const attrs = decodeAttrs(m.payload, UNIX_DIAG_MSG_LEN);
        const bound = attrs.get(UNIX_DIAG_NAME);
        const uid = attrs.get(UNIX_DIAG_UID);
        if (bound === undefined || !bound.equals(wanted)) continue;
        if (uid === undefined || uid.length < 4) return undefined; // a kernel without UDIAG_SHOW_UID
        owners.push(uid.readUInt32LE(0));
      }
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}
