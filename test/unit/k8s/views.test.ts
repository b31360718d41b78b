import { describe, expect, it } from 'vitest';
import { isCidr, sameNodeView, toNodeView, toPodView } from '../../../pkg/k8s/index.ts';

const meta = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  uid: `uid-${name}`,
  resourceVersion: '7',
  ...extra,
});

describe('toNodeView', () => {
  const ok: [string, unknown, Record<string, unknown>][] = [
    [
      'dual stack',
      {
        metadata: meta('n1', {
          // Other components' annotations are not kept: the informer holds every Node for good.
          annotations: {
            'trellis.dev/vtep-mac': 'aa:bb:cc:dd:ee:ff',
            'node.alpha.kubernetes.io/ttl': '0',
            'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///run/containerd/containerd.sock',
            'trellis.devious/x': 'not ours either',
          },
        }),
        spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
        status: {
          addresses: [
            { type: 'Hostname', address: 'n1' },
            { type: 'InternalIP', address: '192.168.1.10' },
            { type: 'ExternalIP', address: '203.0.113.7' },
            { type: 'InternalIP', address: 'fd00::10' },
          ],
        },
      },
      {
        name: 'n1',
        uid: 'uid-n1',
        podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
        internalIPs: ['192.168.1.10', 'fd00::10'],
        annotations: { 'trellis.dev/vtep-mac': 'aa:bb:cc:dd:ee:ff' },
        resourceVersion: '7',
      },
    ],
    [
      'IPv6 only',
      {
        metadata: meta('v6'),
        spec: { podCIDRs: ['fd00:1::/64'] },
        status: { addresses: [{ type: 'InternalIP', address: 'fd00::1' }] },
      },
      { podCIDRs: ['fd00:1::/64'], internalIPs: ['fd00::1'], annotations: {} },
    ],
    [
      'no podCIDR yet (not allocated)',
      {
        metadata: meta('fresh'),
        spec: {},
        status: { addresses: [{ type: 'InternalIP', address: '10.0.0.2' }] },
      },
      { podCIDRs: [], internalIPs: ['10.0.0.2'] },
    ],
    [
      'no InternalIP',
      {
        metadata: meta('noip'),
        spec: { podCIDRs: ['10.1.0.0/24'] },
        status: { addresses: [{ type: 'Hostname', address: 'noip' }] },
      },
      { internalIPs: [] },
    ],
    [
      'no spec, no status at all',
      { metadata: meta('bare') },
      { podCIDRs: [], internalIPs: [], annotations: {} },
    ],
    [
      'legacy podCIDR only',
      { metadata: meta('old'), spec: { podCIDR: '10.2.0.0/24' } },
      { podCIDRs: ['10.2.0.0/24'] },
    ],
    [
      'duplicate InternalIP listed once',
      {
        metadata: meta('dup'),
        status: {
          addresses: [
            { type: 'InternalIP', address: '10.0.0.3' },
            { type: 'InternalIP', address: '10.0.0.3' },
          ],
        },
      },
      { internalIPs: ['10.0.0.3'] },
    ],
  ];
  it.each(ok)('%s', (_name, input, expected) => {
    const r = toNodeView(input);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.node).toMatchObject(expected);
    if (r.ok) expect(r.node).not.toHaveProperty('problems');
  });

  it('gives pod CIDRs in canonical text, as the agent derives them (other spellings would read as a change at every pass)', () => {
    const both = toNodeView({
      metadata: meta('n1'),
      spec: { podCIDRs: ['10.244.1.0/24', 'FD00:0010:0244:0010::/064'] },
    });
    expect(both.ok && both.node.podCIDRs).toEqual(['10.244.1.0/24', 'fd00:10:244:10::/64']);
    const legacy = toNodeView({ metadata: meta('n1'), spec: { podCIDR: 'FD00:0:0:1:0:0:0:0/64' } });
    expect(legacy.ok && legacy.node.podCIDRs).toEqual(['fd00:0:0:1::/64']);
  });

  it('carries a NetworkUnavailable=True condition (its reason), networkUp for False, nothing for none', () => {
    const withCondition = (status: string, reason?: string) =>
      toNodeView({
        metadata: meta('n1'),
        spec: { podCIDRs: ['10.244.1.0/24'] },
        status: {
          conditions: [
            { type: 'Ready', status: 'True' },
            { type: 'NetworkUnavailable', status, reason },
          ],
        },
      });
    const t = withCondition('True', 'NoRouteCreated');
    expect(t.ok && t.node.networkUnavailable).toBe('NoRouteCreated');
    const f = withCondition('False', 'TrellisIsUp');
    expect([t.ok, f.ok]).toEqual([true, true]);
    expect(f.ok && 'networkUnavailable' in f.node).toBe(false);
    // False is on the Node (an earlier run's): the agent need not write it again.
    expect([t.ok && t.node.networkUp, f.ok && f.node.networkUp]).toEqual([undefined, true]);
    // A flip is a change of content (the informer passes it on), a heartbeat is not.
    if (t.ok && f.ok) expect(sameNodeView(t.node, f.node)).toBe(false);
  });

  it('drops a malformed InternalIP alone, keeping the others, and says so naming the node and the value', () => {
    const r = toNodeView({
      metadata: meta('n1'),
      spec: { podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
      status: {
        addresses: [
          { type: 'InternalIP', address: '10.100.0.101' },
          { type: 'InternalIP', address: 'fd00:100::101' },
          { type: 'InternalIP', address: 'not-an-ip' },
          { type: 'InternalIP', address: 5 },
        ],
      },
    });
    expect(r).toMatchObject({
      ok: true,
      node: {
        name: 'n1',
        internalIPs: ['10.100.0.101', 'fd00:100::101'],
        problems: [
          'node n1: InternalIP "not-an-ip" is not an IP address; ignored',
          'node n1: InternalIP 5 is not an IP address; ignored',
        ],
      },
    });
  });

  const bad: [string, unknown, RegExp][] = [
    ['null', null, /not an object/],
    ['a string', 'node', /not an object/],
    ['an array', [], /not an object/],
    ['no metadata', { spec: {} }, /no metadata/],
    ['empty name', { metadata: { name: '' } }, /no metadata\.name/],
    ['numeric name', { metadata: { name: 5 } }, /no metadata\.name/],
    ['uid not a string', { metadata: { name: 'x', uid: 3 } }, /uid is not a string/],
    [
      'malformed podCIDR',
      { metadata: meta('x'), spec: { podCIDRs: ['10.0.0.0/33'] } },
      /invalid CIDR "10\.0\.0\.0\/33"/,
    ],
    [
      'a pod CIDR of every address (its blackhole would take the node off the network)',
      { metadata: meta('x'), spec: { podCIDRs: ['0.0.0.0/0'] } },
      /node x: pod CIDR 0\.0\.0\.0\/0 overlaps "this network" space/,
    ],
    [
      'a loopback pod CIDR (legacy spec.podCIDR)',
      { metadata: meta('x'), spec: { podCIDR: '127.1.0.0/24' } },
      /pod CIDR 127\.1\.0\.0\/24 overlaps loopback space \(127\.0\.0\.0\/8\)/,
    ],
    [
      'an IPv6 multicast pod CIDR',
      { metadata: meta('x'), spec: { podCIDRs: ['10.244.1.0/24', 'ff05::/64'] } },
      /pod CIDR ff05::\/64 overlaps multicast space/,
    ],
    ['podCIDR without prefix', { metadata: meta('x'), spec: { podCIDRs: ['10.0.0.0'] } }, /invalid CIDR/],
    ['podCIDRs not a list', { metadata: meta('x'), spec: { podCIDRs: '10.0.0.0/24' } }, /not a list/],
    [
      'two IPv4 podCIDRs',
      { metadata: meta('x'), spec: { podCIDRs: ['10.0.0.0/24', '10.0.1.0/24'] } },
      /more than one CIDR of a family/,
    ],
    [
      'bad legacy podCIDR',
      { metadata: meta('x'), spec: { podCIDR: 'nope' } },
      /spec\.podCIDR is an invalid CIDR/,
    ],
    [
      'addresses not a list',
      { metadata: meta('x'), status: { addresses: {} } },
      /status\.addresses is not a list/,
    ],
    [
      'annotation not a string',
      { metadata: meta('x', { annotations: { a: 1 } }) },
      /annotations\["a"\] is not a string/,
    ],
    [
      'throwing getter',
      {
        metadata: meta('x'),
        get spec(): never {
          throw new Error('boom');
        },
      },
      /unreadable object/,
    ],
  ];
  it.each(bad)('rejects %s without throwing', (_name, input, problem) => {
    const r = toNodeView(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problem).toMatch(problem);
  });
});

