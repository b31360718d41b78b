/**
 * Small helpers shared by the CNI parsers: how values are quoted in error messages and how plain JSON
 * objects are recognised. Kept apart so every parser words its messages the same way.
 */

const MAX_QUOTED = 80;

/** JSON-quotes a value for an error message, escaping control characters and truncating long text. */
export function quote(value: string): string {
  const short = value.length > MAX_QUOTED ? `${value.slice(0, MAX_QUOTED)}...` : value;
  return JSON.stringify(short);
}

/** Names the JSON type of a value the way an operator reads it ("number", "array", "null"). */
export function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The container ID and network name rule shared by the spec, skel and libcni:
 * `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`. By hand, not a regex: the shim checks a container ID when it answers
 * without the agent (a spooled DEL, an agent down), and a regex's first use costs a fresh process
 * ~0.05 ms.
 */
export function isCniName(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (!alnum && (i === 0 || (c !== 0x5f && c !== 0x2e && c !== 0x2d))) return false;
  }
  return true;
}

/**
 * UTF-8 length of a string. Native, not a loop over the characters: the shim measures its request
 * line (~600 characters from a Kubernetes runtime) and the agent's answer, and in a process that runs
 * its code once, JavaScriptCore interprets such a loop and then compiles it midway; that was ~0.6 ms
 * of every ADD through the shim. Nor `Buffer.byteLength`: Bun sets up its Buffer on first use, ~0.2
 * ms of the shim's run, where TextEncoder is one the shim has already used (bench/HISTORY.md). An
 * unpaired surrogate counts 3 bytes, as the encoder writes U+FFFD.
 */
export function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** Why a configuration's `name` is not a usable network name, or undefined when it is. */
export function cniNameProblem(name: unknown): string | undefined {
  if (name === undefined || name === null || name === '') return 'name is required';
  if (typeof name !== 'string') return `name must be a string, not ${jsonType(name)}`;
  if (!isCniName(name)) {
    return `name ${quote(name)} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`;
  }
  return undefined;
}
