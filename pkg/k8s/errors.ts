/**
 * K8sError: every failure that leaves pkg/k8s. Callers branch on `statusCode` and `reason` (the
 * API server's Status reason, or one of ours for failures that never reached it), never on text.
 * The agent decides what a failure means for CNI; nothing here knows CNI codes.
 */

/** Reasons for failures that have no HTTP status from the server. */
export const K8sReason = {
  /** The server could not be reached or the connection broke (DNS, refused, reset, TLS). */
  NETWORK: 'NetworkError',
  /** No usable kubeconfig / service account. */
  CONFIG: 'InvalidKubeconfig',
  /** The server answered with an object we cannot use (failed toNodeView/toPodView). */
  INVALID_OBJECT: 'InvalidObject',
  /** A watch closed in a way that needs a restart (too short, or an ERROR event that is not 410). */
  WATCH: 'WatchFailed',
  /** Anything else: a bug or an unexpected failure. */
  UNKNOWN: 'Unknown',
} as const;

export class K8sError extends Error {
  /** What we were doing, e.g. "get node n1". */
  readonly op: string;
  /** HTTP status from the API server; undefined when the request got no answer. */
  readonly statusCode: number | undefined;
  /** Status.reason from the server ("NotFound", "Conflict", "Expired", ...) or a K8sReason. */
  readonly reason: string;
  /** Status.details.causes[].reason, e.g. "ResourceVersionTooLarge". */
  readonly causes: readonly string[];
  /**
   * How long the server asked us to wait before trying again (a Retry-After header or
   * Status.details.retryAfterSeconds: API Priority and Fairness and max-in-flight send them with 429).
   */
  readonly retryAfterMs: number | undefined;

