/**
 * The shim's IO as plain libc calls through Bun's FFI (bun-ffi.ts): stdin, stdout and the agent's
 * unix socket, all blocking on the one JS thread. Bun's own async stdin and socket client start its
 * event loop and wake threads, ~1.2 ms of the shim's ~7 ms per call here (bench/HISTORY.md); these
 * calls need none of that. Bun's FFI is marked experimental; the shim uses only its plainest part
 * (ints and pointers to typed arrays, into glibc, which the Bun executable links anyway), and
 * test/integration/shim runs every path of it through the compiled binary.
 *
 * Linux x86-64 and arm64 (little-endian, LP64): the struct layouts below assume both.
 */
import { errnoName } from '../../pkg/errno.ts';
import { type BlockingSocket, type Readiness, SyscallError } from '../../pkg/shim/blocking-transport.ts';
import { bunFfi, type Pointer } from './bun-ffi.ts';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDTIMEO = 21;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;
/** sizeof(sockaddr_un.sun_path), NUL included. */
const SUN_PATH_MAX = 108;

const CLOCK_MONOTONIC = 1;

const EINTR = 4;
const EAGAIN = 11;
const EISCONN = 106;

export class StdinTooLarge extends Error {
  constructor(maxBytes: number) {
    super(`more than ${maxBytes} bytes`);
    this.name = 'StdinTooLarge';
  }
}

export interface Libc extends BlockingSocket {
  /**
   * Reads `fd` to its end (waiting when it is non-blocking); throws StdinTooLarge past `maxBytes`
   * without reading further.
   */
  readAll(fd: number, maxBytes: number): Uint8Array;
  /** Writes all of `text` to `fd`. */
  writeAll(fd: number, text: string): void;
  /** Blocks the thread for `ms` (a signal may end it early). */
  sleep(ms: number): void;
}

/**
 * Writes a struct timespec or timeval (two 64-bit fields) as little-endian int pairs; both values
 * are below 2^31, so each high half is 0.
 */
function setTimespec(t: Int32Array, seconds: number, fraction: number): Int32Array {
  t[0] = seconds;
  t[1] = 0;
  t[2] = fraction;
  t[3] = 0;
  return t;
}

/** The system call numbers the shim uses; arm64 has no poll(2), so both take ppoll. */
const SYSCALLS = {
  x64: {
    read: 0,
    write: 1,
    close: 3,
    socket: 41,
    connect: 42,
    sendto: 44,
    recvfrom: 45,
    setsockopt: 54,
    ppoll: 271,
    clock_gettime: 228,
  },
  arm64: {
    read: 63,
    write: 64,
    close: 57,
    socket: 198,
    connect: 203,
    sendto: 206,
    recvfrom: 207,
    setsockopt: 208,
    ppoll: 73,
    clock_gettime: 113,
  },
} as const;

/**
 * Binds libc; throws when Bun's FFI cannot (the caller reports it as a CNI error). Two symbols,
 * `syscall` and `__errno_location`, instead of one per call: Bun compiles a trampoline for every
 * symbol it binds, and ten of them cost each CNI call ~0.7 ms more than two on the test VM
 * (bench/HISTORY.md). glibc's `syscall` returns -1 and sets errno as the wrappers do; its variadic
 * arguments travel where fixed ones do (registers, then the stack on x86-64) on both architectures.
 */
