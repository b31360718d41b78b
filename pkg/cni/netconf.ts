/**
 * The network configuration on stdin: size cap, JSON decoding, the spec's required fields, trellis's own
 * settings with their defaults, and the runtime-injected keys (prevResult, runtimeConfig, capabilities,
 * GC's valid attachments). Unknown keys are tolerated and kept in `raw`: the runtime and other tooling
 * add keys we do not know about, and the spec only reserves the right to reject them.
 *
 * Error codes, in the order they are checked:
 * - DECODE_FAILED (6): too large, not UTF-8, not JSON, or not a JSON object. The skel also returns 6 for a
 *   top-level array or scalar, since Go's decoder fails to unmarshal it into the config struct.
 * - INCOMPATIBLE_VERSION (1): cniVersion missing (libcni reads that as 0.1.0) or not supported, or too
 *   old for the verb (CHECK needs 0.4.0, GC and STATUS 1.1.0).
 * - INVALID_CONFIG (7): everything else, all problems in one message, each naming its field. A
 *   prevResult that does not parse counts only for ADD and CHECK (see PREV_RESULT_VERBS).
 */

import { LOG_LEVELS, type LogLevel } from '../observe/log-levels.ts';
import { type CniCommand, POD_SETUP_VERBS } from './env.ts';
import { CniCode, CniError } from './errors.ts';
import { parseCidr, parseIp } from './ip.ts';
import { jsonErrorPosition } from './json-position.ts';
import { type CniResult, convertResult, parseDns, parseResult, type ResultDns } from './result.ts';
import { cniNameProblem, isObject, jsonType, quote, utf8Length } from './text.ts';
import { configVersion, LATEST_VERSION } from './version.ts';

/** Largest accepted stdin. Real configs are a few KiB; this only bounds a runaway or hostile input. */
export const MAX_NETCONF_BYTES = 1024 * 1024;
export const DEFAULT_SOCKET = '/run/trellis/cni.sock';
export const DEFAULT_SPOOL_DIR = '/var/lib/trellis/spool';
export const MTU_MIN = 68;
export const MTU_MAX = 65535;
export const TIMEOUT_MS_MAX = 10 * 60 * 1000;
export { LOG_LEVELS, type LogLevel };

/** One attachment the runtime still considers valid (GC). */
export interface GcAttachment {
  containerID: string;
  ifname: string;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: string;
  hostIP?: string;
}

export interface BandwidthConfig {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

/** runtimeConfig (CONVENTIONS.md capabilities). Known keys are validated; others are kept untyped. */
export interface RuntimeConfig {
  portMappings?: PortMapping[];
  bandwidth?: BandwidthConfig;
  /** The dns capability: { servers, searches, options }. */
  dns?: { servers?: string[]; searches?: string[]; options?: string[] };
  /** The ips capability: requested addresses in CIDR form. */
  ips?: string[];
  mac?: string;
  [key: string]: unknown;
}

export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  /** The agent's Unix socket. Default DEFAULT_SOCKET. */
  socket: string;
  /** Where the shim spools DELs it could not deliver. Default DEFAULT_SPOOL_DIR. */
  spoolDir: string;
  /** Pod interface MTU, MTU_MIN..MTU_MAX; undefined means the agent decides. */
  mtu?: number;
  /** Shim -> agent timeout, 1..TIMEOUT_MS_MAX; undefined means the shim's default. */
  timeoutMs?: number;
  dns?: ResultDns;
  logLevel?: LogLevel;
  /** The previous result, validated and normalized to the LATEST_VERSION (1.x) shape. */
  prevResult?: CniResult;
  /**
   * Why prevResult was ignored: a verb that never reads it (DEL, GC, STATUS) got one that does not
   * parse. Names the problem and where it is ("prevResult.ips[0].gateway ..."); the agent logs it.
   */
  prevResultIgnored?: string;
  /**
   * DEL, GC and STATUS: what was wrong with fields only ADD and CHECK read (mtu, dns, ...), which the
   * verb went on without; the agent logs it at warn.
   */
  configIgnored?: string;
  runtimeConfig?: RuntimeConfig;
  /** The `args` object as given (conventions: args.cni.ips, labels, ...). */
  args?: Record<string, unknown>;
  capabilities?: Record<string, boolean>;
  /**
   * GC: the attachments to keep, from `cni.dev/valid-attachments` (or `cni.dev/attachments`, the name an
   * earlier 1.1 draft used; libcni sends both). Undefined when absent or null: the caller must then
   * treat the set as unknown and delete nothing.
   */
  validAttachments?: GcAttachment[];
  /** The whole decoded object, unknown keys included. */
  raw: Record<string, unknown>;
}

