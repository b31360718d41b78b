import type * as Util from 'node:util';

/**
 * The symbolic name of a kernel errno ('ECONNREFUSED' for 111; either sign), as Node and Bun report
 * it, but 'EOPNOTSUPP' for 95 (canonicalErrnoName). node:util is loaded on first use, not imported:
 * the CNI shim (a fresh Bun process per call) would otherwise load it at start-up, ~1 ms, and it
 * needs a name only when a call failed.
 */
export function errnoName(errno: number): string {
  try {
    const { getSystemErrorName }: typeof Util = process.getBuiltinModule('node:util');
    return canonicalErrnoName(getSystemErrorName(-Math.abs(errno)));
  } catch {
    return `errno ${errno}`;
  }
}

/**
 * One name per Linux errno where libc has two for it. ENOTSUP and EOPNOTSUPP are both 95 on Linux, and
 * Node (and libuv, whose names the `netlink` package reports) calls 95 ENOTSUP, while the kernel's
 * netlink code answers what it does not support (a kernel before 5.3 asked for nexthop objects, one
 * without IPv6 asked for an IPv6 route) with EOPNOTSUPP, which is what callers test for.
 */
export function canonicalErrnoName(name: string): string {
  return name === 'ENOTSUP' ? 'EOPNOTSUPP' : name;
}
