/**
 * The plain data trellis needs from Kubernetes objects, and pure conversions into it. No type from
 * @kubernetes/client-node leaves pkg/k8s: these views are what the rest of the agent sees.
 *
 * The conversions never throw. An object we cannot use is reported as a problem, and the caller
 * skips it and says so (a bad Node must not stop routes to the good ones). A bad entry of a list that
 * stands on its own (one InternalIP of several) is left out alone, and said so in the view's `problems`.
 */
import { isIP } from 'node:net';
import { sameList } from '../compare.ts';
import { exact } from '../exact-list.ts';
import { canonicalIp, parseCidr, specialRangeProblem } from '../ip/index.ts';

export interface NodeView {
  readonly name: string;
  readonly uid: string;
  /** spec.podCIDRs (or the legacy spec.podCIDR alone); empty until the node IPAM controller assigns one. */
  readonly podCIDRs: readonly string[];
  /** Every status.addresses entry of type InternalIP that is an IP address, both families, in the server's order. */
  readonly internalIPs: readonly string[];
  /**
   * What was left out of the object, one line each naming the node and the value (an InternalIP that is
   * not an IP address). Part of the content (sameNodeContent): reported when it changes, not with every
   * kubelet status report.
   */
  readonly problems?: readonly string[];
  /** Only the trellis.dev/ ones (see ownAnnotations). */
  readonly annotations: Readonly<Record<string, string>>;
  /**
   * The reason of a NetworkUnavailable condition whose status is True ('' without one); absent when
   * there is no such condition or it is not True. The agent set it False once its network was up.
   */
  readonly networkUnavailable?: string;
  /**
   * A NetworkUnavailable condition whose status is False is on the Node (whoever set it): the agent
   * started again over its own earlier False does not write it again (its lastTransitionTime is when
   * the network came up).
   */
  readonly networkUp?: true;
  readonly resourceVersion: string;
}

export interface PodView {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** spec.nodeName; '' while unscheduled. */
  readonly nodeName: string;
  /** status.phase; '' when absent. */
  readonly phase: string;
  /** status.podIPs[].ip (or the legacy status.podIP alone). */
  readonly podIPs: readonly string[];
  /**
   * A mirror pod's static pod UID (its kubernetes.io/config.mirror annotation): the UID the kubelet
   * runs the pod's sandbox under, and so the K8S_POD_UID its CNI calls carry, not metadata.uid,
   * which the API server gave the mirror. Absent for every other pod.
   */
  readonly kubeletUid?: string;
}

export type ViewResult<T> = { ok: true; value: T } | { ok: false; problem: string };
export type NodeViewResult = { ok: true; node: NodeView } | { ok: false; problem: string };
export type PodViewResult = { ok: true; pod: PodView } | { ok: false; problem: string };

export type Rec = Record<string, unknown>;

/** `v` as a plain object (not null, not an array), or undefined. */
export function rec(v: unknown): Rec | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Rec) : undefined;
}

/**
 * A CIDR (isCidr) with its address in canonical text ("FD00:0010::/64" -> "fd00:10::/64"), host bits
 * kept: compared as text with what the agent derived from it, other spellings read as a change.
 */
function cidrText(s: string): string {
  const slash = s.indexOf('/');
  return `${canonicalIp(s.slice(0, slash)) ?? s.slice(0, slash)}/${Number(s.slice(slash + 1))}`;
}

/** "10.244.1.0/24", "fd00:10:244:1::/64": an address of either family and a prefix length in range. */
export function isCidr(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const slash = s.indexOf('/');
  if (slash < 0) return false;
  const addr = s.slice(0, slash);
  const len = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(len)) return false;
  const family = isIP(addr);
  return family !== 0 && Number(len) <= (family === 4 ? 32 : 128);
}

/** The object's "name" for problem reports, whatever shape it has. */
export function describeObject(obj: unknown): string {
  const meta = rec(rec(obj)?.metadata);
  const name = typeof meta?.name === 'string' ? meta.name : '<unnamed>';
  return typeof meta?.namespace === 'string' && meta.namespace !== '' ? `${meta.namespace}/${name}` : name;
}

/** The prefix of the only annotations trellis reads (its VTEP MACs, direct subnets, its report). */
export const TRELLIS_ANNOTATION_PREFIX = 'trellis.dev/';

/** Which annotations a view keeps, by key. */
export type AnnotationFilter = (key: string) => boolean;

/** trellis's own annotations: the default (the CLI's coverage reads every agent's report). */
export const isTrellisAnnotation: AnnotationFilter = (key) => key.startsWith(TRELLIS_ANNOTATION_PREFIX);