describe('toPodView', () => {
  it('reads a running dual-stack pod', () => {
    const r = toPodView({
      metadata: { name: 'p', namespace: 'kube-system', uid: 'u' },
      spec: { nodeName: 'n1' },
      status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }, { ip: 'fd00::5' }] },
    });
    expect(r).toEqual({
      ok: true,
      pod: {
        namespace: 'kube-system',
        name: 'p',
        uid: 'u',
        nodeName: 'n1',
        phase: 'Running',
        podIPs: ['10.244.1.5', 'fd00::5'],
      },
    });
  });
  it('reads an unscheduled pod with defaults', () => {
    const r = toPodView({ metadata: { name: 'p' } });
    expect(r).toEqual({
      ok: true,
      pod: { namespace: 'default', name: 'p', uid: '', nodeName: '', phase: '', podIPs: [] },
    });
  });
  it('rejects a bad pod IP', () => {
    const r = toPodView({ metadata: { name: 'p' }, status: { podIPs: [{ ip: 'x' }] } });
    expect(r.ok).toBe(false);
  });
  it("reads a static pod's mirror: the UID its sandbox runs under is the config.mirror annotation's", () => {
    const mirror = (annotations: Record<string, unknown>) =>
      toPodView({ metadata: { name: 'etcd-n1', namespace: 'kube-system', uid: 'api-uid', annotations } });
    expect(
      mirror({ 'kubernetes.io/config.mirror': 'c0ffee', 'kubernetes.io/config.hash': 'c0ffee' }),
    ).toMatchObject({
      ok: true,
      pod: { uid: 'api-uid', kubeletUid: 'c0ffee' },
    });
    for (const annotations of [
      {},
      { 'kubernetes.io/config.mirror': '' },
      { 'kubernetes.io/config.mirror': 7 },
    ]) {
      const r = mirror(annotations);
      expect(r.ok && r.pod, JSON.stringify(annotations)).not.toHaveProperty('kubeletUid');
    }
  });
});

