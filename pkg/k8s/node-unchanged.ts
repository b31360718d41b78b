/**
 * Whether a Node object says, to the agent, what its cached view says, read off the raw object
 * without building a view. Most Node events of a cluster are kubelets' status reports (every Node
 * every 5 minutes, ~17 a second at 5,000 Nodes) that change nothing a view holds; converting each
 * one (toNodeView: CIDRs and addresses parsed and checked, annotations copied) was most of the
 * informer's CPU under them.
 *
 * True only when toNodeView(obj) would give a view with the same content (sameNodeContent): every
 * text equal to the view's, which toNodeView already checked. Anything else, including a spelling of
 * the same CIDR other than the view's canonical one, says false, and the caller converts.
 */
import { sameList } from '../compare.ts';
import {
  type AnnotationFilter,
  isTrellisAnnotation,
  type NodeView,
  networkCondition,
  type Rec,
  rec,
} from './views.ts';

/** `keep`: the annotations the view was made with (toNodeView's). */
export function nodeUnchanged(
  obj: unknown,
  view: NodeView,
  keep: AnnotationFilter = isTrellisAnnotation,
): boolean {
  try {
    const o = rec(obj);
    const meta = rec(o?.metadata);
    if (o === undefined || meta === undefined || meta.name !== view.name) return false;
    // What a problem was made of may be gone from the object while everything good still matches.
    if (view.problems !== undefined) return false;
    if ((meta.uid ?? '') !== view.uid) return false;
    if (meta.resourceVersion !== undefined && typeof meta.resourceVersion !== 'string') return false;
    const spec = rec(o.spec) ?? {};
    const status = rec(o.status) ?? {};
    return (
      samePodCIDRs(spec, view.podCIDRs) &&
      sameInternalIPs(status.addresses, view.internalIPs) &&
      sameOwnAnnotations(meta.annotations, view.annotations, keep) &&
      sameNetworkCondition(status.conditions, view)
    );
  } catch {
    return false; // exotic inputs (throwing getters): the conversion says what is wrong
  }
}

function sameNetworkCondition(conditions: unknown, view: NodeView): boolean {
  const { unavailable, up } = networkCondition(conditions);
  return unavailable === view.networkUnavailable && up === (view.networkUp === true);
}

function samePodCIDRs(spec: Rec, cidrs: readonly string[]): boolean {
  const list = spec.podCIDRs;
  if (list !== undefined && list !== null) return Array.isArray(list) && sameList(list as string[], cidrs);
  if (typeof spec.podCIDR === 'string' && spec.podCIDR !== '')
    return cidrs.length === 1 && spec.podCIDR === cidrs[0];
  return cidrs.length === 0;
}

/**
 * The InternalIP entries, in order, are the view's (a repeat of an earlier one is skipped, as toNodeView
 * does). An entry that is not an IP address equals none of them.
 */
function sameInternalIPs(addresses: unknown, ips: readonly string[]): boolean {
  if (addresses === undefined || addresses === null) return ips.length === 0;
  if (!Array.isArray(addresses)) return false;
  let next = 0;
  for (const a of addresses as unknown[]) {
    const addr = rec(a);
    if (addr?.type !== 'InternalIP') continue;
    if (addr.address === ips[next]) next++;
    else if (!ips.slice(0, next).includes(addr.address as string)) return false;
  }
  return next === ips.length;
}

function sameOwnAnnotations(
  all: unknown,
  own: Readonly<Record<string, string>>,
  keep: AnnotationFilter,
): boolean {
  let seen = 0;
  if (all !== undefined && all !== null) {
    const m = rec(all);
    if (m === undefined) return false;
    for (const k in m) {
      if (!Object.hasOwn(m, k)) continue;
      const v = m[k];
      if (typeof v !== 'string') return false; // the conversion refuses the Node
      if (!keep(k)) continue;
      if (own[k] !== v) return false;
      seen++;
    }
  }
  return seen === Object.keys(own).length;
}
