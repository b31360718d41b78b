import { describe, expect, it } from 'vitest';
import { CniCode, CniError, toCniError } from '../../../pkg/cni/errors.ts';
import {
  ExistsError,
  errorFromErrno,
  errorFromPackage,
  LinkNotFoundError,
  NetlinkError,
} from '../../../pkg/netlink/errors.ts';

describe('netlink errors', () => {
  it('maps errnos to typed errors that carry the CNI code, the errno name and the operation', () => {
    const nodev = errorFromErrno(19, 'RTM_DELLINK #9');
    expect(nodev).toBeInstanceOf(LinkNotFoundError);
    expect(nodev).toBeInstanceOf(NetlinkError);
    expect(nodev).toBeInstanceOf(CniError);
    expect([nodev.code, nodev.errno, nodev.op]).toEqual([CniCode.NETLINK_FAILED, 'ENODEV', 'RTM_DELLINK #9']);
    expect(errorFromErrno(17, 'x')).toBeInstanceOf(ExistsError);
    const unreach = errorFromErrno(101, 'RTM_NEWROUTE 10.1.0.0/16 via 192.0.2.1');
    expect(unreach.constructor).toBe(NetlinkError);
    expect(unreach.errno).toBe('ENETUNREACH');
    expect(unreach.message).toBe('RTM_NEWROUTE 10.1.0.0/16 via 192.0.2.1: ENETUNREACH');
    // Crossing the CNI boundary keeps the code (no re-wrapping as INTERNAL).
    expect(toCniError(unreach).toJSON('1.0.0')).toMatchObject({ code: 103 });
  });

  it("maps the package's own errors: 'Request rejected: E...' and ErrnoException codes", () => {
    expect(errorFromPackage(new Error('Request rejected: ENODEV'), 'op')).toBeInstanceOf(LinkNotFoundError);
    expect(errorFromPackage(new Error('Request rejected: EEXIST'), 'op')).toBeInstanceOf(ExistsError);
    const nobufs = Object.assign(new Error('Error when receiving'), { code: 'ENOBUFS' });
    expect(errorFromPackage(nobufs, 'recvmsg')).toMatchObject({ errno: 'ENOBUFS', op: 'recvmsg' });
  });

  it('names 95 EOPNOTSUPP, as the kernel answers what it does not support, whichever way it arrives', () => {
    // Node and libuv call 95 ENOTSUP (the same number on Linux); the callers' fallbacks (a kernel
    // without nexthop objects or without IPv6) test for EOPNOTSUPP, and never matched before.
    expect(errorFromErrno(95, 'RTM_GETNEXTHOP dump').errno).toBe('EOPNOTSUPP');
    expect(errorFromPackage(new Error('Request rejected: ENOTSUP'), 'op').errno).toBe('EOPNOTSUPP');
    expect(errorFromPackage(Object.assign(new Error('x'), { code: 'ENOTSUP' }), 'op').errno).toBe(
      'EOPNOTSUPP',
    );
    expect(errorFromErrno(-95, 'op').message).toBe('op: EOPNOTSUPP');
  });
});
