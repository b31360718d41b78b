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
 * `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`. By hand, not a regex: the shim checks a container ID on every call,
 * and a regex's first use costs ~0.05 ms of its start-up.
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

/** UTF-8 length of a string without allocating (TextEncoder would copy the whole string). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
