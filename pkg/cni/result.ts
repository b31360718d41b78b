/**
 * The CNI Result: its types, validation of results received from elsewhere (prevResult, the agent's
 * reply), and conversion between the 1.x shape and the 0.3.x/0.4.0 shape, following the Go
 * pkg/types/100 and pkg/types/040 converters.
 */
import { CniCode, type CniCodeValue, CniError, type CniErrorJson, toCniError } from './errors.ts';
import { ipFamily, parseCidr, parseIp } from './ip.ts';
import { isObject, jsonType } from './text.ts';
import { checkVersion, LATEST_VERSION, parseVersion } from './version.ts';

export interface ResultInterface {
  name: string;
  mac?: string;
  /** 1.1.0+ */
  mtu?: number;
  /** Netns path for interfaces inside the sandbox; absent for host-side interfaces. */
  sandbox?: string;
  /** 1.1.0+ */
  socketPath?: string;
  /** 1.1.0+ */
  pciID?: string;
}

export interface ResultIp {
  /** "10.0.0.5/32": the address with its prefix length. */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
  /** Only in the 0.3.x/0.4.0 shape: "4" or "6". 1.0.0 dropped it. */
  version?: '4' | '6';
}

export interface ResultRoute {
  dst: string;
  gw?: string;
  /** The five fields below are 1.1.0+. */
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface ResultDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIp[];
  routes?: ResultRoute[];
  dns?: ResultDns;
}

/** True for the 0.3.0/0.3.1/0.4.0 shape (ips carry `version`); false for 1.x. Throws for bad text. */
export function isLegacyShape(version: string): boolean {
  return parseVersion(version).major === 0;
}

export interface ParseResultOptions {
  /** Prefix for messages, e.g. "prevResult". Default "result". */
  path?: string;
  /** Code of the thrown CniError. Default INVALID_CONFIG. */
  code?: CniCodeValue;
}

/**
 * Validates an already JSON-decoded result. Its own `cniVersion` wins when present (it decides the shape);
 * otherwise `version` is used, as libcni does for a prevResult without one. Unknown keys are dropped (Go
 * ignores them too). The returned object is in the shape of its version: 0.x ips always carry `version`
 * (inferred from the address when missing), 1.x ips never do.
 *
 * Throws CniError(code) naming every problem with its path, or CniError(INCOMPATIBLE_VERSION) when the
 * version is not one trellis supports.
 */
export function parseResult(obj: unknown, version: string, options: ParseResultOptions = {}): CniResult {
  const path = options.path ?? 'result';
  const code = options.code ?? CniCode.INVALID_CONFIG;
  const fail = (problems: string[]): never => {
    throw new CniError(code, `invalid ${path}: ${problems.join('; ')}`);
  };
  if (!isObject(obj)) fail([`${path} must be an object, not ${jsonType(obj)}`]);
  const o = obj as Record<string, unknown>;
  const problems: string[] = [];
  let cniVersion = version;
  if (o.cniVersion !== undefined) {
    if (typeof o.cniVersion === 'string') cniVersion = o.cniVersion;
    else fail([`${path}.cniVersion must be a string, not ${jsonType(o.cniVersion)}`]);
  }
  checkVersion(cniVersion);
  const legacy = isLegacyShape(cniVersion);
  const out: CniResult = { cniVersion };

  const interfaces = arrayField(o, 'interfaces', path, problems);
  if (interfaces !== undefined) {
    out.interfaces = interfaces.map((v, i) => parseInterface(v, `${path}.interfaces[${i}]`, problems));
  }
  const ips = arrayField(o, 'ips', path, problems);
  if (ips !== undefined) {
    const count = interfaces?.length ?? 0;
    out.ips = ips.map((v, i) => parseIpConfig(v, `${path}.ips[${i}]`, legacy, count, problems));
  }
  const routes = arrayField(o, 'routes', path, problems);
  if (routes !== undefined)
    out.routes = routes.map((v, i) => parseRoute(v, `${path}.routes[${i}]`, problems));
  if (o.dns !== undefined) {
    const dns = parseDns(o.dns, `${path}.dns`, problems);
    if (dns !== undefined) out.dns = dns;
  }
  if (problems.length > 0) fail(problems);
  return out;
}

function arrayField(o: Record<string, unknown>, key: string, path: string, problems: string[]) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    problems.push(`${path}.${key} must be an array, not ${jsonType(v)}`);
    return undefined;
  }
  return v as unknown[];
}

function str(o: Record<string, unknown>, key: string, path: string, problems: string[], required = false) {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) problems.push(`${path}.${key} is required`);
    return undefined;
  }
  if (typeof v !== 'string') {
    problems.push(`${path}.${key} must be a string, not ${jsonType(v)}`);
    return undefined;
  }
  return v;
}