/** Commands that carry a network configuration on stdin (VERSION carries only a cniVersion). */
export type NetConfCommand = Exclude<CniCommand, 'VERSION'>;

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Size check, UTF-8 decoding and JSON.parse; throws CniError(DECODE_FAILED). */
export function decodeJson(stdin: string | Uint8Array, what = 'network configuration'): unknown {
  let text: string;
  if (typeof stdin === 'string') {
    // Each UTF-16 unit is at most 3 UTF-8 bytes, so short strings need no counting.
    if (stdin.length * 3 > MAX_NETCONF_BYTES) {
      const bytes = utf8Length(stdin);
      if (bytes > MAX_NETCONF_BYTES) throw tooLarge(what, bytes);
    }
    text = stdin;
  } else {
    if (stdin.byteLength > MAX_NETCONF_BYTES) throw tooLarge(what, stdin.byteLength);
    try {
      text = decoder.decode(stdin);
    } catch {
      throw new CniError(CniCode.DECODE_FAILED, `${what} is not valid UTF-8`);
    }
  }
  if (text.trim() === '')
    throw new CniError(CniCode.DECODE_FAILED, `${what} is empty: expected a JSON object`);
  try {
    return JSON.parse(text);
  } catch (err) {
    // V8 names the position, Bun's JavaScriptCore does not: find it ourselves so both say the same.
    const detail = (err instanceof Error ? err.message : String(err)).replace(/ in JSON at position .*$/, '');
    const pos = jsonErrorPosition(text);
    const where =
      pos === undefined ? '' : ` at position ${pos.offset} (line ${pos.line}, column ${pos.column})`;
    throw new CniError(CniCode.DECODE_FAILED, `${what} is not valid JSON${where}: ${detail}`);
  }
}

function tooLarge(what: string, bytes: number): CniError {
  return new CniError(
    CniCode.DECODE_FAILED,
    `${what} is ${bytes} bytes; the limit is ${MAX_NETCONF_BYTES} bytes`,
  );
}

/**
 * The cniVersion of a VERSION request's stdin ({"cniVersion": "1.1.0"}), or undefined when there is
 * none or stdin is not such an object. Never throws: VERSION must answer whatever it is given.
 */
