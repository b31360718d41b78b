/**
 * Parse results by text. A reconcile pass parses the same few thousand Node addresses, pod CIDRs and
 * kernel routes every time (5,000 nodes: ~40k parses per pass); the values are immutable, so they are
 * shared (frozen) and a cache is simply dropped when it grows past a bound. `null` records a text that
 * does not parse, so bad input is not re-parsed either.
 */

const CACHE_MAX = 200_000;

export type ParseCache<T> = Map<string, T | null>;

export function newParseCache<T extends object>(): ParseCache<T> {
  return new Map();
}

export function remember<T extends object>(
  cache: ParseCache<T>,
  key: string,
  value: T | undefined,
): T | undefined {
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(key, value === undefined ? null : Object.freeze(value));
  return value;
}
