import { DataType, define, open } from 'ffi-rs';

/**
 * The few libc calls Node does not expose, through ffi-rs, on the calling (JS) thread (sendOffThread
 * excepted). Loaded on first use so importing the module costs nothing where it is not needed.
 */

export const CLONE_NEWNET = 0x40000000;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
/** ioctl NS_GET_NSTYPE = _IO(0xb7, 0x3): the CLONE_NEW* type of a namespace fd (ENOTTY for other files). */
export const NS_GET_NSTYPE = 0xb703;
export const SOL_SOCKET = 1;
export const SO_RCVBUFFORCE = 33;
export const SO_ATTACH_FILTER = 26;
export const SOL_NETLINK = 270;
export const NETLINK_NO_ENOBUFS = 5;
export const NETLINK_CAP_ACK = 10;
export const SO_MEMINFO = 55;
export const AF_NETLINK = 16;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0x80000;
export const NETLINK_ROUTE = 0;
export const MSG_DONTWAIT = 0x40;
/** Index of sk_drops in the SO_MEMINFO array (linux/sock_diag.h SK_MEMINFO_DROPS). */
export const SK_MEMINFO_DROPS = 8;

export interface CallResult {
  value: number;
  errno: number;
}

interface Libc {
  setns(fd: number, nstype: number): CallResult;
  flock(fd: number, op: number): CallResult;
  ioctl(fd: number, request: number): CallResult;
  /** setsockopt with an int option value. */
  setsockoptInt(fd: number, level: number, name: number, value: number): CallResult;
  /**
   * SO_ATTACH_FILTER with a classic BPF program (struct sock_filter[] bytes): struct sock_fprog
   * holds a pointer, so the program is copied to memory of libc's for the call (the kernel copies
   * it in turn) and freed after.
   */
  attachFilter(fd: number, program: Buffer): CallResult;
  /** getsockopt into out (its length is the option length). */
  getsockopt(fd: number, level: number, name: number, out: Buffer): CallResult;
  socket(domain: number, type: number, protocol: number): CallResult;
  /** socketpair(2): the two fds, or the errno (the tests run socket filters in the kernel with it). */
  socketpair(domain: number, type: number, protocol: number): [number, number] | { errno: number };
  /** bind(2) to a socket address given as its bytes (struct sockaddr_*, addrlen = its length). */
  bind(fd: number, address: Buffer): CallResult;
  /** connect(2) to a socket address given as its bytes, as bind. */
  connect(fd: number, address: Buffer): CallResult;
  /**
   * send(2) on a thread of ffi-rs's, not the JS thread: the promise settles when the kernel returned.
   * For netlink requests the kernel does the whole operation inside send, however long it takes.
   */
  sendOffThread(fd: number, data: Buffer): Promise<CallResult>;
  /** send(2) on the JS thread: the kernel's work for a netlink request blocks it meanwhile. */
  send(fd: number, data: Buffer): CallResult;
  /** recv(2) into out on the JS thread (pass MSG_DONTWAIT unless blocking is intended). */
  recv(fd: number, out: Buffer, flags: number): CallResult;
  /** malloc_trim(0): free memory of every malloc arena back to the kernel; 1 if any was released. */
  mallocTrim(): number;
  /** madvise(2) on [start, start + length). */
  madvise(start: number, length: number, advice: number): CallResult;
}

let libc: Libc | undefined;