function uint(o: Record<string, unknown>, key: string, path: string, problems: string[], max = 0xffffffff) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    problems.push(
      `${path}.${key} must be an integer from 0 to ${max}, not ${JSON.stringify(v) ?? jsonType(v)}`,
    );
    return undefined;
  }
  return v;
}

function strings(v: unknown, path: string, problems: string[]): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    problems.push(`${path} must be an array of strings`);
    return undefined;
  }
  return [...(v as string[])];
}

function parseInterface(v: unknown, path: string, problems: string[]): ResultInterface {
  if (!isObject(v)) {
    problems.push(`${path} must be an object, not ${jsonType(v)}`);
    return { name: '' };
  }
  const out: ResultInterface = { name: str(v, 'name', path, problems, true) ?? '' };
  const mac = str(v, 'mac', path, problems);
  if (mac !== undefined) out.mac = mac;
  const mtu = uint(v, 'mtu', path, problems);
  if (mtu !== undefined) out.mtu = mtu;
  const sandbox = str(v, 'sandbox', path, problems);
  if (sandbox !== undefined) out.sandbox = sandbox;
  const socketPath = str(v, 'socketPath', path, problems);
  if (socketPath !== undefined) out.socketPath = socketPath;
  const pciID = str(v, 'pciID', path, problems);
  if (pciID !== undefined) out.pciID = pciID;
  return out;
}

function parseIpConfig(v: unknown, path: string, legacy: boolean, ifCount: number, problems: string[]) {
  if (!isObject(v)) {
    problems.push(`${path} must be an object, not ${jsonType(v)}`);
    return { address: '' };
  }
  const out: ResultIp = { address: '' };
  const address = str(v, 'address', path, problems, true);
  let family: '4' | '6' | undefined;
  if (address !== undefined) {
    const cidr = parseCidr(address);
    if (cidr === undefined)
      problems.push(`${path}.address ${JSON.stringify(address)} is not an IP address in CIDR form`);
    else family = ipFamily(cidr.address);
    out.address = address;
  }
  const gateway = str(v, 'gateway', path, problems);
  // "" is unset, as Go's net.IP reads it: some plugins write the empty string for "no gateway".
  if (gateway !== undefined && gateway !== '') {
    if (parseIp(gateway) === undefined)
      problems.push(`${path}.gateway ${JSON.stringify(gateway)} is not an IP address`);
    out.gateway = gateway;
  }
  const intf = uint(v, 'interface', path, problems);
  if (intf !== undefined) {
    if (intf >= ifCount) problems.push(`${path}.interface ${intf} does not index the ${ifCount} interfaces`);
    out.interface = intf;
  }
  if (legacy) {
    const ver = v.version;
    if (ver !== undefined && ver !== '4' && ver !== '6') {
      problems.push(`${path}.version must be "4" or "6", not ${JSON.stringify(ver) ?? jsonType(ver)}`);
    } else if (ver !== undefined && family !== undefined && ver !== family) {
      problems.push(`${path}.version "${ver}" does not match address ${JSON.stringify(address)}`);
    } else if (ver !== undefined || family !== undefined) {
      out.version = (ver as '4' | '6' | undefined) ?? family;
    }
  }
  return out;
}

function parseRoute(v: unknown, path: string, problems: string[]): ResultRoute {
  if (!isObject(v)) {
    problems.push(`${path} must be an object, not ${jsonType(v)}`);
    return { dst: '' };
  }
  const out: ResultRoute = { dst: '' };
  const dst = str(v, 'dst', path, problems, true);
  if (dst !== undefined) {
    if (parseCidr(dst) === undefined) problems.push(`${path}.dst ${JSON.stringify(dst)} is not a CIDR`);
    out.dst = dst;
  }
  const gw = str(v, 'gw', path, problems);
  if (gw !== undefined && gw !== '') {
    if (parseIp(gw) === undefined) problems.push(`${path}.gw ${JSON.stringify(gw)} is not an IP address`);
    out.gw = gw;
  }
  for (const key of ['mtu', 'advmss', 'priority', 'table'] as const) {
    const n = uint(v, key, path, problems);
    if (n !== undefined) out[key] = n;
  }
  const scope = uint(v, 'scope', path, problems, 255);
  if (scope !== undefined) out.scope = scope;
  return out;
}

/** Validates a DNS object (result or config). Returns undefined after recording a problem. */
export function parseDns(v: unknown, path: string, problems: string[]): ResultDns | undefined {
  if (v === null) return undefined;
  if (!isObject(v)) {
    problems.push(`${path} must be an object, not ${jsonType(v)}`);
    return undefined;
  }
  const out: ResultDns = {};
  const nameservers = strings(v.nameservers, `${path}.nameservers`, problems);
  if (nameservers !== undefined) {
    for (const ns of nameservers) {
      if (parseIp(ns) === undefined)
        problems.push(`${path}.nameservers entry ${JSON.stringify(ns)} is not an IP address`);
    }
    out.nameservers = nameservers;
  }
  const domain = str(v, 'domain', path, problems);
  if (domain !== undefined) out.domain = domain;
  const search = strings(v.search, `${path}.search`, problems);
  if (search !== undefined) out.search = search;
  const options = strings(v.options, `${path}.options`, problems);
  if (options !== undefined) out.options = options;
  return out;
}

