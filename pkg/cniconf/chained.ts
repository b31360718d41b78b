/**
 * What other tools put into trellis's config list. A service mesh's CNI installer (Istio, Linkerd,
 * Kuma), Cilium in chaining mode or an operator adding `bandwidth` or `tuning` inserts its plugin into
 * the node's primary list and watches it. The agent writes its list again whenever something of its
 * own changes (the MTU, the versions the chain speaks) and whenever the file differs: a rewrite that
 * dropped those entries would start the two tools fighting, and a pod created in between would start
 * without the other tool's plugin (a mesh's traffic capture). So the list's name and versions and the
 * plugins trellis renders are trellis's; every other plugin entry and top-level field is kept, the
 * entries on the same side of trellis's as they were.
 */
import type { Conflist } from './render.ts';

type PluginConf = Conflist['plugins'][number];

/** The plugin types trellis renders into its list: the only entries it replaces. */
const OWN_PLUGIN_TYPES: ReadonlySet<string> = new Set(['trellis', 'portmap']);
/** The top-level fields trellis sets. */
const OWN_FIELDS: ReadonlySet<string> = new Set(['cniVersion', 'cniVersions', 'name', 'plugins']);

/** Other tools' parts of a config list: plugin entries before and after trellis's, other fields. */
export interface ChainedParts {
  before: PluginConf[];
  after: PluginConf[];
  fields: Record<string, unknown>;
}

/**
 * The other tools' parts of `found` (a parsed config list), or undefined when it is not this network's
 * list (not an object with a plugin list, another `name`, no trellis plugin) or holds nothing of
 * theirs. Entries that are not objects with a type are dropped: the runtime would fail every pod on them.
 */
export function chainedParts(found: unknown, network: string): ChainedParts | undefined {
  if (!isObject(found) || found.name !== network || !Array.isArray(found.plugins)) return undefined;
  const at = found.plugins.findIndex((p) => isObject(p) && p.type === 'trellis');
  if (at < 0) return undefined;
  const other = (p: unknown): p is PluginConf =>
    isObject(p) && typeof p.type === 'string' && p.type !== '' && !OWN_PLUGIN_TYPES.has(p.type);
  const before = found.plugins.slice(0, at).filter(other);
  const after = found.plugins.slice(at + 1).filter(other);
  const fields = Object.fromEntries(Object.entries(found).filter(([k]) => !OWN_FIELDS.has(k)));
  if (before.length === 0 && after.length === 0 && Object.keys(fields).length === 0) return undefined;
  return { before, after, fields };
}

/** The types of the chained plugins, for a log line. */
export function chainedTypes(parts: ChainedParts | undefined): string[] {
  return parts === undefined ? [] : [...parts.before, ...parts.after].map((p) => p.type);
}

/**
 * `ours` with the other tools' parts put back. With another plugin in the chain, the list offers
 * only CNI 1.0.0: libcni >= 1.2 sends the highest `cniVersions` entry to every plugin of the list, and
 * trellis does not know which versions the other plugins speak (1.0.0 is the one plugins and runtimes
 * of the last years all do).
 */
export function withChained(ours: Conflist, parts: ChainedParts | undefined): Conflist {
  if (parts === undefined) return ours;
  const chained = parts.before.length + parts.after.length > 0;
  // Built field by field for the key order of renderConflist's: cniVersion, cniVersions, name, plugins.
  const out = { cniVersion: chained ? '1.0.0' : ours.cniVersion } as Conflist;
  const versions = chained ? ['1.0.0'] : ours.cniVersions;
  if (versions !== undefined) out.cniVersions = versions;
  out.name = ours.name;
  out.plugins = [...structuredClone(parts.before), ...ours.plugins, ...structuredClone(parts.after)];
  // The other fields after trellis's own, as they were (none of them is one of trellis's: OWN_FIELDS).
  return Object.assign(out, structuredClone(parts.fields));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