function load(): Libc {
  const library = 'trellis-libc';
  open({ library, path: 'libc.so.6' });
  const fns = define({
    setns: { library, retType: DataType.I32, paramsType: [DataType.I32, DataType.I32], errno: true },
    flock: { library, retType: DataType.I32, paramsType: [DataType.I32, DataType.I32], errno: true },
    ioctl: { library, retType: DataType.I32, paramsType: [DataType.I32, DataType.I64], errno: true },
    setsockopt: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array, DataType.I32],
      errno: true,
    },
    getsockopt: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array, DataType.U8Array],
      errno: true,
    },
    malloc: { library, retType: DataType.I64, paramsType: [DataType.I64] },
    memcpy: { library, retType: DataType.I64, paramsType: [DataType.I64, DataType.U8Array, DataType.I64] },
    free: { library, retType: DataType.Void, paramsType: [DataType.I64] },
    malloc_trim: { library, retType: DataType.I32, paramsType: [DataType.I64] },
    madvise: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I64, DataType.I64, DataType.I32],
      errno: true,
    },
    socket: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.I32, DataType.I32],
      errno: true,
    },
    socketpair: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array],
      errno: true,
    },
    bind: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.U8Array, DataType.I32],
      errno: true,
    },
    connect: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.I32, DataType.U8Array, DataType.I32],
      errno: true,
    },
    send: {
      library,
      retType: DataType.I64,
      paramsType: [DataType.I32, DataType.U8Array, DataType.I64, DataType.I32],
      errno: true,
      runInNewThread: true,
    },
    // write(2), not a second binding of send: ffi-rs names a binding by its symbol, and on a netlink
    // socket write is send with no flags.
    write: {
      library,
      retType: DataType.I64,
      paramsType: [DataType.I32, DataType.U8Array, DataType.I64],
      errno: true,
    },
    recv: {
      library,
      retType: DataType.I64,
      paramsType: [DataType.I32, DataType.U8Array, DataType.I64, DataType.I32],
      errno: true,
    },
  });
  const wrap =
    (f: (args: unknown[]) => { value: number; errnoCode: number }) =>
    (a: number, b: number): CallResult => {
      const r = f([a, b]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    };
  return {
    setns: wrap(fns.setns),
    flock: wrap(fns.flock),
    ioctl: wrap(fns.ioctl),
    setsockoptInt: (fd, level, name, value) => {
      const v = Buffer.alloc(4);
      v.writeInt32LE(value);
      const r = fns.setsockopt([fd, level, name, v, 4]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
    attachFilter: (fd, program) => {
      const at = fns.malloc([program.length]);
      if (at === 0) return { value: -1, errno: 12 }; // ENOMEM
      try {
        fns.memcpy([at, program, program.length]);
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; } on a 64-bit little-endian
        // machine (x86_64, arm64): the pointer at offset 8.
        const fprog = Buffer.alloc(16);
        fprog.writeUInt16LE(program.length / 8, 0);
        fprog.writeBigUInt64LE(BigInt(at), 8);
        const r = fns.setsockopt([fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, fprog.length]);
        return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
      } finally {
        fns.free([at]);
      }
    },
    getsockopt: (fd, level, name, out) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(out.length);
      // ffi-rs passes a Buffer's own memory, so the kernel's writes land in `out`.
      const r = fns.getsockopt([fd, level, name, out, len]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
    socket: (domain, type, protocol) => {
      const r = fns.socket([domain, type, protocol]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
    socketpair: (domain, type, protocol) => {
      const fds = Buffer.alloc(8); // int sv[2], written by libc into the Buffer's own memory
      const r = fns.socketpair([domain, type, protocol, fds]);
      return r.value === 0 ? [fds.readInt32LE(0), fds.readInt32LE(4)] : { errno: r.errnoCode };
    },
    bind: (fd, address) => {
      const r = fns.bind([fd, address, address.length]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
    connect: (fd, address) => {
      const r = fns.connect([fd, address, address.length]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
    sendOffThread: async (fd, data) => {
      const r = await fns.send([fd, data, data.length, 0]);
      return { value: Number(r.value), errno: Number(r.value) === -1 ? r.errnoCode : 0 };
    },
    send: (fd, data) => {
      const r = fns.write([fd, data, data.length]);
      return { value: Number(r.value), errno: Number(r.value) === -1 ? r.errnoCode : 0 };
    },
    recv: (fd, out, flags) => {
      // Like getsockopt: the Buffer's own memory is passed, so the kernel's bytes land in `out`.
      const r = fns.recv([fd, out, out.length, flags]);
      return { value: Number(r.value), errno: Number(r.value) === -1 ? r.errnoCode : 0 };
    },
    mallocTrim: () => fns.malloc_trim([0]),
    madvise: (start, length, advice) => {
      const r = fns.madvise([start, length, advice]);
      return { value: r.value, errno: r.value === -1 ? r.errnoCode : 0 };
    },
  };
}

export function getLibc(): Libc {
  libc ??= load();
  return libc;
}

/** malloc_trim(0) (glibc): the free pages of malloc's arenas back to the kernel. */
export function trimMalloc(): void {
  getLibc().mallocTrim();
}