/**
 * Nodes carry kilobytes of other components' annotations; the informer keeps a view of every Node for
 * the agent's lifetime, so only those `keep` names are kept.
 */
function keptAnnotations(all: Record<string, string>, keep: AnnotationFilter): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(all)) if (keep(k)) out[k] = v;
  return out;
}

function stringMap(v: unknown, what: string): ViewResult<Record<string, string>> {
  if (v === undefined || v === null) return { ok: true, value: {} };
  const m = rec(v);
  if (m === undefined) return { ok: false, problem: `${what} is not a map` };
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(m)) {
    if (typeof x !== 'string') return { ok: false, problem: `${what}[${JSON.stringify(k)}] is not a string` };
    out[k] = x;
  }
  return { ok: true, value: out };
}

function identity(
  obj: unknown,
  kind: string,
): ViewResult<{ meta: Rec; name: string; uid: string; resourceVersion: string }> {
  const o = rec(obj);
  if (o === undefined) return { ok: false, problem: `${kind} is not an object` };
  const meta = rec(o.metadata);
  if (meta === undefined) return { ok: false, problem: `${kind} has no metadata` };
  if (typeof meta.name !== 'string' || meta.name === '')
    return { ok: false, problem: `${kind} has no metadata.name` };
  const uid = meta.uid ?? '';
  const rv = meta.resourceVersion ?? '';
  if (typeof uid !== 'string')
    return { ok: false, problem: `${kind} ${meta.name}: metadata.uid is not a string` };
  if (typeof rv !== 'string')
    return { ok: false, problem: `${kind} ${meta.name}: metadata.resourceVersion is not a string` };
  return { ok: true, value: { meta, name: meta.name, uid, resourceVersion: rv } };
}

export function toNodeView(obj: unknown, keep: AnnotationFilter = isTrellisAnnotation): NodeViewResult {
  try {
    const id = identity(obj, 'node');
    if (!id.ok) return id;
    const { meta, name, uid, resourceVersion } = id.value;
    const o = obj as Rec;
    const spec = rec(o.spec) ?? {};
    const status = rec(o.status) ?? {};

    let podCIDRs: string[];
    if (spec.podCIDRs !== undefined && spec.podCIDRs !== null) {
      if (!Array.isArray(spec.podCIDRs))
        return { ok: false, problem: `node ${name}: spec.podCIDRs is not a list` };
      podCIDRs = [];
      for (const c of spec.podCIDRs as unknown[]) {
        if (!isCidr(c))
          return {
            ok: false,
            problem: `node ${name}: spec.podCIDRs has an invalid CIDR ${JSON.stringify(c)}`,
          };
        podCIDRs.push(cidrText(c));
      }
    } else if (typeof spec.podCIDR === 'string' && spec.podCIDR !== '') {
      if (!isCidr(spec.podCIDR))
        return {
          ok: false,
          problem: `node ${name}: spec.podCIDR is an invalid CIDR ${JSON.stringify(spec.podCIDR)}`,
        };
      podCIDRs = [cidrText(spec.podCIDR)];
    } else {
      podCIDRs = [];
    }
    for (const c of podCIDRs) {
      const parsed = parseCidr(c, { strict: false });
      const special = parsed === undefined ? undefined : specialRangeProblem(parsed, c);
      if (special !== undefined) return { ok: false, problem: `node ${name}: pod CIDR ${special}` };
    }
    const families = podCIDRs.map((c) => isIP(c.slice(0, c.indexOf('/'))));
    if (new Set(families).size !== families.length) {
      return {
        ok: false,
        problem: `node ${name}: spec.podCIDRs has more than one CIDR of a family: ${podCIDRs.join(', ')}`,
      };
    }

    const internalIPs: string[] = [];
    const problems: string[] = [];
    if (status.addresses !== undefined && status.addresses !== null) {
      if (!Array.isArray(status.addresses))
        return { ok: false, problem: `node ${name}: status.addresses is not a list` };
      for (const a of status.addresses as unknown[]) {
        const addr = rec(a);
        if (addr?.type !== 'InternalIP') continue;
        // Each address stands alone: a bad one must not take the node's good ones (both families'
        // routes, or this node's own start) with it.
        if (typeof addr.address !== 'string' || isIP(addr.address) === 0) {
          problems.push(
            `node ${name}: InternalIP ${JSON.stringify(addr.address)} is not an IP address; ignored`,
          );
        } else if (!internalIPs.includes(addr.address)) {
          internalIPs.push(addr.address);
        }
      }
    }

    const annotations = stringMap(meta.annotations, `node ${name}: metadata.annotations`);
    if (!annotations.ok) return annotations;
    const { unavailable, up } = networkCondition(status.conditions);
    return {
      ok: true,
      node: {
        name,
        uid,
        // Kept as long as the Node is: without their push-grown spare slots (exact-list.ts).
        podCIDRs: exact(podCIDRs),
        internalIPs: exact(internalIPs),
        annotations: keptAnnotations(annotations.value, keep),
        ...(unavailable === undefined ? {} : { networkUnavailable: unavailable }),
        ...(up ? { networkUp: true as const } : {}),
        resourceVersion,
        ...(problems.length === 0 ? {} : { problems }),
      },
    };
  } catch (err) {
    // Exotic inputs (throwing getters, proxies): still never throw.
    return { ok: false, problem: `node ${describeObject(obj)}: unreadable object (${String(err)})` };
  }
}