describe('isCidr', () => {
  it.each([
    ['10.0.0.0/8', true],
    ['0.0.0.0/0', true],
    ['fd00::/128', true],
    ['fd00::/129', false],
    ['10.0.0.0/', false],
    ['10.0.0/24', false],
    ['10.0.0.0/24/1', false],
    [42, false],
  ])('%s -> %s', (s, expected) => expect(isCidr(s)).toBe(expected));
});

describe('sameNodeView', () => {
  const base = {
    name: 'n1',
    uid: 'u1',
    podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
    internalIPs: ['192.168.1.10'],
    annotations: { 'trellis.dev/vtep-mac': 'aa:bb:cc:dd:ee:ff' },
    resourceVersion: '7',
  };
  it('is true for a copy', () => {
    expect(
      sameNodeView(base, { ...base, podCIDRs: [...base.podCIDRs], annotations: { ...base.annotations } }),
    ).toBe(true);
  });
  it.each([
    ['uid', { uid: 'u2' }],
    ['resourceVersion', { resourceVersion: '8' }],
    ['pod CIDRs, same resourceVersion', { podCIDRs: ['10.244.9.0/24'] }],
    ['pod CIDR order', { podCIDRs: ['fd00:10:244:1::/64', '10.244.1.0/24'] }],
    ['InternalIPs', { internalIPs: ['192.168.1.11'] }],
    ['entries left out', { problems: ['node n1: InternalIP "x" is not an IP address; ignored'] }],
    ['an annotation value', { annotations: { 'trellis.dev/vtep-mac': 'aa:bb:cc:dd:ee:00' } }],
    ['an annotation more', { annotations: { ...base.annotations, 'trellis.dev/agent': '{}' } }],
  ])('is false when the %s differ', (_what, change) => {
    expect(sameNodeView(base, { ...base, ...change })).toBe(false);
  });
});
