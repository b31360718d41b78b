/**
 * The test bed's address plan, as plain data (no kernel, no processes) so it can be unit tested and
 * printed. Every address here exists only inside the test bed's own namespaces.
 *
 *   segment S (a bridge in the fabric namespace):  10.100.S.0/24, fd00:100:S::/64
 *     router .1 / ::1, control plane (segment 0 only) .2 / ::2, node N at .(10+N) / ::(10+N)
 *   node N's pod CIDRs:                             10.244.N.0/24, fd00:10:244:N::/64
 *   "internet" (beyond the router):                 203.0.113.0/24, 2001:db8:ff::/64
 *
 * A cluster is dual-stack (the default) or single-stack ([4] or [6], like kubeadm's or kind's ipFamily).
 * On a single-stack cluster the nodes' underlay, their Node objects and their pods have that family
 * only; the router, the control plane and the "internet" keep both, as shared infrastructure would.
 */

/** An IP family, numbered as `ip -4`/`ip -6` and the agents' logs number them. */
export type Family = 4 | 6;

export const DUAL_STACK: readonly [4, 6] = Object.freeze([4, 6] as const);

/**
 * Fields `v4` and `v6`, each present exactly when its family is one of F: a `NodePlan<6>` or
 * `TestbedPod<6>` has no `v4` to misuse. Code generic over the family reads them with addrOf().
 */
export type ByFamily<F extends Family, T = string> = (4 extends F
  ? { readonly v4: T }
  : { readonly v4?: undefined }) &
  (6 extends F ? { readonly v6: T } : { readonly v6?: undefined });

/** A Node's spec.podCIDRs in a cluster of families F: [IPv4, IPv6] when dual-stack, else the one. */
export type PodCIDRs<F extends Family> = [Family] extends [F] ? [string, string] : [string];

/** The `v4` or `v6` field of a node plan or pod; throws if the cluster has no such family. */
export function addrOf(x: { readonly v4?: string; readonly v6?: string }, family: Family): string {
  const a = family === 4 ? x.v4 : x.v6;
  if (a === undefined) throw new Error(`no IPv${family} address: the cluster is not IPv${family}`);
  return a;
}

/** Rejects anything but [4], [6] and [4, 6]; returns a frozen copy. */
export function checkFamilies<F extends Family>(families: readonly F[]): readonly F[] {
  const text = JSON.stringify(families);
  if (!['[4]', '[6]', '[4,6]'].includes(text)) {
    throw new RangeError(`families must be [4], [6] or [4, 6], got ${text}`);
  }
  return Object.freeze([...families]);
}

export interface SegmentSpec {
  /** Nodes on this L2 segment at start-up. */
  nodes: number;
}

interface NodePlanBase<F extends Family> {
  /** 1-based, unique for the life of the test bed (a deleted node's index is never reused). */
  readonly index: number;
  readonly name: string;
  readonly segment: number;
  /** The cluster's families: the node's underlay addresses, InternalIPs and pod CIDRs. */
  readonly families: readonly F[];
  /** spec.podCIDRs, in the order of `families`. */
  readonly podCIDRs: PodCIDRs<F>;
  /** The router's addresses on the node's segment (where its default route of each family points). */
  readonly gateway4: string;
  readonly gateway6: string;
}

/** A node's addresses (`v4`, `v6`: on eth0, and its InternalIPs) are those of the cluster's families. */
export type NodePlan<F extends Family = Family> = NodePlanBase<F> & ByFamily<F>;

export const API_PORT = 6443;
export const ECHO_PORT = 7777;
export const INTERNET = Object.freeze({
  v4: '203.0.113.10',
  v6: '2001:db8:ff::10',
  router4: '203.0.113.1',
  router6: '2001:db8:ff::1',
  prefix4: 24,
  prefix6: 64,
});
/** The whole underlay, for the internet namespace's return routes (never the pod CIDRs). */
export const UNDERLAY = Object.freeze({ v4: '10.100.0.0/16', v6: 'fd00:100::/32' });

export const MAX_SEGMENTS = 16;
export const MAX_NODES = 200;