  constructor(
    op: string,
    message: string,
    statusCode: number | undefined,
    reason: string,
    options?: { cause?: unknown; causes?: readonly string[]; retryAfterMs?: number | undefined },
  ) {
    super(`${op}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'K8sError';
    this.op = op;
    this.statusCode = statusCode;
    this.reason = reason;
    this.causes = Object.freeze([...(options?.causes ?? [])]);
    this.retryAfterMs = options?.retryAfterMs;
  }

  get isNotFound(): boolean {
    return this.statusCode === 404;
  }

  get isConflict(): boolean {
    return this.statusCode === 409;
  }

  get isGone(): boolean {
    return this.statusCode === 410;
  }

  /** A watch from a resourceVersion the server has not reached (e.g. it lost its state): relist. */
  get isResourceVersionTooLarge(): boolean {
    return this.causes.includes('ResourceVersionTooLarge');
  }
}

interface StatusLike {
  code?: unknown;
  reason?: unknown;
  message?: unknown;
  details?: unknown;
}

function causesOf(s: StatusLike | undefined): string[] {
  const d = s?.details;
  const causes = typeof d === 'object' && d !== null ? (d as { causes?: unknown }).causes : undefined;
  if (!Array.isArray(causes)) return [];
  return causes
    .map((c) => (c as { reason?: unknown } | null)?.reason)
    .filter((r): r is string => typeof r === 'string');
}

const DELAY_SECONDS = /^\d+$/;

/**
 * The wait the server asked for, in ms: the Retry-After header (delay-seconds; the HTTP-date form is
 * not used by the API server) or else the Status's details.retryAfterSeconds. Undefined when neither
 * says a positive number of seconds.
 */
export function retryAfterMsOf(header: string | undefined, status?: StatusLike): number | undefined {
  // delay-seconds is digits only (RFC 9110 10.2.3); Number() alone would take "1e2", "0x10" or "+3".
  const text = header?.trim() ?? '';
  const fromHeader = DELAY_SECONDS.test(text) ? Number(text) : 0;
  if (fromHeader > 0) return fromHeader * 1000;
  const d = status?.details;
  const seconds =
    typeof d === 'object' && d !== null
      ? (d as { retryAfterSeconds?: unknown }).retryAfterSeconds
      : undefined;
  return typeof seconds === 'number' && Number.isInteger(seconds) && seconds > 0 ? seconds * 1000 : undefined;
}

function parseStatusBody(body: unknown): StatusLike | undefined {
  let b = body;
  if (typeof b === 'string') {
    try {
      b = JSON.parse(b);
    } catch {
      return undefined;
    }
  }
  return typeof b === 'object' && b !== null ? (b as StatusLike) : undefined;
}

function reasonForCode(code: number): string {
  if (code === 404) return 'NotFound';
  if (code === 409) return 'Conflict';
  if (code === 410) return 'Expired';
  if (code === 401) return 'Unauthorized';
  if (code === 403) return 'Forbidden';
  if (code === 422) return 'Invalid';
  if (code === 429) return 'TooManyRequests';
  if (code >= 500) return 'InternalError';
  return 'Unknown';
}

/** A Status object (from a watch ERROR event or a response body) as a K8sError. */
export function fromStatus(op: string, status: unknown): K8sError {
  const s = parseStatusBody(status) ?? {};
  const code = typeof s.code === 'number' ? s.code : undefined;
  const reason =
    typeof s.reason === 'string' && s.reason !== ''
      ? s.reason
      : code === undefined
        ? K8sReason.UNKNOWN
        : reasonForCode(code);
  const message = typeof s.message === 'string' ? s.message : 'the server returned a failure Status';
  return new K8sError(op, message, code, reason, {
    causes: causesOf(s),
    retryAfterMs: retryAfterMsOf(undefined, s),
  });
}

/**
 * A non-2xx answer (the small transport): the Status in the body when there is one, else the code;
 * `retryAfter` is the Retry-After header, if any.
 */
export function fromHttpResponse(
  op: string,
  statusCode: number,
  body: string,
  retryAfter?: string,
): K8sError {
  const status = parseStatusBody(body);
  const reason =
    typeof status?.reason === 'string' && status.reason !== '' ? status.reason : reasonForCode(statusCode);
  const message =
    typeof status?.message === 'string' ? status.message : firstLine(body.trim()) || `HTTP ${statusCode}`;
  return new K8sError(op, message, statusCode, reason, {
    causes: causesOf(status),
    retryAfterMs: retryAfterMsOf(retryAfter, status),
  });
}

/**
 * The one place where whatever @kubernetes/client-node (or undici under it, or node:http under the
 * small transport) threw becomes a K8sError: ApiException (code + body), the Watch class's Error
 * with statusCode, and network errors (fetch's cause.code, node:net/tls's string code).
 */
export function toK8sError(op: string, err: unknown): K8sError {
  if (err instanceof K8sError) return err;
  if (typeof err === 'object' && err !== null) {
    const e = err as {
      code?: unknown;
      statusCode?: unknown;
      body?: unknown;
      message?: unknown;
      name?: unknown;
      cause?: unknown;
      headers?: unknown;
    };
    // ApiException carries the HTTP status in `code`, the Watch class in `statusCode`. A DOMException
    // (AbortError, TimeoutError) also has a numeric `code`, which is not an HTTP status.
    const isDomException = e.name === 'AbortError' || e.name === 'TimeoutError';
    const candidate =
      typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : undefined;
    const code =
      !isDomException && candidate !== undefined && candidate >= 100 && candidate <= 599
        ? candidate
        : undefined;
    if (code !== undefined) {
      const status = parseStatusBody(e.body);
      const reason =
        typeof status?.reason === 'string' && status.reason !== '' ? status.reason : reasonForCode(code);
      const message =
        typeof status?.message === 'string'
          ? status.message
          : typeof e.message === 'string'
            ? firstLine(e.message)
            : `HTTP ${code}`;
      return new K8sError(op, message, code, reason, {
        cause: err,
        causes: causesOf(status),
        retryAfterMs: retryAfterMsOf(retryAfterHeader(e), status),
      });
    }
    const causeCode =
      typeof e.cause === 'object' && e.cause !== null ? (e.cause as { code?: unknown }).code : undefined;
    // node:net / node:tls errors carry their own string code (ECONNREFUSED, ECONNRESET, TLS codes).
    const netCode = typeof e.code === 'string' ? e.code : causeCode;
    const msg = typeof e.message === 'string' ? e.message : String(err);
    if (typeof netCode === 'string' || isDomException || msg === 'fetch failed') {
      const detail = typeof netCode === 'string' && !msg.includes(netCode) ? `${msg} (${netCode})` : msg;
      return new K8sError(op, detail, undefined, K8sReason.NETWORK, { cause: err });
    }
    return new K8sError(op, msg, undefined, K8sReason.UNKNOWN, { cause: err });
  }
  return new K8sError(op, String(err), undefined, K8sReason.UNKNOWN);
}

/** client-node's ApiException carries the response headers as a plain object. */
function retryAfterHeader(e: { headers?: unknown }): string | undefined {
  const h = e.headers;
  if (typeof h !== 'object' || h === null) return undefined;
  for (const [name, v] of Object.entries(h)) {
    if (name.toLowerCase() === 'retry-after' && typeof v === 'string') return v;
  }
  return undefined;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}