/**
 * What the Node's NetworkUnavailable condition says, read in one pass over the conditions: the reason
 * when it is True ('' without one), and whether it is False (NodeView.networkUnavailable, networkUp).
 */
export function networkCondition(conditions: unknown): { unavailable?: string; up: boolean } {
  if (!Array.isArray(conditions)) return { up: false };
  for (const c of conditions as unknown[]) {
    const r = rec(c);
    if (r?.type !== 'NetworkUnavailable') continue;
    if (r.status === 'True') return { unavailable: typeof r.reason === 'string' ? r.reason : '', up: false };
    return { up: r.status === 'False' };
  }
  return { up: false };
}

/**
 * Whether two views of a Node say the same. The resourceVersion alone does not tell: a server whose
 * history was reset (etcd restored from a snapshot) hands out old resourceVersions again, for other
 * content.
 */
export function sameNodeView(a: NodeView, b: NodeView): boolean {
  return a.resourceVersion === b.resourceVersion && sameNodeContent(a, b);
}

/**
 * Whether two views of a Node say the same to the agent, whatever their resourceVersions: a kubelet's
 * status report (heartbeat times, other conditions, images) changes none of what a view holds.
 */
export function sameNodeContent(a: NodeView, b: NodeView): boolean {
  return (
    a.name === b.name &&
    a.uid === b.uid &&
    a.networkUnavailable === b.networkUnavailable &&
    a.networkUp === b.networkUp &&
    sameList(a.podCIDRs, b.podCIDRs) &&
    sameList(a.internalIPs, b.internalIPs) &&
    sameList(a.problems, b.problems) &&
    sameAnnotations(a.annotations, b.annotations)
  );
}

function sameAnnotations(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/** On a static pod's mirror: the static pod's UID (the kubelet's hash of its manifest). */
const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

export function toPodView(obj: unknown): PodViewResult {
  try {
    const id = identity(obj, 'pod');
    if (!id.ok) return id;
    const { meta, name, uid } = id.value;
    const o = obj as Rec;
    const spec = rec(o.spec) ?? {};
    const status = rec(o.status) ?? {};
    const namespace =
      typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
    const nodeName = typeof spec.nodeName === 'string' ? spec.nodeName : '';
    const phase = typeof status.phase === 'string' ? status.phase : '';
    const podIPs: string[] = [];
    if (Array.isArray(status.podIPs)) {
      for (const p of status.podIPs as unknown[]) {
        const ip = rec(p)?.ip;
        if (typeof ip !== 'string' || isIP(ip) === 0) {
          return {
            ok: false,
            problem: `pod ${namespace}/${name}: status.podIPs has an invalid IP ${JSON.stringify(ip)}`,
          };
        }
        podIPs.push(ip);
      }
    } else if (typeof status.podIP === 'string' && status.podIP !== '') {
      if (isIP(status.podIP) === 0)
        return { ok: false, problem: `pod ${namespace}/${name}: status.podIP is not an IP address` };
      podIPs.push(status.podIP);
    }
    const mirror = rec(meta.annotations)?.[MIRROR_ANNOTATION];
    const kubeletUid = typeof mirror === 'string' && mirror !== '' && mirror !== uid ? mirror : undefined;
    return {
      ok: true,
      pod: {
        namespace,
        name,
        uid,
        nodeName,
        phase,
        podIPs,
        ...(kubeletUid === undefined ? {} : { kubeletUid }),
      },
    };
  } catch (err) {
    return { ok: false, problem: `pod ${describeObject(obj)}: unreadable object (${String(err)})` };
  }
}
