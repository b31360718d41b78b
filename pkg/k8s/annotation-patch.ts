/** The merge patch that brings an object's annotations to what an owner wants. Pure. */

/**
 * `wanted` maps each key the caller owns to its value, or to undefined where the key must be absent
 * (null in a JSON merge patch removes it). Keys the caller does not name are left alone. Undefined when
 * the annotations already say so: every Node write wakes every agent's watch.
 */
export function annotationPatch(
  current: Readonly<Record<string, string>> | undefined,
  wanted: Readonly<Record<string, string | undefined>>,
): Record<string, string | null> | undefined {
  const patch: Record<string, string | null> = {};
  for (const [key, want] of Object.entries(wanted)) {
    const have = current?.[key];
    if (want === undefined) {
      if (have !== undefined) patch[key] = null;
    } else if (have !== want) {
      patch[key] = want;
    }
  }
  return Object.keys(patch).length === 0 ? undefined : patch;
}
