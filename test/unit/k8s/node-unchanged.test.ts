import { describe, expect, it } from 'vitest';
import { nodeUnchanged } from '../../../pkg/k8s/node-unchanged.ts';
import { type NodeView, sameNodeContent, toNodeView } from '../../../pkg/k8s/views.ts';

// biome-ignore lint/suspicious/noExplicitAny: the tests edit any part of a Node, as a server could send it
type Obj = Record<string, any>;

/** A kubelet's Node: dual-stack, a trellis annotation among others, conditions, an image list. */
function kubeletNode(): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: 'node-7',
      uid: 'uid-node-7',
      resourceVersion: '1001',
      labels: { 'kubernetes.io/hostname': 'node-7' },
      annotations: {
        'trellis.dev/vtep-mac-v4': '0a:58:00:00:00:07',
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
    },
    spec: { podCIDR: '10.244.7.0/24', podCIDRs: ['10.244.7.0/24', 'fd00:10:244:7::/64'] },
    status: {
      addresses: [
        { type: 'InternalIP', address: '192.168.1.7' },
        { type: 'InternalIP', address: 'fd00::7' },
        { type: 'Hostname', address: 'node-7' },
      ],
      conditions: [
        { type: 'Ready', status: 'True', lastHeartbeatTime: '2026-12-02T00:00:00Z' },
        { type: 'NetworkUnavailable', status: 'False', reason: 'TrellisIsUp' },
      ],
      images: [{ names: ['registry.example.com/a@sha256:00'], sizeBytes: 1 }],
    },
  };
}

function viewOf(obj: Obj): NodeView {
  const r = toNodeView(obj);
  if (!r.ok) throw new Error(r.problem);
  return r.node;
}

/** What the informer must conclude: unchanged exactly when the converted view has the same content. */
function truth(obj: Obj, view: NodeView): boolean {
  const r = toNodeView(obj);
  return r.ok && sameNodeContent(r.node, view);
}

const edit =
  (f: (n: Obj) => void) =>
  (n: Obj): Obj => {
    f(n);
    return n;
  };

/** Changes a kubelet and other components make that the view does not hold: seen as unchanged. */
const silent: [string, (n: Obj) => Obj][] = [
  ['heartbeat times', edit((n) => (n.status.conditions[0].lastHeartbeatTime = '2026-12-02T00:05:00Z'))],
  ['the resourceVersion', edit((n) => (n.metadata.resourceVersion = '1002'))],
  ['no resourceVersion', edit((n) => delete n.metadata.resourceVersion)],
  ['images', edit((n) => n.status.images.push({ names: ['b'], sizeBytes: 2 }))],
  ['labels', edit((n) => (n.metadata.labels.role = 'worker'))],
  [
    "another component's annotation",
    edit((n) => (n.metadata.annotations['node.alpha.kubernetes.io/ttl'] = '30')),
  ],
  ['an ExternalIP', edit((n) => n.status.addresses.push({ type: 'ExternalIP', address: '203.0.113.7' }))],
  [
    'a repeated InternalIP',
    edit((n) => n.status.addresses.push({ type: 'InternalIP', address: '192.168.1.7' })),
  ],
  ['the conditions reordered', edit((n) => n.status.conditions.reverse())],
  [
    'NetworkUnavailable=False for another reason',
    edit((n) => (n.status.conditions[1].reason = 'RouteCreated')),
  ],
  ['spec.podCIDR (podCIDRs wins)', edit((n) => (n.spec.podCIDR = '10.244.99.0/24'))],
  ['a taint', edit((n) => (n.spec.taints = [{ key: 'k', effect: 'NoSchedule' }]))],
];

