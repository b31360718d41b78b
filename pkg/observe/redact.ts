/**
 * Secret scrubbing for log lines, on top of pino's path-based redaction (which only matches the
 * listed paths exactly): a key that names a secret is replaced at any depth and in any letter case,
 * and a bearer token inside a text ("GET /api failed: Authorization: Bearer eyJ...") is cut out.
 * Operators paste agent logs into tickets; a service-account token must never be in them.
 */

export const REDACTED = '[redacted]';

/** Keys whose values are secrets wherever they appear (compared lower-case, '-' and '_' ignored). */
const SECRET_KEYS: ReadonlySet<string> = new Set([
  'token',
  'bearertoken',
  'accesstoken',
  'refreshtoken',
  'idtoken',
  'authorization',
  'proxyauthorization',
  'password',
  'secret',
  'clientkeydata',
  'clientkey',
  'cookie',
  'setcookie',
]);

/** "Bearer <token>" (any case) and "Basic <base64>"; 8+ characters so prose like "Basic checks" stays. */
const BEARER = /\b(Bearer|bearer|BEARER|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g;
const MAX_DEPTH = 8;

function isSecretKey(key: string): boolean {
  return SECRET_KEYS.has(key.toLowerCase().replaceAll(/[-_]/g, ''));
}

/**
 * A URL's userinfo ("https://admin:pass@api:6443", as a kubeconfig's server or a proxy may be
 * written): the scheme kept, the rest up to '@' replaced.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]+@/gi;

/** The text with bearer/basic credentials and URLs' userinfo replaced. */
export function scrubText(text: string): string {
  let out = /earer|EARER|Basic/.test(text) ? text.replace(BEARER, `$1 ${REDACTED}`) : text;
  if (out.includes('@') && out.includes('://')) out = out.replace(URL_USERINFO, `$1${REDACTED}@`);
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * A copy of `value` with secrets replaced; plain objects and arrays are walked (to MAX_DEPTH),
 * anything else (Errors, Buffers, class instances) is kept as is except strings, which are scrubbed.
 * Returns the same object when nothing needed replacing, so the common case allocates nothing.
 */
export function redactSecrets<T>(value: T, depth = 0): T {
  if (typeof value === 'string') return scrubText(value) as T;
  if (depth >= MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const r = redactSecrets(item, depth + 1);
      if (r !== item) {
        copy ??= [...value];
        copy[i] = r;
      }
    });
    return (copy ?? value) as T;
  }
  if (!isPlainObject(value)) return value;
  let copy: Record<string, unknown> | undefined;
  for (const [key, item] of Object.entries(value)) {
    const r =
      isSecretKey(key) && item !== undefined && item !== null ? REDACTED : redactSecrets(item, depth + 1);
    if (r !== item) {
      copy ??= { ...value };
      copy[key] = r;
    }
  }
  return (copy ?? value) as T;
}