export function versionRequestVersion(stdin: string | Uint8Array): string | undefined {
  try {
    const v = decodeJson(stdin);
    return isObject(v) && typeof v.cniVersion === 'string' ? v.cniVersion : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Parses and validates the network configuration for a verb. See the module comment for the codes.
 * CHECK additionally requires prevResult, as the spec says the runtime must send it.
 */
export function parseNetConf(stdin: string | Uint8Array, command: NetConfCommand): NetConf {
  const decoded = decodeJson(stdin);
  if (!isObject(decoded)) {
    throw new CniError(
      CniCode.DECODE_FAILED,
      `network configuration must be a JSON object, not ${jsonType(decoded)}`,
    );
  }
  const raw = decoded;
  const problems: string[] = [];

  const cniVersion = configVersion(raw, command);
  const nameProblem = cniNameProblem(raw.name);
  if (nameProblem !== undefined) problems.push(nameProblem);
  const name = nameProblem === undefined ? (raw.name as string) : undefined;
  const type = requiredString(raw, 'type', problems);

  const conf: NetConf = {
    cniVersion,
    name: name ?? '',
    type: type ?? '',
    socket: absolutePath(raw, 'socket', problems) ?? DEFAULT_SOCKET,
    spoolDir: absolutePath(raw, 'spoolDir', problems) ?? DEFAULT_SPOOL_DIR,
    raw,
  };
  // The fields only pod setup reads, and timeoutMs (the other verbs have a default): a problem there
  // fails ADD and CHECK alone; DEL, GC and STATUS go on without them (POD_SETUP_VERBS).
  const podSetup = POD_SETUP_VERBS.has(command) ? problems : [];
  const timeoutMs = integer(raw, 'timeoutMs', 1, TIMEOUT_MS_MAX, podSetup);
  if (timeoutMs !== undefined) conf.timeoutMs = timeoutMs;
  const mtu = integer(raw, 'mtu', MTU_MIN, MTU_MAX, podSetup);
  if (mtu !== undefined) conf.mtu = mtu;
  if (raw.dns !== undefined) {
    const before = podSetup.length;
    const dns = parseDns(raw.dns, 'dns', podSetup);
    if (dns !== undefined && podSetup.length === before) conf.dns = dns;
  }
  if (raw.logLevel !== undefined) {
    if (typeof raw.logLevel === 'string' && (LOG_LEVELS as readonly string[]).includes(raw.logLevel)) {
      conf.logLevel = raw.logLevel as LogLevel;
    } else {
      podSetup.push(`logLevel must be one of ${LOG_LEVELS.join(', ')}, not ${describe(raw.logLevel)}`);
    }
  }
  if (raw.args !== undefined && raw.args !== null) {
    if (isObject(raw.args)) conf.args = raw.args;
    else podSetup.push(`args must be an object, not ${jsonType(raw.args)}`);
  }
  if (raw.capabilities !== undefined && raw.capabilities !== null) {
    const caps = capabilities(raw.capabilities, podSetup);
    if (caps !== undefined) conf.capabilities = caps;
  }
  if (raw.runtimeConfig !== undefined && raw.runtimeConfig !== null) {
    const rc = runtimeConfig(raw.runtimeConfig, podSetup);
    if (rc !== undefined) conf.runtimeConfig = rc;
  }
  if (podSetup !== problems && podSetup.length > 0) conf.configIgnored = podSetup.join('; ');
  const attachmentsKey =
    raw['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
  const rawAttachments = raw[attachmentsKey];
  if (rawAttachments !== undefined && rawAttachments !== null) {
    const list = attachments(rawAttachments, attachmentsKey, problems);
    if (list !== undefined) conf.validAttachments = list;
  }

  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    const prev = parsePrevResult(raw.prevResult, cniVersion);
    if (typeof prev !== 'string') conf.prevResult = prev;
    else if (PREV_RESULT_VERBS.has(command)) problems.push(prev);
    else conf.prevResultIgnored = prev;
  } else if (command === 'CHECK') {
    problems.push('prevResult is required for CHECK');
  }

  if (problems.length > 0) {
    throw new CniError(CniCode.INVALID_CONFIG, `invalid network configuration: ${problems.join('; ')}`);
  }
  return conf;
}

/**
 * The verbs for which a prevResult that does not parse is an error: CHECK compares the kernel with
 * it, and for ADD it is the previous plugin's answer, whose fault should surface there. DEL, GC and
 * STATUS never read it, so they ignore one they cannot parse: a DEL failing on it would be retried
 * by the runtime forever while the lease, veth and routes stay (ptp's DEL succeeds on the same input).
 */
const PREV_RESULT_VERBS: ReadonlySet<NetConfCommand> = new Set(['ADD', 'CHECK']);

/** prevResult validated and normalized to the LATEST_VERSION shape, or what is wrong with it and where. */
function parsePrevResult(v: unknown, cniVersion: string): CniResult | string {
  try {
    const parsed = parseResult(v, cniVersion, { path: 'prevResult', code: CniCode.INVALID_CONFIG });
    return convertResult(parsed, LATEST_VERSION);
  } catch (err) {
    if (!(err instanceof CniError)) throw err;
    const problem = err.message.replace(/^invalid prevResult: /, '');
    // A version error speaks of "config"; say which part of it.
    return problem.startsWith('prevResult') ? problem : `prevResult: ${problem}`;
  }
}

function describe(v: unknown): string {
  return typeof v === 'string' ? quote(v) : jsonType(v);
}

function requiredString(raw: Record<string, unknown>, key: string, problems: string[]): string | undefined {
  const v = raw[key];
  if (v === undefined || v === null || v === '') {
    problems.push(`${key} is required`);
    return undefined;
  }
  if (typeof v !== 'string') {
    problems.push(`${key} must be a string, not ${jsonType(v)}`);
    return undefined;
  }
  return v;
}

function absolutePath(raw: Record<string, unknown>, key: string, problems: string[]): string | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !v.startsWith('/') || v.includes('\0')) {
    problems.push(`${key} must be an absolute path, not ${describe(v)}`);
    return undefined;
  }
  return v;
}

