/**
 * The few network-config fields the shim itself reads. Everything else in the config is the agent's
 * business: the shim forwards the raw text and never re-validates it.
 *
 *   socket     absolute path of the agent's unix socket   (default /run/trellis/cni.sock)
 *   spoolDir   absolute path of the DEL spool directory    (default /var/lib/trellis/spool)
 *   timeoutMs  whole-call timeout for every verb, 1..600000 (default per verb, see DEFAULT_TIMEOUT_MS)
 *
 * A timeoutMs that is no such number fails ADD and CHECK (7), and DEL, GC and STATUS go on with their
 * default, as the agent does with the fields only ADD and CHECK read: one bad edit of the config list
 * must not fail every DEL on the node (the runtime retries it for ever, the lease and veth held). A bad
 * socket (not an absolute path, or too long for a unix socket) or spoolDir fails every verb: which
 * agent, and so which network, the call is for is unknown.
 */
import { type CniCommand, POD_SETUP_VERBS } from '../cni/env.ts';
import { CniCode, CniError } from '../cni/errors.ts';
import { cniNameProblem, isObject, jsonType, quote, utf8Length } from '../cni/text.ts';
import { configVersion, LATEST_VERSION, parseVersion } from '../cni/version.ts';
import { MAX_SOCKET_PATH_BYTES, socketPathTooLong } from './protocol.ts';

export const DEFAULT_SOCKET = '/run/trellis/cni.sock';
export const DEFAULT_SPOOL_DIR = '/var/lib/trellis/spool';
export const MAX_TIMEOUT_MS = 600_000;

export interface ShimConfig {
  /** The config's cniVersion, used to shape error output (LATEST_VERSION when absent or junk). */
  cniVersion: string;
  socket: string;
  spoolDir: string;
  /** undefined: the per-verb default applies. */
  timeoutMs: number | undefined;
  /** The config object as parsed, for checkWithoutAgent. */
  raw: Record<string, unknown>;
}

function versionOrLatest(v: unknown): string {
  if (typeof v !== 'string') return LATEST_VERSION;
  try {
    parseVersion(v);
    return v;
  } catch {
    return LATEST_VERSION;
  }
}

/**
 * The cniVersion to put in error output, without failing: the config's when it parses, else the
 * latest. Used when the failure happened before (or while) the config could be parsed.
 */
export function errorVersionOf(stdin: string): string {
  try {
    const parsed: unknown = JSON.parse(stdin);
    return isObject(parsed) ? versionOrLatest(parsed.cniVersion) : LATEST_VERSION;
  } catch {
    return LATEST_VERSION;
  }
}

function absolutePath(conf: Record<string, unknown>, field: string, fallback: string): string {
  const v = conf[field];
  if (v === undefined || v === null) return fallback; // null is "not set", as the agent reads it
  if (typeof v !== 'string' || !v.startsWith('/') || v.includes('\0')) {
    const shown = typeof v === 'string' ? quote(v) : jsonType(v);
    throw new CniError(
      CniCode.INVALID_CONFIG,
      `invalid network config: "${field}" must be an absolute path, got ${shown}`,
    );
  }
  return v;
}

/** Throws CniError DECODE_FAILED (6) for text that is not a JSON object, INVALID_CONFIG (7) for bad fields. */
export function parseShimConfig(stdin: string, command: CniCommand): ShimConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(
      CniCode.DECODE_FAILED,
      'could not decode the network configuration on stdin: not valid JSON',
      err instanceof Error ? err.message : String(err),
    );
  }
  if (!isObject(parsed)) {
    throw new CniError(
      CniCode.DECODE_FAILED,
      `could not decode the network configuration on stdin: expected a JSON object, got ${jsonType(parsed)}`,
    );
  }
  let t = parsed.timeoutMs ?? undefined;
  if (t !== undefined && (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_TIMEOUT_MS)) {
    // The agent, reading the same config, logs what the other verbs went on without.
    if (!POD_SETUP_VERBS.has(command)) t = undefined;
    else
      throw new CniError(
        CniCode.INVALID_CONFIG,
        `invalid network config: "timeoutMs" must be an integer from 1 to ${MAX_TIMEOUT_MS}, got ${typeof t === 'number' ? t : jsonType(t)}`,
      );
  }
  const socket = absolutePath(parsed, 'socket', DEFAULT_SOCKET);
  if (socketPathTooLong(socket)) {
    // Not "unreachable" (11, or a DEL spooled as done): no agent can ever listen there.
    throw new CniError(
      CniCode.INVALID_CONFIG,
      `invalid network config: "socket" must be at most ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket path's limit), got ${utf8Length(socket)}: ${quote(socket)}`,
    );
  }
  return {
    cniVersion: versionOrLatest(parsed.cniVersion),
    socket,
    spoolDir: absolutePath(parsed, 'spoolDir', DEFAULT_SPOOL_DIR),
    timeoutMs: t as number | undefined,
    raw: parsed,
  };
}

/**
 * When the agent cannot be asked: throws the error it would answer for a config it can never accept
 * (the spec's checks every plugin makes: a supported cniVersion that defines the verb, a valid name, a
 * type),
 * so a runtime is not told "try again later" for an ADD that will fail, nor "done" for a spooled DEL
 * the agent would refuse at every replay.
 */
export function checkWithoutAgent(config: ShimConfig, command: string): void {
  configVersion(config.raw, command);
  const problems: string[] = [];
  const nameProblem = cniNameProblem(config.raw.name);
  if (nameProblem !== undefined) problems.push(nameProblem);
  // The agent requires `type` of every verb (pkg/cni/netconf.ts), in these words.
  const type = config.raw.type;
  if (type === undefined || type === null || type === '') problems.push('type is required');
  else if (typeof type !== 'string') problems.push(`type must be a string, not ${jsonType(type)}`);
  if (problems.length > 0) {
    throw new CniError(CniCode.INVALID_CONFIG, `invalid network configuration: ${problems.join('; ')}`);
  }
}
