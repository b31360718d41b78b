/**
 * The shim <-> agent wire protocol over the agent's unix socket. Both sides import this file.
 *
 *   shim  -> agent: ONE line  {"v":1,"env":{"CNI_COMMAND":..., ...},"stdin":"<raw network config>"}\n
 *                   (the shim may half-close its side afterwards; the agent must not require it)
 *   agent -> shim:  ONE line  {"ok":true,"result":<object printed as-is>}\n
 *                         or  {"ok":false,"error":{"code":N,"msg":"...","details":"..."}}\n
 *                   and then closes the connection.
 *
 * JSON.stringify never emits a raw newline (newlines inside strings are escaped), so one encoded
 * message is always exactly one line. Only the CNI_* variables cross the socket: the runtime's full
 * environment may hold secrets, and the agent has no use for it.
 */
import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import { isObject, utf8Length } from '../cni/text.ts';

export const PROTOCOL_VERSION = 1;

/** Largest request line (without its newline), in UTF-8 bytes. Network configs are a few KiB. */
export const MAX_REQUEST_BYTES = 1024 * 1024;
/**
 * Most of stdin the shim reads: above MAX_REQUEST_BYTES, since a DEL too large goes with only the
 * fields it reads (shim.ts), but bounded, so a runaway writer cannot grow the shim without limit.
 */
export const MAX_STDIN_BYTES = 16 * MAX_REQUEST_BYTES;
/**
 * Longest socket path, in UTF-8 bytes: sockaddr_un's sun_path is 108 bytes, its terminating NUL
 * included. Longer, the agent could not listen on it nor the shim connect to it.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

export function socketPathTooLong(path: string): boolean {
  return utf8Length(path) > MAX_SOCKET_PATH_BYTES;
}

/** Largest response line (without its newline), in UTF-8 bytes. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** The environment variables the CNI specification defines; nothing else is forwarded. */
export const CNI_ENV_KEYS = [
  'CNI_COMMAND',
  'CNI_CONTAINERID',
  'CNI_NETNS',
  'CNI_IFNAME',
  'CNI_ARGS',
  'CNI_PATH',
] as const;

export type CniEnvKey = (typeof CNI_ENV_KEYS)[number];

/** The CNI variables as the runtime set them (raw strings, validated by the receiver). */
export type CniEnvVars = Partial<Record<CniEnvKey, string>>;

export interface AgentRequest {
  v: typeof PROTOCOL_VERSION;
  env: CniEnvVars;
  /** The raw network configuration text the runtime wrote to the shim's stdin. */
  stdin: string;
}

export interface AgentErrorBody {
  code: number;
  msg: string;
  details?: string;
}

export type AgentResponse = { ok: true; result: unknown } | { ok: false; error: AgentErrorBody };

const ENV_KEY_SET: ReadonlySet<string> = new Set(CNI_ENV_KEYS);

function stripNewline(line: string): string {
  if (line.endsWith('\r\n')) return line.slice(0, -2);
  if (line.endsWith('\n')) return line.slice(0, -1);
  return line;
}

/** Picks the CNI_* variables out of an environment; unset ones are omitted. */
export function pickCniEnv(env: Readonly<Record<string, string | undefined>>): CniEnvVars {
  const out: CniEnvVars = {};
  for (const key of CNI_ENV_KEYS) {
    const value = env[key];
    if (typeof value === 'string') out[key] = value;
  }
  return out;
}

/**
 * The request line, newline included. Throws CniError BAD_REQUEST when it would exceed
 * MAX_REQUEST_BYTES, so an oversized config fails in the shim with a clear message instead of
 * being cut off by the agent.
 */
export function encodeRequest(env: Readonly<Record<string, string | undefined>>, stdin: string): string {
  const request: AgentRequest = { v: PROTOCOL_VERSION, env: pickCniEnv(env), stdin };
  const line = JSON.stringify(request);
  const size = utf8Length(line);
  if (size > MAX_REQUEST_BYTES) {
    throw new CniError(
      CniCode.BAD_REQUEST,
      `CNI request is too large for the trellis agent: ${size} bytes, limit ${MAX_REQUEST_BYTES}`,
      // The line holds stdin as a JSON string, where every " and \ of it doubles: a config just under
      // 1 MiB can make a line over it.
      `the request carries the network configuration on stdin (with prevResult; ${utf8Length(stdin)} bytes) escaped as a JSON string, beside the CNI_* variables: keep the configuration well under 1 MiB`,
    );
  }
  return `${line}\n`;
}

function badRequest(msg: string, details?: string): CniError {
  return new CniError(CniCode.BAD_REQUEST, `malformed trellis agent request: ${msg}`, details);
}

