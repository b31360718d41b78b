/**
 * The test bed's address plan, as plain data (no kernel, no processes) so it can be unit tested and
 * printed. Every address here exists only inside the test bed's own namespaces.
 *
 *   segment S (a bridge in the fabric namespace):  10.100.S.0/24, fd00:100:S::/64
 *     router .1 / ::1, control plane (segment 0 only) .2 / ::2, node N at .(10+N) / ::(10+N)
 *   node N's pod CIDRs:                             10.244.N.0/24, fd00:10:244:N::/64
 *   "internet" (beyond the router):                 203.0.113.0/24, 2001:db8:ff::/64
 */

export interface SegmentSpec {
  /** Nodes on this L2 segment at start-up. */
  nodes: number;
}

export interface NodePlan {
  /** 1-based, unique for the life of the test bed (a deleted node's index is never reused). */
  index: number;
  name: string;
  segment: number;
  v4: string;
  v6: string;
  podCIDRs: [string, string];
  /** Where this node's default routes point. */
  gateway4: string;
  gateway6: string;
}

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

export function planNode(index: number, segment: number): NodePlan {
  if (!Number.isInteger(index) || index < 1 || index > MAX_NODES) {
    throw new RangeError(`node index must be 1..${MAX_NODES}, got ${index}`);
  }
  if (!Number.isInteger(segment) || segment < 0 || segment >= MAX_SEGMENTS) {
    throw new RangeError(`segment must be 0..${MAX_SEGMENTS - 1}, got ${segment}`);
  }
  return {
    index,
    name: nodeName(index),
    segment,
    v4: segmentAddr(segment, 10 + index, 4),
    v6: segmentAddr(segment, 10 + index, 6),
    podCIDRs: [`10.244.${index}.0/24`, `fd00:10:244:${index.toString(16)}::/64`],
    gateway4: routerAddr(segment, 4),
    gateway6: routerAddr(segment, 6),
  };
}

/** The initial nodes for a segment layout, numbered 1.. in segment order. */
export function planNodes(segments: readonly SegmentSpec[]): NodePlan[] {
  if (segments.length === 0 || segments.length > MAX_SEGMENTS) {
    throw new RangeError(`segments must have 1..${MAX_SEGMENTS} entries, got ${segments.length}`);
  }
  const out: NodePlan[] = [];
  segments.forEach((s, segment) => {
    if (!Number.isInteger(s.nodes) || s.nodes < 0) {
      throw new RangeError(`segment ${segment}: nodes must be a non-negative integer, got ${s.nodes}`);
    }
    for (let i = 0; i < s.nodes; i++) out.push(planNode(out.length + 1, segment));
  });
  if (out.length > MAX_NODES) throw new RangeError(`at most ${MAX_NODES} nodes, got ${out.length}`);
  return out;
}

/** The Kubernetes Node object the test bed creates for a node (what a kubelet + IPAM would set). */
export function nodeObject(node: NodePlan): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux' },
    },
    spec: { podCIDR: node.podCIDRs[0], podCIDRs: [...node.podCIDRs] },
    status: {
      addresses: [
        { type: 'InternalIP', address: node.v4 },
        { type: 'InternalIP', address: node.v6 },
        { type: 'Hostname', address: node.name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
    },
  };
}