function integer(raw: Record<string, unknown>, key: string, min: number, max: number, problems: string[]) {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    problems.push(
      `${key} must be an integer from ${min} to ${max}, not ${typeof v === 'number' ? v : describe(v)}`,
    );
    return undefined;
  }
  return v;
}

function capabilities(v: unknown, problems: string[]): Record<string, boolean> | undefined {
  if (!isObject(v) || !Object.values(v).every((b) => typeof b === 'boolean')) {
    problems.push('capabilities must be an object of booleans');
    return undefined;
  }
  return v as Record<string, boolean>;
}

function attachments(v: unknown, key: string, problems: string[]): GcAttachment[] | undefined {
  if (!Array.isArray(v)) {
    problems.push(`${key} must be an array of {containerID, ifname}, not ${jsonType(v)}`);
    return undefined;
  }
  const out: GcAttachment[] = [];
  let bad = 0;
  v.forEach((a: unknown, i: number) => {
    if (isObject(a) && typeof a.containerID === 'string' && typeof a.ifname === 'string') {
      out.push({ containerID: a.containerID, ifname: a.ifname });
    } else if (bad++ < 3) {
      problems.push(`${key}[${i}] must be {"containerID": string, "ifname": string}`);
    }
  });
  return bad === 0 ? out : undefined;
}

function runtimeConfig(v: unknown, problems: string[]): RuntimeConfig | undefined {
  if (!isObject(v)) {
    problems.push(`runtimeConfig must be an object, not ${jsonType(v)}`);
    return undefined;
  }
  const before = problems.length;
  const rc: RuntimeConfig = { ...v };
  if (v.portMappings !== undefined && v.portMappings !== null) {
    if (!Array.isArray(v.portMappings)) problems.push('runtimeConfig.portMappings must be an array');
    else {
      v.portMappings.forEach((pm: unknown, i: number) => {
        const p = `runtimeConfig.portMappings[${i}]`;
        if (!isObject(pm)) {
          problems.push(`${p} must be an object`);
          return;
        }
        if (!isPort(pm.hostPort)) problems.push(`${p}.hostPort must be an integer from 1 to 65535`);
        if (!isPort(pm.containerPort)) problems.push(`${p}.containerPort must be an integer from 1 to 65535`);
        if (pm.protocol !== undefined && typeof pm.protocol !== 'string')
          problems.push(`${p}.protocol must be a string`);
        if (
          pm.hostIP !== undefined &&
          (typeof pm.hostIP !== 'string' || (pm.hostIP !== '' && parseIp(pm.hostIP) === undefined))
        ) {
          problems.push(`${p}.hostIP must be an IP address`);
        }
      });
    }
  }
  if (v.bandwidth !== undefined && v.bandwidth !== null) {
    if (!isObject(v.bandwidth)) problems.push('runtimeConfig.bandwidth must be an object');
    else {
      for (const k of ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst']) {
        const n = v.bandwidth[k];
        if (n !== undefined && (typeof n !== 'number' || !Number.isInteger(n) || n < 0)) {
          problems.push(`runtimeConfig.bandwidth.${k} must be a non-negative integer`);
        }
      }
    }
  }
  if (v.dns !== undefined && v.dns !== null) {
    if (!isObject(v.dns)) problems.push('runtimeConfig.dns must be an object');
    else {
      for (const k of ['servers', 'searches', 'options']) {
        const list = v.dns[k];
        if (list !== undefined && (!Array.isArray(list) || !list.every((s) => typeof s === 'string'))) {
          problems.push(`runtimeConfig.dns.${k} must be an array of strings`);
        }
      }
    }
  }
  if (v.ips !== undefined && v.ips !== null) {
    if (!Array.isArray(v.ips)) problems.push('runtimeConfig.ips must be an array of CIDR strings');
    else {
      v.ips.forEach((ip: unknown, i: number) => {
        if (typeof ip !== 'string' || parseCidr(ip) === undefined) {
          problems.push(`runtimeConfig.ips[${i}] must be an address in CIDR form`);
        }
      });
    }
  }
  if (v.mac !== undefined && v.mac !== null && typeof v.mac !== 'string')
    problems.push('runtimeConfig.mac must be a string');
  return problems.length === before ? rc : undefined;
}

function isPort(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}
