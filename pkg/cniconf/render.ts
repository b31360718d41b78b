/**
 * The CNI config list the runtime reads, rendered from the one template in cni-conf/. Pure: objects are
 * built and stringified, never spliced into text.
 *
 * Versions. The list says cniVersion 1.0.0 and `cniVersions: ["1.0.0"]`. containerd 1.6 (libcni 1.1) reads
 * `cniVersion` and ignores `cniVersions`; libcni >= 1.2 picks the HIGHEST entry of `cniVersions` it knows
 * and sends that to EVERY plugin in the chain. Debian's portmap 1.1.1 speaks CNI up to 1.0.0 and rejects a
 * 1.1.0 config, so 1.1.0 may only be listed where the chained plugins support it (callers opt in).
 */

import { isAbsolute, normalize } from 'node:path';
import template from '../../cni-conf/10-trellis.conflist.json' with { type: 'json' };
import { MTU_MAX, MTU_MIN } from '../cni/netconf.ts';

export const CONFLIST_FILE_NAME = '10-trellis.conflist';
export const KNOWN_CNI_VERSIONS = ['1.0.0', '1.1.0'] as const;

export interface DnsConfig {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface ConflistOptions {
  /** The agent's CNI socket the shim connects to. */
  socket: string;
  /** Where the shim spools DEL requests while the agent is unreachable. */
  spoolDir: string;
  /** MTU of the pod interfaces. */
  mtu: number;
  /** Optional DNS settings handed to the runtime in the plugin's config. */
  dns?: DnsConfig;
  /** Default: the template's (1.0.0). Must be one of `cniVersions`. */
  cniVersion?: string;
  /** Default: the template's (["1.0.0"]); see the file comment before adding 1.1.0. */
  cniVersions?: string[];
  /** Chain the portmap plugin for hostPort support (default true). */
  portmap?: boolean;
}

export class ConflistConfigError extends Error {
  readonly setting: string;
  readonly value: unknown;

  constructor(setting: string, value: unknown, reason: string) {
    super(`invalid ${setting} ${JSON.stringify(value)}: ${reason}`);
    this.name = 'ConflistConfigError';
    this.setting = setting;
    this.value = value;
  }
}

interface PluginConf {
  type: string;
  [key: string]: unknown;
}

export interface Conflist {
  cniVersion: string;
  cniVersions?: string[];
  name: string;
  plugins: PluginConf[];
}

function absPath(setting: string, p: unknown): string {
  if (typeof p !== 'string' || p === '' || !isAbsolute(p) || normalize(p) !== p || p.includes('\0')) {
    throw new ConflistConfigError(setting, p, 'expected a normalized absolute path');
  }
  return p;
}

function stringList(setting: string, v: unknown): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x !== '')) {
    throw new ConflistConfigError(setting, v, 'expected an array of non-empty strings');
  }
  return [...v];
}

function knownVersion(setting: string, v: unknown): string {
  if (typeof v !== 'string' || !(KNOWN_CNI_VERSIONS as readonly string[]).includes(v)) {
    throw new ConflistConfigError(setting, v, `expected one of ${KNOWN_CNI_VERSIONS.join(', ')}`);
  }
  return v;
}

function dnsConf(dns: DnsConfig): DnsConfig {
  if (typeof dns !== 'object' || dns === null)
    throw new ConflistConfigError('dns', dns, 'expected an object');
  const out: DnsConfig = {};
  if (dns.nameservers !== undefined) out.nameservers = stringList('dns.nameservers', dns.nameservers);
  if (dns.domain !== undefined) {
    if (typeof dns.domain !== 'string' || dns.domain === '') {
      throw new ConflistConfigError('dns.domain', dns.domain, 'expected a non-empty string');
    }
    out.domain = dns.domain;
  }
  if (dns.search !== undefined) out.search = stringList('dns.search', dns.search);
  if (dns.options !== undefined) out.options = stringList('dns.options', dns.options);
  return out;
}

/** The `name` of the network the agent publishes (the template's): attachments recorded without one are its. */
export const PUBLISHED_NETWORK_NAME: string = template.name;

/** The config list as an object: the template with the options applied. Throws ConflistConfigError. */
export function buildConflist(opts: ConflistOptions): Conflist {
  const base = structuredClone(template) as Conflist;
  const trellis = base.plugins.find((p) => p.type === 'trellis');
  const portmap = base.plugins.find((p) => p.type === 'portmap');
  if (trellis === undefined || portmap === undefined) {
    throw new Error('cni-conf template must contain a trellis and a portmap plugin');
  }
  // The shim's netconf parser enforces the same bounds: a config it would reject is never published.
  if (!Number.isInteger(opts.mtu) || opts.mtu < MTU_MIN || opts.mtu > MTU_MAX) {
    throw new ConflistConfigError('mtu', opts.mtu, `expected an integer between ${MTU_MIN} and ${MTU_MAX}`);
  }
  trellis.socket = absPath('socket', opts.socket);
  trellis.spoolDir = absPath('spoolDir', opts.spoolDir);
  trellis.mtu = opts.mtu;
  if (opts.dns !== undefined) trellis.dns = dnsConf(opts.dns);

  const versions = (opts.cniVersions ?? base.cniVersions ?? [base.cniVersion]).map((v, i) =>
    knownVersion(`cniVersions[${i}]`, v),
  );
  if (versions.length === 0) throw new ConflistConfigError('cniVersions', versions, 'must not be empty');
  const cniVersion = knownVersion('cniVersion', opts.cniVersion ?? base.cniVersion);
  if (!versions.includes(cniVersion)) {
    throw new ConflistConfigError(
      'cniVersion',
      cniVersion,
      `must be one of cniVersions (${versions.join(', ')})`,
    );
  }
  const plugins = opts.portmap === false ? [trellis] : [trellis, portmap];
  return { cniVersion, cniVersions: versions, name: base.name, plugins };
}

/** The file content: 2-space JSON and a trailing newline (deterministic, so "unchanged" is a byte compare). */
export function renderConflist(opts: ConflistOptions): string {
  return conflistText(buildConflist(opts));
}

/** A config list's file content, as renderConflist writes it. */
export function conflistText(list: Conflist): string {
  return `${JSON.stringify(list, null, 2)}\n`;
}
