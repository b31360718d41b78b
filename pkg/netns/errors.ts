import { CniCode, CniError } from '../cni/errors.ts';

/** The path does not exist or is not a network namespace (sentinel: DEL treats it as done). */
export class NetnsNotFoundError extends CniError {
  readonly path: string;

  constructor(path: string, reason: string, options?: { cause?: unknown }) {
    super(CniCode.NETNS_NOT_FOUND, `network namespace ${path}: ${reason}`, undefined, options);
    this.name = 'NetnsNotFoundError';
    this.path = path;
  }
}

/** Another process (or another open of the file in this one) holds the lock. */
export class LockHeldError extends CniError {
  readonly path: string;

  constructor(path: string) {
    super(CniCode.IO_FAILURE, `${path} is locked by another process (is another agent running?)`);
    this.name = 'LockHeldError';
    this.path = path;
  }
}

/** A sysctl key outside the accepted alphabet, or a /proc/sys read or write that failed. */
export class SysctlError extends CniError {
  readonly key: string;

  constructor(key: string, reason: string, options?: { cause?: unknown }) {
    super(CniCode.IO_FAILURE, `sysctl ${key}: ${reason}`, undefined, options);
    this.name = 'SysctlError';
    this.key = key;
  }
}
