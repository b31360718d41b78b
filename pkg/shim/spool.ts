/**
 * The DEL spool, pure part: file naming and content. When the agent is down (or too slow), the
 * shim records a DEL here and reports success, because a failed DEL makes the runtime retry
 * forever and a DEL is idempotent; the agent replays the spool first thing on start.
 *
 * One file per (containerId, ifname): `<containerId>.<ifname>.del.json`, holding exactly the request
 * line the shim would have sent. '.' and '%' inside the two parts are percent-escaped so that
 * distinct pairs never share a name ("a.b"+"c" vs "a"+"b.c"); typical ids and ifnames contain
 * neither, so the names stay readable.
 */
import { interfaceNameProblem } from '../cni/env.ts';
import { CniCode, CniError } from '../cni/errors.ts';
import { isCniName, quote, utf8Length } from '../cni/text.ts';
import { type AgentRequest, decodeRequest } from './protocol.ts';

export const SPOOL_SUFFIX = '.del.json';
/** Temporary files (`<name>.<pid>.<random>.tmp`) are never listed as entries. */
export const SPOOL_TMP_SUFFIX = '.tmp';
/** Corrupt files are renamed to `<name>.bad` so they stop being replayed but stay for inspection. */
export const SPOOL_BAD_SUFFIX = '.bad';

/** Linux NAME_MAX minus room for the temporary-file suffix. */
const MAX_NAME_BYTES = 200;

function escapePart(s: string): string {
  return s.replaceAll('%', '%25').replaceAll('.', '%2E');
}

// parseCniEnv enforces the spec's container id and interface name rules already; they are re-checked
// here because these strings become a file name.
export function validateContainerId(containerId: string): void {
  if (!isCniName(containerId)) {
    throw new CniError(
      CniCode.INVALID_ENV,
      `invalid CNI_CONTAINERID ${quote(containerId)}: must start with a letter or digit, then letters, digits, '_', '.' or '-'`,
    );
  }
}

export function validateIfname(ifname: string): void {
  const problem = interfaceNameProblem(ifname);
  if (problem !== undefined) {
    throw new CniError(CniCode.INVALID_ENV, `invalid CNI_IFNAME ${quote(ifname)}: ${problem}`);
  }
}

/** The spool file name for a (containerId, ifname) pair. Throws CniError INVALID_ENV on unsafe input. */
export function spoolFileName(containerId: string, ifname: string): string {
  validateContainerId(containerId);
  validateIfname(ifname);
  const name = `${escapePart(containerId)}.${escapePart(ifname)}${SPOOL_SUFFIX}`;
  if (utf8Length(name) <= MAX_NAME_BYTES) return name;
  // Absurdly long container ids: keep a readable prefix and make the name unique by a digest.
  return `${escapePart(containerId).slice(0, 64)}-${fnv1a64(`${containerId}\0${ifname}`)}${SPOOL_SUFFIX}`;
}

/**
 * FNV-1a, 64-bit, as hex. Not node:crypto: loading it costs the Bun-compiled shim ~8 ms at start-up,
 * and a spool name only needs to be unique, not secret.
 */
function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(s)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}

export function isSpoolFileName(name: string): boolean {
  return name.endsWith(SPOOL_SUFFIX) && !name.startsWith('.');
}

/**
 * Decodes a spool file's content and checks it is a DEL for the pair its name says. Throws
 * CniError (BAD_REQUEST) describing what is wrong.
 */
export function decodeSpoolEntry(fileName: string, content: string): AgentRequest {
  const request = decodeRequest(content);
  const { CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_IFNAME: ifname } = request.env;
  if (command !== 'DEL') {
    throw new CniError(CniCode.BAD_REQUEST, `spool file holds a ${JSON.stringify(command)} request, not DEL`);
  }
  if (containerId === undefined || ifname === undefined) {
    throw new CniError(CniCode.BAD_REQUEST, 'spooled DEL lacks CNI_CONTAINERID or CNI_IFNAME');
  }
  const expected = spoolFileName(containerId, ifname);
  if (expected !== fileName) {
    throw new CniError(
      CniCode.BAD_REQUEST,
      `spool file name ${JSON.stringify(fileName)} does not match its content (expected ${JSON.stringify(expected)})`,
    );
  }
  return request;
}