export function openLibc(): Libc {
  const { dlopen, ptr, read } = bunFfi();
  const nr = process.arch === 'arm64' ? SYSCALLS.arm64 : process.arch === 'x64' ? SYSCALLS.x64 : undefined;
  if (nr === undefined) throw new Error(`no system call table for ${process.arch}`);
  const c = dlopen('libc.so.6', {
    // The number and all six arguments: a system call reads every register it takes, and an argument
    // left out is whatever the register held (sendto's addrlen: Linux ignores it beside a NULL
    // address, qemu-user refused a negative one with EINVAL).
    syscall: { args: ['i64', 'i64', 'i64', 'i64', 'i64', 'i64', 'i64'], returns: 'i64_fast' },
    __errno_location: { args: [], returns: 'ptr' },
  });
  const sys = (n: number, a = 0, b = 0, d = 0, e = 0, f = 0, g = 0): number =>
    Number(c.syscall(n, a, b, d, e, f, g));
  // The JS thread's errno lives at a fixed address. It is read right after the call that failed,
  // with no allocation in between, so nothing else in the runtime can have overwritten it.
  const errnoAt = c.__errno_location() as Pointer;
  const errno = (): number => read.i32(errnoAt);
  const fail = (syscall: string, e: number): SyscallError => new SyscallError(syscall, errnoName(e));

  // The structs are Int32Arrays, little-endian: a 16-bit view or a BigInt64Array would each be a
  // first use JavaScriptCore sets up in every run of the shim, ~0.2 ms together (bench/HISTORY.md).
  // struct pollfd { int fd; short events; short revents; }: events the low half of the second int,
  // revents (zeroed with it) the high half. Reused by every poll.
  const pollfd = new Int32Array(2);
  // struct timespec { 64-bit tv_sec; long tv_nsec; }, as low/high int pairs: what ppoll waits at
  // most, and what clock_gettime writes. Every value here fits the low half.
  const timespec = new Int32Array(4);
  const pollOnce = (fd: number, events: number, timeoutMs: number): number => {
    pollfd[0] = fd;
    pollfd[1] = events;
    let limit = 0;
    if (timeoutMs >= 0) {
      setTimespec(timespec, Math.floor(timeoutMs / 1000), (timeoutMs % 1000) * 1_000_000);
      limit = ptr(timespec);
    }
    if (sys(nr.ppoll, ptr(pollfd), 1, limit, 0, 0) < 0) {
      const e = errno();
      if (e === EINTR) return 0;
      throw fail('poll', e);
    }
    return pollfd[1]! >>> 16;
  };
  // CLOCK_MONOTONIC through the bound syscall: `performance` is another first use (~0.05-0.1 ms).
  const monotonicMs = (): number => {
    sys(nr.clock_gettime, CLOCK_MONOTONIC, ptr(timespec));
    return timespec[0]! * 1000 + timespec[2]! / 1e6;
  };

  return {
    connectUnix(path, timeoutMs) {
      const name = new TextEncoder().encode(path);
      if (name.length >= SUN_PATH_MAX) throw new SyscallError('connect', 'ENAMETOOLONG');
      const addr = new Uint8Array(2 + SUN_PATH_MAX); // sa_family_t, then the NUL-terminated path
      addr[0] = AF_UNIX;
      addr.set(name, 2);
      const fd = sys(nr.socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw fail('socket', errno());
      try {
        // A blocking connect to a unix socket waits only while the listener's backlog is full; the
        // send timeout bounds that wait (0 would mean forever) and ends it with EAGAIN.
        let ms = Math.max(1, Math.ceil(timeoutMs));
        const deadline = monotonicMs() + ms;
        const timeval = new Int32Array(4);
        for (;;) {
          setTimespec(timeval, Math.floor(ms / 1000), (ms % 1000) * 1000);
          if (sys(nr.setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, ptr(timeval), 16) < 0)
            throw fail('setsockopt', errno());
          if (sys(nr.connect, fd, ptr(addr), 2 + name.length + 1) === 0) return fd;
          const e = errno();
          if (e === EISCONN) return fd; // an earlier, interrupted attempt got through
          if (e !== EINTR) throw fail('connect', e);
          // A signal (SIGSTOP and SIGCONT, a debugger) ended the wait: what is left of it, not a new
          // one, or signals that keep coming would keep the call waiting past its timeout.
          ms = Math.ceil(deadline - monotonicMs());
          if (ms <= 0) throw fail('connect', EAGAIN);
        }
      } catch (err) {
        sys(nr.close, fd);
        throw err;
      }
    },

    poll(fd, want, timeoutMs): Readiness {
      const revents = pollOnce(fd, (want.read ? POLLIN : 0) | (want.write ? POLLOUT : 0), timeoutMs);
      const broken = (revents & (POLLERR | POLLHUP)) !== 0;
      return { readable: broken || (revents & POLLIN) !== 0, writable: broken || (revents & POLLOUT) !== 0 };
    },

    send(fd, data, offset) {
      if (offset >= data.length) return 0;
      const n = sys(
        nr.sendto,
        fd,
        ptr(data, offset),
        data.length - offset,
        MSG_DONTWAIT | MSG_NOSIGNAL,
        0,
        0,
      );
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN || e === EINTR) return 0;
      throw fail('send', e);
    },

    recv(fd, buf) {
      const n = sys(nr.recvfrom, fd, ptr(buf), buf.length, MSG_DONTWAIT, 0, 0);
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN || e === EINTR) return -1;
      throw fail('recv', e);
    },

    close(fd) {
      sys(nr.close, fd);
    },

    // A poll of no descriptor (a negative fd is skipped): ppoll is the one wait both tables have.
    sleep(ms) {
      pollOnce(-1, 0, Math.max(0, Math.round(ms)));
    },

    now: monotonicMs,

    readAll(fd, maxBytes) {
      let buf = new Uint8Array(16 * 1024);
      let size = 0;
      for (;;) {
        if (size > maxBytes) throw new StdinTooLarge(maxBytes);
        if (size === buf.length) {
          const bigger = new Uint8Array(buf.length * 2);
          bigger.set(buf);
          buf = bigger;
        }
        const n = sys(nr.read, fd, ptr(buf, size), buf.length - size);
        if (n === 0) return buf.subarray(0, size);
        if (n > 0) {
          size += n;
          continue;
        }
        const e = errno();
        if (e === EAGAIN)
          pollOnce(fd, POLLIN, -1); // a non-blocking pipe from the runtime
        else if (e !== EINTR) throw fail('read', e);
      }
    },

    writeAll(fd, text) {
      const data = new TextEncoder().encode(text);
      let done = 0;
      while (done < data.length) {
        const n = sys(nr.write, fd, ptr(data, done), data.length - done);
        if (n >= 0) {
          done += n;
          continue;
        }
        const e = errno();
        if (e === EAGAIN) pollOnce(fd, POLLOUT, -1);
        else if (e !== EINTR) throw fail('write', e);
      }
    },
  };
}