/** True when d says nothing (absent, or every field empty). */
export function dnsIsEmpty(d: ResultDns | undefined): boolean {
  return (
    d === undefined ||
    ((d.nameservers ?? []).length === 0 &&
      (d.domain ?? '') === '' &&
      (d.search ?? []).length === 0 &&
      (d.options ?? []).length === 0)
  );
}

function copyDns(d: ResultDns): ResultDns {
  const out: ResultDns = {};
  if (d.nameservers !== undefined && d.nameservers.length > 0) out.nameservers = [...d.nameservers];
  if (d.domain !== undefined && d.domain !== '') out.domain = d.domain;
  if (d.search !== undefined && d.search.length > 0) out.search = [...d.search];
  if (d.options !== undefined && d.options.length > 0) out.options = [...d.options];
  return out;
}

/**
 * Converts a result to another supported spec version, returning a new object ready for JSON.stringify.
 * Rules (Go's types100/types040 converters):
 * - to 0.3.x/0.4.0: interfaces keep name/mac/sandbox only; every ip gets `version` from its address
 *   ("4" also for IPv4-mapped IPv6); routes are copied as they are.
 * - to 1.x: ips lose `version`; interface and route fields are copied, for 1.0.0 too. Go's types100
 *   serves 1.0.0 and 1.1.0 with one type ("the types did not change"), so the reference plugins emit
 *   the 1.1 fields at 1.0.0 as well: a 1.0 runtime ignores what it does not know, and a 1.0 CHECK's
 *   prevResult keeps the MTUs it compares.
 * - empty interfaces/ips/routes lists and an empty dns are omitted, as Go's omitempty does.
 * - 0.1.0/0.2.0 (ip4/ip6 shape) and unknown versions: CniError(INCOMPATIBLE_VERSION).
 */
export function convertResult(result: CniResult, toVersion: string): CniResult {
  checkVersion(toVersion);
  const toLegacy = isLegacyShape(toVersion);
  const out: CniResult = { cniVersion: toVersion };
  if (result.interfaces !== undefined && result.interfaces.length > 0) {
    out.interfaces = result.interfaces.map((i) => {
      const c: ResultInterface = { name: i.name };
      if (i.mac !== undefined && i.mac !== '') c.mac = i.mac;
      if (!toLegacy && i.mtu !== undefined && i.mtu !== 0) c.mtu = i.mtu;
      if (i.sandbox !== undefined && i.sandbox !== '') c.sandbox = i.sandbox;
      if (!toLegacy && i.socketPath !== undefined && i.socketPath !== '') c.socketPath = i.socketPath;
      if (!toLegacy && i.pciID !== undefined && i.pciID !== '') c.pciID = i.pciID;
      return c;
    });
  }
  if (result.ips !== undefined && result.ips.length > 0) {
    out.ips = result.ips.map((ip) => {
      const c: ResultIp = toLegacy
        ? { version: ipFamily(ip.address.split('/')[0] ?? '') ?? ip.version ?? '6', address: ip.address }
        : { address: ip.address };
      if (ip.gateway !== undefined && ip.gateway !== '') c.gateway = ip.gateway;
      if (ip.interface !== undefined) c.interface = ip.interface;
      return c;
    });
  }
  if (result.routes !== undefined && result.routes.length > 0) {
    out.routes = result.routes.map((r) => {
      const c: ResultRoute = { dst: r.dst };
      if (r.gw !== undefined && r.gw !== '') c.gw = r.gw;
      for (const key of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
        const n = r[key];
        if (n !== undefined && n !== 0) c[key] = n;
      }
      return c;
    });
  }
  if (!dnsIsEmpty(result.dns)) out.dns = copyDns(result.dns!);
  return out;
}

/**
 * The error object for stdout. Any failure becomes a CniError here via toCniError (untyped -> INTERNAL).
 * `cniVersion` should be the request's config version; when it is unknown or unsupported (the config
 * could not be read), LATEST_VERSION is used so the runtime still gets a well-formed error.
 */
export function errorJson(err: unknown, cniVersion?: string): CniErrorJson {
  const version = cniVersion !== undefined && isSupportedForError(cniVersion) ? cniVersion : LATEST_VERSION;
  return toCniError(err).toJSON(version);
}

function isSupportedForError(v: string): boolean {
  try {
    checkVersion(v);
    return true;
  } catch {
    return false;
  }
}
