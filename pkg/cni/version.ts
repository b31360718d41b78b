/**
 * CNI specification versions: which ones trellis speaks, how they compare, the VERSION reply, and the
 * version checks the reference skel applies before calling a verb.
 */
import { CniCode, CniError } from './errors.ts';
import { jsonType } from './text.ts';

/**
 * The spec versions trellis implements, oldest first. 0.1.0/0.2.0 are left out on purpose: their result
 * shape (ip4/ip6) cannot describe more than one address per family, and no runtime we target sends them.
 * Readonly, not frozen: see CNI_COMMANDS (env.ts).
 */
export const SUPPORTED_VERSIONS: readonly string[] = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** The newest spec version trellis implements. */
export const LATEST_VERSION = '1.1.0';

export interface SpecVersion {
  major: number;
  minor: number;
  patch: number;
}

/**
 * Parses "x.y.z" (also "x" and "x.y", as Go's version.ParseVersion does). Throws
 * CniError(INCOMPATIBLE_VERSION) for anything else, naming the text.
 */
export function parseVersion(version: string): SpecVersion {
  // By hand, not a regex: the shim parses one version per call, and a regex's first use costs it
  // ~0.05 ms of start-up (Bun compiles it then).
  const parts = [0, 0, 0];
  let part = 0;
  let digits = 0;
  for (let i = 0; i < version.length; i++) {
    const c = version.charCodeAt(i);
    if (c === 0x2e && digits > 0 && part < 2) {
      part++;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39 && digits < 6 && !(digits === 1 && parts[part] === 0)) {
      parts[part] = parts[part]! * 10 + (c - 0x30);
      digits++;
    } else {
      digits = -1; // invalid
      break;
    }
  }
  if (digits <= 0) {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `invalid CNI version ${JSON.stringify(version)}: expected MAJOR.MINOR.PATCH`,
    );
  }
  return { major: parts[0]!, minor: parts[1]!, patch: parts[2]! };
}

/** Negative, zero or positive as a is older than, equal to or newer than b. Throws like parseVersion. */
export function compareVersions(a: string, b: string): number {
  const va = parseVersion(a);
  const vb = parseVersion(b);
  return va.major - vb.major || va.minor - vb.minor || va.patch - vb.patch;
}

/** True when a is b or newer. */
export function versionAtLeast(a: string, b: string): boolean {
  return compareVersions(a, b) >= 0;
}

/** Exact membership, as libcni's reconciler does ("1.0" is not "1.0.0"). */
export function isSupportedVersion(version: string): boolean {
  return SUPPORTED_VERSIONS.includes(version);
}

/**
 * Returns the version when trellis supports it; otherwise throws CniError(INCOMPATIBLE_VERSION) whose
 * message names the version and the supported list (the spec's code 1).
 */
export function checkVersion(cniVersion: string): string {
  if (isSupportedVersion(cniVersion)) return cniVersion;
  const supported = SUPPORTED_VERSIONS.map((v) => JSON.stringify(v)).join(', ');
  throw new CniError(
    CniCode.INCOMPATIBLE_VERSION,
    `incompatible CNI versions: config is ${JSON.stringify(cniVersion)}, plugin supports [${supported}]`,
  );
}

/**
 * The earliest spec version that defines each verb; the skel refuses CHECK below 0.4.0 and GC below 1.1.0
 * with code 1, and STATUS arrived with GC in 1.1.0.
 */
export const MIN_VERSION_FOR: Readonly<Record<string, string>> = {
  ADD: '0.3.0',
  DEL: '0.3.0',
  CHECK: '0.4.0',
  GC: '1.1.0',
  STATUS: '1.1.0',
  VERSION: '0.3.0',
};

/** Throws CniError(INCOMPATIBLE_VERSION) when the config's version predates the verb. */
export function checkVersionAllows(cniVersion: string, command: string): void {
  if (!Object.hasOwn(MIN_VERSION_FOR, command)) return;
  const min = MIN_VERSION_FOR[command]!;
  if (!versionAtLeast(cniVersion, min)) {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `config version ${JSON.stringify(cniVersion)} does not allow ${command} (needs ${min} or newer)`,
    );
  }
}

/** The VERSION command's reply. */
export interface VersionReply {
  cniVersion: string;
  supportedVersions: string[];
}

/**
 * The VERSION reply. The 1.x spec says the reply's cniVersion is the one given on input; when the input
 * had none (or not a version) we answer with LATEST_VERSION, as the Go skel does.
 */
export function versionReply(configVersion?: string): VersionReply {
  let cniVersion = LATEST_VERSION;
  if (configVersion !== undefined) {
    try {
      parseVersion(configVersion);
      cniVersion = configVersion;
    } catch {
      // Not a version: fall back to ours rather than echo junk.
    }
  }
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

/**
 * Picks the version to run a configuration list with, as a 1.1 runtime does: from `cniVersion` plus the
 * `cniVersions` array, the highest version that is also in `supported` (libcni: the highest one not newer
 * than the library). Throws CniError(INCOMPATIBLE_VERSION) when no candidate is supported, and
 * CniError(INVALID_CONFIG) when an entry is not a version string.
 */
export function selectConfigVersion(
  conf: { cniVersion?: unknown; cniVersions?: unknown },
  supported: readonly string[] = SUPPORTED_VERSIONS,
): string {
  const candidates: string[] = [];
  if (conf.cniVersion !== undefined) {
    if (typeof conf.cniVersion !== 'string') {
      throw new CniError(CniCode.INVALID_CONFIG, 'cniVersion must be a string');
    }
    candidates.push(conf.cniVersion);
  }
  if (conf.cniVersions !== undefined) {
    if (!Array.isArray(conf.cniVersions)) {
      throw new CniError(CniCode.INVALID_CONFIG, 'cniVersions must be an array of version strings');
    }
    conf.cniVersions.forEach((v: unknown, i: number) => {
      if (typeof v !== 'string') {
        throw new CniError(CniCode.INVALID_CONFIG, `cniVersions[${i}] must be a string`);
      }
      candidates.push(v);
    });
  }
  let best: string | undefined;
  for (const v of candidates) {
    try {
      parseVersion(v);
    } catch {
      throw new CniError(CniCode.INVALID_CONFIG, `invalid CNI version ${JSON.stringify(v)} in configuration`);
    }
    if (!supported.includes(v)) continue;
    if (best === undefined || compareVersions(v, best) > 0) best = v;
  }
  if (best === undefined) {
    const list = candidates.map((v) => JSON.stringify(v)).join(', ');
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `incompatible CNI versions: config offers [${list}], supported are [${supported.map((v) => JSON.stringify(v)).join(', ')}]`,
    );
  }
  return best;
}

/**
 * A network configuration's cniVersion, checked as the reference skel does before any verb: present
 * (libcni reads a missing one as 0.1.0: code 1), a string (7), supported and defining `command` (1).
 */
export function configVersion(raw: Readonly<Record<string, unknown>>, command: string): string {
  const cniVersion = raw.cniVersion;
  if (cniVersion === undefined || cniVersion === '') {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      'network configuration has no cniVersion (libcni reads that as 0.1.0, which trellis does not support)',
    );
  }
  if (typeof cniVersion !== 'string') {
    throw new CniError(
      CniCode.INVALID_CONFIG,
      `invalid network configuration: cniVersion must be a string, not ${jsonType(cniVersion)}`,
    );
  }
  checkVersion(cniVersion);
  checkVersionAllows(cniVersion, command);
  return cniVersion;
}