export function segmentAddr(segment: number, host: number, family: 4 | 6): string {
  if (family === 4) return `10.100.${segment}.${host}`;
  // Canonical (RFC 5952) text, as `ip` and the agents print it: segment 0 compresses away.
  return segment === 0 ? `fd00:100::${host}` : `fd00:100:${segment.toString(16)}::${host}`;
}

export function routerAddr(segment: number, family: 4 | 6): string {
  return segmentAddr(segment, 1, family);
}

export function controlPlaneAddr(family: 4 | 6): string {
  return segmentAddr(0, 2, family);
}

export function nodeName(index: number): string {
  return `node-${index}`;
}

export function planNode<F extends Family = Family>(
  index: number,
  segment: number,
  families: readonly F[] = DUAL_STACK as readonly Family[] as readonly F[],
): NodePlan<F> {
  if (!Number.isInteger(index) || index < 1 || index > MAX_NODES) {
    throw new RangeError(`node index must be 1..${MAX_NODES}, got ${index}`);
  }
  if (!Number.isInteger(segment) || segment < 0 || segment >= MAX_SEGMENTS) {
    throw new RangeError(`segment must be 0..${MAX_SEGMENTS - 1}, got ${segment}`);
  }
  const fams = checkFamilies(families);
  const has = (f: Family): boolean => (fams as readonly Family[]).includes(f);
  const cidrs = { 4: `10.244.${index}.0/24`, 6: `fd00:10:244:${index.toString(16)}::/64` };
  const plan = {
    index,
    name: nodeName(index),
    segment,
    families: fams,
    ...(has(4) ? { v4: segmentAddr(segment, 10 + index, 4) } : {}),
    ...(has(6) ? { v6: segmentAddr(segment, 10 + index, 6) } : {}),
    podCIDRs: fams.map((f) => cidrs[f]),
    gateway4: routerAddr(segment, 4),
    gateway6: routerAddr(segment, 6),
  };
  return plan as unknown as NodePlan<F>;
}

/** What code generic over the cluster's families reads from any NodePlan<F>. */
export interface AnyNodePlan {
  readonly name: string;
  readonly families: readonly Family[];
  readonly podCIDRs: readonly string[];
  readonly v4?: string | undefined;
  readonly v6?: string | undefined;
}

/** The node's pod CIDR of one family; throws if the cluster has no such family. */
export function podCIDROf(node: AnyNodePlan, family: Family): string {
  const i = node.families.indexOf(family);
  if (i < 0) throw new Error(`${node.name} has no IPv${family} pod CIDR: the cluster is not IPv${family}`);
  return node.podCIDRs[i]!;
}

/** The node's InternalIPs (its underlay addresses), in the order of its families. */
export function internalIPs(node: AnyNodePlan): string[] {
  return node.families.map((f) => addrOf(node, f));
}

/** The initial nodes for a segment layout, numbered 1.. in segment order. */
export function planNodes<F extends Family = Family>(
  segments: readonly SegmentSpec[],
  families: readonly F[] = DUAL_STACK as readonly Family[] as readonly F[],
): NodePlan<F>[] {
  if (segments.length === 0 || segments.length > MAX_SEGMENTS) {
    throw new RangeError(`segments must have 1..${MAX_SEGMENTS} entries, got ${segments.length}`);
  }
  const out: NodePlan<F>[] = [];
  segments.forEach((s, segment) => {
    if (!Number.isInteger(s.nodes) || s.nodes < 0) {
      throw new RangeError(`segment ${segment}: nodes must be a non-negative integer, got ${s.nodes}`);
    }
    for (let i = 0; i < s.nodes; i++) out.push(planNode(out.length + 1, segment, families));
  });
  if (out.length > MAX_NODES) throw new RangeError(`at most ${MAX_NODES} nodes, got ${out.length}`);
  return out;
}

/**
 * The Kubernetes Node object the test bed creates for a node (what a kubelet + IPAM would set): the
 * InternalIPs and pod CIDRs of the cluster's families only.
 */
export function nodeObject(node: AnyNodePlan): Record<string, unknown> {
  const podCIDRs = [...node.podCIDRs];
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux' },
    },
    spec: { podCIDR: podCIDRs[0], podCIDRs },
    status: {
      addresses: [
        ...internalIPs(node).map((address) => ({ type: 'InternalIP', address })),
        { type: 'Hostname', address: node.name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
    },
  };
}