/** Changes the view holds, or objects the conversion refuses: never taken for unchanged. */
const changed: [string, (n: Obj) => Obj][] = [
  ['a pod CIDR', edit((n) => (n.spec.podCIDRs[1] = 'fd00:10:244:8::/64'))],
  ['the pod CIDRs reordered', edit((n) => n.spec.podCIDRs.reverse())],
  ['a pod CIDR gone', edit((n) => n.spec.podCIDRs.pop())],
  ['a pod CIDR added', edit((n) => n.spec.podCIDRs.push('10.245.0.0/24'))],
  ['a pod CIDR spelled otherwise', edit((n) => (n.spec.podCIDRs[1] = 'FD00:10:244:7:0::/64'))],
  ['an invalid pod CIDR', edit((n) => (n.spec.podCIDRs[0] = '10.244.7.0/33'))],
  ['podCIDRs not a list', edit((n) => (n.spec.podCIDRs = '10.244.7.0/24'))],
  ['podCIDRs null, podCIDR left', edit((n) => (n.spec.podCIDRs = null))],
  ['no spec', edit((n) => delete n.spec)],
  ['an InternalIP changed', edit((n) => (n.status.addresses[1].address = 'fd00::8'))],
  ['an InternalIP gone', edit((n) => n.status.addresses.splice(1, 1))],
  ['an InternalIP added', edit((n) => n.status.addresses.push({ type: 'InternalIP', address: '10.0.0.7' }))],
  ['the InternalIPs reordered', edit((n) => n.status.addresses.reverse())],
  [
    'an InternalIP that is not an IP',
    edit((n) => n.status.addresses.push({ type: 'InternalIP', address: 'x' })),
  ],
  ['an InternalIP not a string', edit((n) => n.status.addresses.push({ type: 'InternalIP', address: 7 }))],
  ['addresses not a list', edit((n) => (n.status.addresses = {}))],
  ['no addresses', edit((n) => delete n.status.addresses)],
  [
    "trellis's annotation changed",
    edit((n) => (n.metadata.annotations['trellis.dev/vtep-mac-v4'] = '0a:58:00:00:00:08')),
  ],
  ["trellis's annotation gone", edit((n) => delete n.metadata.annotations['trellis.dev/vtep-mac-v4'])],
  ['a trellis annotation added', edit((n) => (n.metadata.annotations['trellis.dev/heartbeat'] = '1'))],
  ['no annotations', edit((n) => delete n.metadata.annotations)],
  ['an annotation not a string', edit((n) => (n.metadata.annotations['other/x'] = 7))],
  ['annotations not a map', edit((n) => (n.metadata.annotations = ['x']))],
  ['NetworkUnavailable turned True', edit((n) => (n.status.conditions[1].status = 'True'))],
  ['NetworkUnavailable turned Unknown', edit((n) => (n.status.conditions[1].status = 'Unknown'))],
  ['NetworkUnavailable removed', edit((n) => n.status.conditions.splice(1, 1))],
  ['the uid', edit((n) => (n.metadata.uid = 'uid-other'))],
  ['the name', edit((n) => (n.metadata.name = 'node-8'))],
  ['a resourceVersion not a string', edit((n) => (n.metadata.resourceVersion = 1002))],
  ['no metadata', edit((n) => delete n.metadata)],
];

describe('nodeUnchanged: a raw Node against its cached view', () => {
  const view = viewOf(kubeletNode());

  it.each(silent)('takes a change of %s for no change', (_, f) => {
    const obj = f(kubeletNode());
    expect(truth(obj, view)).toBe(true);
    expect(nodeUnchanged(obj, view)).toBe(true);
  });

  it.each(changed)('leaves a change of %s to the conversion', (_, f) => {
    const obj = f(kubeletNode());
    expect(nodeUnchanged(obj, view)).toBe(false);
  });

  it('says unchanged only where the conversion agrees, over thousands of random combinations', () => {
    const all = [...silent, ...changed];
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let fast = 0;
    for (let i = 0; i < 5000; i++) {
      let obj = kubeletNode();
      const steps = 1 + random(3);
      for (let k = 0; k < steps; k++) {
        try {
          obj = all[random(all.length)]![1](obj);
        } catch {
          // An edit of a part an earlier one removed: left out.
        }
      }
      const said = nodeUnchanged(obj, view);
      if (said) {
        fast++;
        expect(truth(obj, view), JSON.stringify(obj)).toBe(true);
      }
    }
    // The fast path is taken for the combinations of silent changes alone, not never.
    expect(fast).toBeGreaterThan(500);
  });

  it('leaves a view with problems, and exotic objects, to the conversion', () => {
    const bad = kubeletNode();
    bad.status.addresses.push({ type: 'InternalIP', address: 'not-an-ip' });
    const withProblems = viewOf(bad);
    expect(withProblems.problems).toHaveLength(1);
    expect(nodeUnchanged(bad, withProblems)).toBe(false);
    // The bad entry gone, the good ones as they were: the view's problem is gone too, so not unchanged.
    expect(sameNodeContent(withProblems, viewOf(kubeletNode()))).toBe(false);
    expect(nodeUnchanged(kubeletNode(), withProblems)).toBe(false);

    const throwing = kubeletNode();
    Object.defineProperty(throwing.status, 'addresses', {
      get() {
        throw new Error('boom');
      },
    });
    expect(nodeUnchanged(throwing, view)).toBe(false);
    expect(nodeUnchanged(null, view)).toBe(false);
    expect(nodeUnchanged('node-7', view)).toBe(false);
  });

  it('compares with a legacy single-CIDR view and one without CIDRs or addresses', () => {
    const legacy = kubeletNode();
    delete legacy.spec.podCIDRs;
    const legacyView = viewOf(legacy);
    expect(nodeUnchanged(kubeletNode(), legacyView)).toBe(false);
    const again = kubeletNode();
    delete again.spec.podCIDRs;
    again.status.conditions[0].lastHeartbeatTime = 'later';
    expect(nodeUnchanged(again, legacyView)).toBe(true);

    const bare = { metadata: { name: 'node-7', uid: 'uid-node-7' } };
    const bareView = viewOf(bare);
    expect(nodeUnchanged({ ...bare, status: {} }, bareView)).toBe(true);
    expect(nodeUnchanged({ ...bare, spec: { podCIDRs: ['10.244.7.0/24'] } }, bareView)).toBe(false);
  });
});
