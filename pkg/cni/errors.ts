/**
 * Every error that may cross the CNI boundary is a CniError carrying its code. Anything else is
 * turned into INTERNAL exactly once, in toCniError, so callers branch on codes, never on text.
 *
 * Codes 1-99 are the CNI specification's well-known codes; 100+ are trellis's own. This table is the
 * one place they are documented (the README links here).
 */
export const CniCode = {
  /** 1: Incompatible CNI version. */
  INCOMPATIBLE_VERSION: 1,
  /** 2: Unsupported field in network configuration. */
  UNSUPPORTED_FIELD: 2,
  /** 3: Container unknown or does not exist. */
  UNKNOWN_CONTAINER: 3,
  /** 4: Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...). */
  INVALID_ENV: 4,
  /** 5: I/O failure (e.g. could not read stdin, state directory not writable). */
  IO_FAILURE: 5,
  /** 6: Failed to decode content (malformed JSON). */
  DECODE_FAILED: 6,
  /** 7: Invalid network configuration. */
  INVALID_CONFIG: 7,
  /** 11: Try again later (the agent is not reachable or not ready yet). */
  TRY_AGAIN_LATER: 11,
  /** 50: Plugin not available (STATUS: the agent cannot serve ADD right now). */
  NOT_AVAILABLE: 50,
  /** 51: Plugin not available and existing containers in the network may have limited connectivity. */
  NOT_AVAILABLE_LIMITED: 51,

  // trellis's own codes (>= 100).
  /** 100: Internal error: a bug or an unexpected failure; the message says what failed. */
  INTERNAL: 100,
  /** 101: The address pool of a family is exhausted. */
  IPAM_EXHAUSTED: 101,
  /** 102: The network namespace path does not exist or is not a network namespace. */
  NETNS_NOT_FOUND: 102,
  /** 103: A kernel (netlink) operation failed; details carry the operation and errno. */
  NETLINK_FAILED: 103,
  /** 104: CHECK found the pod's interface, addresses or routes differ from prevResult. */
  CHECK_FAILED: 104,
  /** 105: The agent did not answer within the shim's timeout. */
  AGENT_TIMEOUT: 105,
  /** 106: The request to the agent was malformed or too large (shim/agent protocol). */
  BAD_REQUEST: 106,
  /** 107: The IPAM state on disk could not be read or written safely. */
  IPAM_STORE_FAILED: 107,
} as const;

export type CniCodeValue = (typeof CniCode)[keyof typeof CniCode];

/** The error object as the CNI specification shapes it on stdout. */
export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniError extends Error {
  readonly code: number;
  readonly details: string | undefined;

  constructor(code: number, msg: string, details?: string, options?: { cause?: unknown }) {
    super(msg, options);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }

  toJSON(cniVersion: string): CniErrorJson {
    const out: CniErrorJson = { cniVersion, code: this.code, msg: this.message };
    if (this.details !== undefined && this.details !== '') out.details = this.details;
    return out;
  }
}

/** The single place where an untyped failure becomes the internal-error code. */
export function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof Error) return new CniError(CniCode.INTERNAL, err.message, err.stack, { cause: err });
  return new CniError(CniCode.INTERNAL, `unexpected failure: ${String(err)}`);
}
