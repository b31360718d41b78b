import { CniCode, CniError } from '../cni/errors.ts';
import { canonicalErrnoName, errnoName } from '../errno.ts';

/**
 * Typed netlink failures. Every kernel refusal becomes one of these in exactly one place
 * (errorFromErrno), so callers branch on classes or on `errno`, never on message text.
 */

export class NetlinkError extends CniError {
  /** Symbolic errno, e.g. 'EEXIST', 'ENODEV', 'ENETUNREACH'. */
  readonly errno: string;
  /** What was asked, e.g. 'RTM_NEWROUTE 10.244.2.0/24'. */
  readonly op: string;

  constructor(errno: string, op: string, options?: { cause?: unknown }) {
    super(CniCode.NETLINK_FAILED, `${op}: ${errno}`, `netlink ${op} failed with ${errno}`, options);
    this.name = 'NetlinkError';
    this.errno = errno;
    this.op = op;
  }
}

/** ENODEV: the device named or indexed in the request does not exist (in that namespace). */
export class LinkNotFoundError extends NetlinkError {
  constructor(op: string) {
    super('ENODEV', op);
    this.name = 'LinkNotFoundError';
  }
}

/** EEXIST: the object being created exists already. */
export class ExistsError extends NetlinkError {
  constructor(op: string) {
    super('EEXIST', op);
    this.name = 'ExistsError';
  }
}

/**
 * EEXIST on creating a route exclusively: another route holds its kernel key (prefix, table, metric).
 * `routeKeyTaken` is what pkg/routes reads (it does not import this package).
 */
export class RouteKeyTakenError extends ExistsError {
  readonly routeKeyTaken = true;

  constructor(op: string) {
    super(op);
    this.name = 'RouteKeyTakenError';
  }
}

/** The single mapping from a kernel errno (positive) to a typed error. */
export function errorFromErrno(errno: number, op: string): NetlinkError {
  const name = errnoName(errno);
  if (name === 'ENODEV') return new LinkNotFoundError(op);
  if (name === 'EEXIST') return new ExistsError(op);
  return new NetlinkError(name, op);
}

/**
 * The same for an error thrown by the `netlink` package itself (socket errors carry `code`,
 * rejected requests read "Request rejected: ENODEV").
 */
export function errorFromPackage(err: unknown, op: string): NetlinkError {
  if (err instanceof NetlinkError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  let name = typeof code === 'string' ? code : undefined;
  if (name === undefined && err instanceof Error) {
    name = /^Request rejected: (E[A-Z0-9]+)$/.exec(err.message)?.[1];
  }
  if (name === 'ENODEV') return new LinkNotFoundError(op);
  if (name === 'EEXIST') return new ExistsError(op);
  const what =
    name === undefined ? (err instanceof Error ? err.message : String(err)) : canonicalErrnoName(name);
  return new NetlinkError(what, op, { cause: err });
}

/**
 * A request's name, or how to make it: a cold pass sends 10,000 route and nexthop requests and names
 * almost none of them (only a failure is named), so the hot requests defer the text.
 */
export type OpText = string | (() => string);

export function opText(op: OpText): string {
  return typeof op === 'string' ? op : op();
}
