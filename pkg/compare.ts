/**
 * Code-unit order of two strings: the same on every machine and in every locale. The agent sorts
 * names, CIDR types and timestamps for stable output, never for people; String.prototype.localeCompare
 * would sort by the locale's collation and, the first time it runs, map ICU's collation data (about
 * 3 MB of the agent's resident memory).
 */
export function compareOrdinal(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The same strings in the same order; an absent list is an empty one. */
export function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  const x = a ?? [];
  const y = b ?? [];
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
