/**
 * The agent's protobuf Node list reader (pkg/k8s/node-list-proto.ts) against the test API server's
 * encoder (test/support/apiserver/protobuf.ts, the whole Node schema) and against bytes written field
 * by field from generated.proto's numbers: the views it yields are the JSON path's, whatever else
 * the Nodes carry.
 */
import protobuf from 'protobufjs/light.js';
import { describe, expect, it } from 'vitest';
import {
  continueFromProtoHead,
  decodeNodeListPage,
  decodeStatus,
  isProtobuf,
  ProtobufBodyError,
} from '../../../pkg/k8s/node-list-proto.ts';
import { toNodeView } from '../../../pkg/k8s/views.ts';
import type { JsonObject } from '../../support/apiserver/patch.ts';
import {
  encodeNodeList,
  encodeStatus,
  NotEncodable,
  prefersProtobuf,
} from '../../support/apiserver/protobuf.ts';

const beat = '2026-12-07T10:00:00Z';

/** A Node as a kubelet, the node IPAM controller and other controllers leave it. */
function kubeletNode(
  i: number,
  extra: { spec?: JsonObject; metadata?: JsonObject; status?: JsonObject } = {},
) {
  return {
    metadata: {
      name: `n-${i}`,
      uid: `0000000${i}-aaaa-4bbb-8ccc-dddddddddddd`,
      resourceVersion: String(100 + i),
      creationTimestamp: '2026-11-01T00:00:00Z',
      labels: { 'kubernetes.io/hostname': `n-${i}`, 'node-role.kubernetes.io/worker': '' },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'trellis.dev/vtep-mac': `02:00:00:00:00:0${i}`,
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
      managedFields: [
        {
          manager: 'kubelet',
          operation: 'Update',
          apiVersion: 'v1',
          time: beat,
          fieldsType: 'FieldsV1',
          fieldsV1: { 'f:status': {} },
        },
      ],
      ...extra.metadata,
    },
    spec: {
      podCIDR: `10.244.${i}.0/24`,
      podCIDRs: [`10.244.${i}.0/24`, `fd00:10:244:${i}::/64`],
      providerID: `aws:///eu-west-1a/i-${i}`,
      taints: [{ key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule', timeAdded: beat }],
      ...extra.spec,
    },
    status: {
      capacity: { cpu: '16', memory: '65851484Ki', pods: '110' },
      allocatable: { cpu: '15890m', memory: '64700508Ki', pods: '110' },
      conditions: [
        {
          type: 'NetworkUnavailable',
          status: 'False',
          reason: 'TrellisReady',
          message: 'up',
          lastHeartbeatTime: beat,
          lastTransitionTime: beat,
        },
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'ready',
          lastHeartbeatTime: beat,
          lastTransitionTime: beat,
        },
      ],
      addresses: [
        { type: 'InternalIP', address: `192.168.0.${i}` },
        { type: 'InternalIP', address: `fd00::${i}` },
        { type: 'Hostname', address: `n-${i}` },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: 'm',
        systemUUID: 's',
        bootID: 'b',
        kernelVersion: '6.1',
        osImage: 'Debian',
        containerRuntimeVersion: 'containerd://1.7',
        kubeletVersion: 'v1.31.4',
        kubeProxyVersion: 'v1.31.4',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
      images: [
        {
          names: [`registry.example.com/app@sha256:${'ab'.repeat(32)}`, 'registry.example.com/app:v1'],
          sizeBytes: 123_456_789,
        },
      ],
      ...extra.status,
    },
  };
}

const nodes = [
  kubeletNode(1),
  // Legacy: podCIDR alone (JSON without podCIDRs; protobuf has no empty list to tell apart).
  kubeletNode(2, { spec: { podCIDRs: null } }),
  // Not yet given a CIDR, no annotations, NetworkUnavailable True.
  kubeletNode(3, {
    spec: { podCIDR: null, podCIDRs: null },
    metadata: { annotations: null },
    status: {
      conditions: [
        {
          type: 'NetworkUnavailable',
          status: 'True',
          reason: 'NoRouteCreated',
          lastHeartbeatTime: beat,
          lastTransitionTime: beat,
        },
      ],
    },
  }),
  // An InternalIP that is not an address: the view's problem, the same from both encodings.
  kubeletNode(4, { status: { addresses: [{ type: 'InternalIP', address: 'not-an-ip' }] } }),
];

/** A field's key: its number and wire type (2: length-delimited). */
const tag = (id: number, wire = 2): number => (id << 3) | wire;

/** Field `id` of `w`: a message of string fields, given as [number, value] pairs. */
function strings(w: protobuf.Writer, id: number, fields: [number, string][]): void {
  w.uint32(tag(id)).fork();
  for (const [n, v] of fields) w.uint32(tag(n)).string(v);
  w.ldelim();
}

const listMeta = { resourceVersion: '4711', continue: 'eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDcxMX0' };

describe('a protobuf NodeList page', () => {
  it("gives each Node's view as its JSON does, and the page's token and resourceVersion", () => {
    const page = decodeNodeListPage(encodeNodeList(listMeta, nodes));
    expect(page.metadata).toEqual(listMeta);
    expect(page.items.map((o) => toNodeView(o))).toEqual(nodes.map((n) => toNodeView(n)));
    expect(toNodeView(page.items[0]).ok && toNodeView(page.items[0])).toMatchObject({
      node: {
        name: 'n-1',
        podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
        internalIPs: ['192.168.0.1', 'fd00::1'],
        annotations: { 'trellis.dev/vtep-mac': '02:00:00:00:00:01' },
        networkUp: true,
      },
    });
  });

  it('holds only the fields a view is made of: the rest is stepped over', () => {
    const [item] = decodeNodeListPage(encodeNodeList(listMeta, [kubeletNode(1)])).items as JsonObject[];
    expect(Object.keys(item!.metadata as JsonObject).sort()).toEqual([
      'annotations',
      'name',
      'resourceVersion',
      'uid',
    ]);
    expect(Object.keys(item!.spec as JsonObject).sort()).toEqual(['podCIDR', 'podCIDRs']);
    expect(Object.keys(item!.status as JsonObject).sort()).toEqual(['addresses', 'conditions']);
    expect((item!.status as { conditions: JsonObject[] }).conditions[0]).toEqual({
      type: 'NetworkUnavailable',
      status: 'False',
      reason: 'TrellisReady',
    });
  });

  it("reads bytes written field by field with generated.proto's numbers, unknown fields of every wire type skipped", () => {
    const body = protobuf.Writer.create();
    strings(body, 1, [
      [1, 'v1'],
      [2, 'NodeList'],
    ]); // runtime.Unknown.typeMeta { apiVersion, kind }
    const list = protobuf.Writer.create();
    strings(list, 1, [
      [2, '77'],
      [3, 'next'],
    ]); // ListMeta { resourceVersion, continue }
    list.uint32(tag(2)).fork(); // items[0]: Node
    list.uint32(tag(1)).fork(); // ObjectMeta
    list.uint32(tag(1)).string('w-1');
    list.uint32(tag(5)).string('uid-1');
    list.uint32(tag(6)).string('12');
    list.uint32(tag(7, 0)).int64(3); // generation: a varint to skip
    strings(list, 12, [
      [1, 'trellis.dev/x'],
      [2, 'y'],
    ]); // an annotations entry { key, value }
    list.ldelim();
    list.uint32(tag(2)).fork(); // NodeSpec
    list.uint32(tag(1)).string('10.1.0.0/24');
    list.uint32(tag(4, 0)).bool(true); // unschedulable
    list.uint32(tag(7)).string('10.1.0.0/24');
    list.ldelim();
    list.uint32(tag(3)).fork(); // NodeStatus
    strings(list, 4, [
      [1, 'NetworkUnavailable'],
      [2, 'True'],
      [5, 'Why'],
    ]); // a condition
    strings(list, 5, [
      [1, 'InternalIP'],
      [2, '10.0.0.1'],
    ]); // an address
    list.uint32(tag(8)).bytes(new Uint8Array(5000).fill(0xff)); // images: skipped by length
    list.uint32(tag(99, 5)).fixed32(7); // a field of a later version, 32-bit
    list.uint32(tag(98, 1)).fixed64(7); // and 64-bit
    list.ldelim();
    list.ldelim();
    body.uint32(tag(2)).bytes(list.finish());
    const bytes = Buffer.concat([Buffer.from('k8s\0', 'latin1'), body.finish()]);

    const page = decodeNodeListPage(bytes);
    expect(page.metadata).toEqual({ resourceVersion: '77', continue: 'next' });
    expect(page.items).toEqual([
      {
        metadata: { name: 'w-1', uid: 'uid-1', resourceVersion: '12', annotations: { 'trellis.dev/x': 'y' } },
        spec: { podCIDR: '10.1.0.0/24', podCIDRs: ['10.1.0.0/24'] },
        status: {
          conditions: [{ type: 'NetworkUnavailable', status: 'True', reason: 'Why' }],
          addresses: [{ type: 'InternalIP', address: '10.0.0.1' }],
        },
      },
    ]);
    expect(continueFromProtoHead(bytes)).toBe('next');
  });

  it('is refused, saying why, when it is not a readable NodeList', () => {
    const status = encodeStatus({
      kind: 'Status',
      apiVersion: 'v1',
      status: 'Failure',
      code: 410,
      reason: 'Expired',
    });
    expect(() => decodeNodeListPage(status)).toThrow(
      new ProtobufBodyError('the answer is a Status, not a NodeList'),
    );
    expect(() => decodeNodeListPage(Buffer.from('{"items":[]}'))).toThrow(
      /does not start with the protobuf prefix/,
    );
    const whole = encodeNodeList(listMeta, nodes);
    expect(() => decodeNodeListPage(whole.subarray(0, whole.length - 100))).toThrow(ProtobufBodyError);
  });
});

describe('the continue token from the head of a protobuf page', () => {
  it('is "more" until the list metadata is whole, then the token; none on the last page', () => {
    const whole = encodeNodeList(listMeta, nodes);
    const end = whole.indexOf(Buffer.from(listMeta.continue)) + listMeta.continue.length;
    for (let n = 0; n < end; n++) expect(continueFromProtoHead(whole.subarray(0, n))).toBe('more');
    expect(continueFromProtoHead(whole.subarray(0, end))).toBe(listMeta.continue);
    expect(continueFromProtoHead(encodeNodeList({ resourceVersion: '5' }, nodes))).toBeUndefined();
    expect(continueFromProtoHead(Buffer.from('{"kind":"NodeList"'))).toBeUndefined();
  });
});

describe('a protobuf Status', () => {
  it('reads as the JSON Status it stands for', () => {
    const status = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'too many requests',
      reason: 'TooManyRequests',
      details: { causes: [{ reason: 'Throttled', message: 'slow down' }], retryAfterSeconds: 2 },
      code: 429,
    };
    expect(decodeStatus(encodeStatus(status))).toEqual({
      status: 'Failure',
      message: 'too many requests',
      reason: 'TooManyRequests',
      details: { causes: [{ reason: 'Throttled', message: 'slow down' }], retryAfterSeconds: 2 },
      code: 429,
    });
    expect(decodeStatus(Buffer.from('not protobuf'))).toBeUndefined();
  });
});

describe('content negotiation', () => {
  it('names protobuf by its media type, parameters and case aside', () => {
    expect(isProtobuf('application/vnd.kubernetes.protobuf')).toBe(true);
    expect(isProtobuf('Application/VND.kubernetes.protobuf; charset=binary')).toBe(true);
    expect(isProtobuf('application/vnd.kubernetes.protobuf;stream=watch')).toBe(true);
    expect(isProtobuf('application/json')).toBe(false);
    expect(isProtobuf(undefined)).toBe(false);
  });

  it("the test API server answers protobuf when the Accept header's first choice is it", () => {
    expect(prefersProtobuf('application/vnd.kubernetes.protobuf, application/json')).toBe(true);
    expect(prefersProtobuf('application/json, application/vnd.kubernetes.protobuf')).toBe(false);
    expect(prefersProtobuf('application/json;q=0.5, application/vnd.kubernetes.protobuf')).toBe(true);
    expect(prefersProtobuf('application/vnd.kubernetes.protobuf;q=0, */*')).toBe(false);
    expect(prefersProtobuf(undefined)).toBe(false);
  });

  it('the test API server cannot encode a malformed Node (a JSON-only test input)', () => {
    expect(() => encodeNodeList(listMeta, [{ metadata: { name: 42 } }])).toThrow(NotEncodable);
    expect(() => encodeNodeList(listMeta, [{ metadata: { name: 'x' }, spec: { podCIDRs: 'a' } }])).toThrow(
      NotEncodable,
    );
    expect(() => encodeNodeList(listMeta, [{ metadata: { name: 'x' }, bogus: {} }])).toThrow(/no such field/);
  });
});