/** Parses one request line (with or without its newline). Only ever throws CniError BAD_REQUEST. */
export function decodeRequest(line: string): AgentRequest {
  try {
    const text = stripNewline(line);
    const size = utf8Length(text);
    if (size > MAX_REQUEST_BYTES)
      throw badRequest(`${size} bytes exceeds the ${MAX_REQUEST_BYTES}-byte limit`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw badRequest('not valid JSON', err instanceof Error ? err.message : String(err));
    }
    if (!isObject(parsed)) throw badRequest('expected a JSON object');
    if (parsed.v !== PROTOCOL_VERSION) {
      throw badRequest(`unsupported protocol version ${JSON.stringify(parsed.v)} (this side speaks v1)`);
    }
    const rawEnv = parsed.env;
    if (!isObject(rawEnv)) throw badRequest('"env" must be an object');
    const env: CniEnvVars = {};
    for (const key of Object.keys(rawEnv)) {
      if (!ENV_KEY_SET.has(key)) throw badRequest(`"env" holds ${JSON.stringify(key)}, not a CNI variable`);
      const value = rawEnv[key];
      if (typeof value !== 'string') throw badRequest(`"env.${key}" must be a string`);
      env[key as CniEnvKey] = value;
    }
    if (typeof parsed.stdin !== 'string') throw badRequest('"stdin" must be a string');
    return { v: PROTOCOL_VERSION, env, stdin: parsed.stdin };
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw badRequest('could not be decoded', String(err));
  }
}

/** A success response carrying the object the shim prints (the CNI result for ADD). */
export function okResponse(result: unknown): AgentResponse {
  return { ok: true, result };
}

/** An error response from any failure; untyped failures become INTERNAL (via toCniError). */
export function errorResponse(err: unknown): AgentResponse {
  const e = toCniError(err);
  const error: AgentErrorBody = { code: e.code, msg: e.message };
  if (e.details !== undefined && e.details !== '') error.details = e.details;
  return { ok: false, error };
}

/**
 * The response line, newline included. A result too large to send becomes an INTERNAL error
 * response (which always fits), so the shim gets an answer rather than a cut-off line.
 */
export function encodeResponse(response: AgentResponse): string {
  const line = JSON.stringify(response.ok ? { ok: true, result: response.result ?? null } : response);
  if (utf8Length(line) <= MAX_RESPONSE_BYTES) return `${line}\n`;
  const fallback: AgentResponse = {
    ok: false,
    error: { code: CniCode.INTERNAL, msg: `trellis agent response exceeds ${MAX_RESPONSE_BYTES} bytes` },
  };
  return `${JSON.stringify(fallback)}\n`;
}

function badResponse(msg: string, details?: string): CniError {
  return new CniError(CniCode.INTERNAL, `malformed answer from the trellis agent: ${msg}`, details);
}

/**
 * Parses the agent's answer (one line, with or without its newline). The agent is ours, so a
 * malformed answer is a bug: only ever throws CniError INTERNAL, with the reason in the message.
 */
export function decodeResponse(text: string): AgentResponse {
  try {
    const line = stripNewline(text);
    if (line.trim() === '')
      throw badResponse('empty answer (the agent closed the connection without replying)');
    const size = utf8Length(line);
    if (size > MAX_RESPONSE_BYTES)
      throw badResponse(`${size} bytes exceeds the ${MAX_RESPONSE_BYTES}-byte limit`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (err) {
      throw badResponse('not valid JSON', err instanceof Error ? err.message : String(err));
    }
    if (!isObject(parsed)) throw badResponse('expected a JSON object');
    if (parsed.ok === true) {
      if (!('result' in parsed)) throw badResponse('"result" is missing');
      return { ok: true, result: parsed.result };
    }
    if (parsed.ok !== false) throw badResponse('"ok" must be true or false');
    const e = parsed.error;
    if (!isObject(e)) throw badResponse('"error" must be an object');
    if (typeof e.code !== 'number' || !Number.isInteger(e.code) || e.code < 1) {
      throw badResponse('"error.code" must be a positive integer');
    }
    if (typeof e.msg !== 'string') throw badResponse('"error.msg" must be a string');
    if (e.details !== undefined && typeof e.details !== 'string') {
      throw badResponse('"error.details" must be a string');
    }
    const error: AgentErrorBody = { code: e.code, msg: e.msg };
    if (typeof e.details === 'string' && e.details !== '') error.details = e.details;
    return { ok: false, error };
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw badResponse('could not be decoded', String(err));
  }
}

/** stdin's bytes as text: the CNI spec's configuration is UTF-8 JSON, and a lossy decode would hide that. */
export function decodeStdin(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CniError(CniCode.DECODE_FAILED, 'the network configuration on stdin is not valid UTF-8');
  }
}
