/**
 * The agent's direct protobuf Node reader (pkg/k8s/node-fields-proto.ts): for any Node the test API
 * server's encoder writes (the whole core/v1 schema, written apart from the reader), the view made
 * from what it reads is the view made from the Node's JSON; bytes written by hand cover what Go's
 * encoder never writes but the wire allows (fields out of order, other wire types, a type after the
 * fields it qualifies, lengths past the end).
 */
import fc from 'fast-check';
import protobuf from 'protobufjs/light.js';
import { describe, expect, it } from 'vitest';
import { readerOf, readNodeFields } from '../../../pkg/k8s/node-fields-proto.ts';
import { decodeNodeListPage } from '../../../pkg/k8s/node-proto.ts';
import { toNodeView } from '../../../pkg/k8s/views.ts';
import type { JsonObject } from '../../support/apiserver/patch.ts';
import { encodeNodeList } from '../../support/apiserver/protobuf.ts';

/** The Node inside a one-item protobuf NodeList, read by the reader under test. */
function readBack(node: JsonObject): unknown {
  const page = decodeNodeListPage(encodeNodeList({ resourceVersion: '1' }, [node]));
  expect(page.items).toHaveLength(1);
  return page.items[0];
}

const conditionType = fc.constantFrom('NetworkUnavailable', 'Ready', 'MemoryPressure', 'NetworkUnavailableX');
const addressType = fc.constantFrom('InternalIP', 'ExternalIP', 'Hostname', 'InternalDNS');
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('not-an-ip', ''));
const cidr = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 8, max: 32 })).map(([a, n]) => `${a}/${n}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 48, max: 128 })).map(([a, n]) => `${a}/${n}`),
  fc.constantFrom('10.1.0.0/24', 'fd00:1::/64', 'garbage'),
);

/** Nodes of every shape a view has to tell apart, with the status a kubelet adds around them. */
const node: fc.Arbitrary<JsonObject> = fc.record(
  {
    metadata: fc.record(
      {
        name: fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
        uid: fc.uuid(),
        resourceVersion: fc.integer({ min: 1 }).map(String),
        labels: fc.dictionary(fc.constantFrom('a', 'kubernetes.io/os'), fc.string()),
        annotations: fc.dictionary(
          fc.oneof(fc.constantFrom('trellis.dev/vtep-mac', 'trellis.dev/report', 'other/x'), fc.string()),
          fc.string(),
        ),
      },
      { requiredKeys: ['name'] },
    ),
    spec: fc.record(
      {
        podCIDR: cidr, // Non-empty: a Go server's JSON omits an empty list, as protobuf cannot carry one.
        podCIDRs: fc.array(cidr, { minLength: 1, maxLength: 3 }),
        providerID: fc.string(),
      },
      {
        requiredKeys: [],
      },
    ),
    status: fc.record(
      {
        conditions: fc.array(
          fc.record(
            {
              type: conditionType,
              status: fc.constantFrom('True', 'False', 'Unknown'),
              reason: fc.string(),
              message: fc.string(),
              lastHeartbeatTime: fc.constant('2026-12-07T10:00:00Z'),
            },
            { requiredKeys: ['type', 'status'] },
          ),
          { maxLength: 6 },
        ),
        addresses: fc.array(fc.record({ type: addressType, address }), { maxLength: 4 }),
        capacity: fc.constant({ cpu: '16', pods: '110' }),
        images: fc.array(fc.record({ names: fc.array(fc.string(), { maxLength: 2 }), sizeBytes: fc.nat() }), {
          maxLength: 3,
        }),
        nodeInfo: fc.constant({ kubeletVersion: 'v1.31.4', architecture: 'amd64' }),
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: ['metadata'] },
);

describe('a protobuf Node read field by field', () => {
  it("gives the view the Node's JSON gives, for any Node", () => {
    fc.assert(
      fc.property(node, (n) => {
        expect(toNodeView(readBack(n))).toEqual(toNodeView(n));
      }),
      { numRuns: 400 },
    );
  });

  it('keeps NetworkUnavailable of the conditions and InternalIP of the addresses, the rest unread', () => {
    const read = readBack({
      metadata: { name: 'n' },
      status: {
        conditions: [
          { type: 'Ready', status: 'True', reason: 'KubeletReady' },
          { type: 'NetworkUnavailable', status: 'False', reason: 'TrellisIsUp', message: 'up' },
        ],
        addresses: [
          { type: 'Hostname', address: 'n' },
          { type: 'InternalIP', address: '10.0.0.1' },
          { type: 'ExternalIP', address: '1.2.3.4' },
        ],
      },
    });
    expect(read).toEqual({
      metadata: { name: 'n' },
      status: {
        conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'TrellisIsUp' }],
        addresses: [{ type: 'InternalIP', address: '10.0.0.1' }],
      },
    });
  });

  it('reads fields in any order and of any wire type, a type after the fields it qualifies', () => {
    const tag = (id: number, wire = 2): number => (id << 3) | wire;
    const w = protobuf.Writer.create();
    w.uint32(tag(3)).fork(); // NodeStatus
    w.uint32(tag(4)).fork(); // a condition: its status and reason before its type
    w.uint32(tag(2)).string('True');
    w.uint32(tag(3)).fork().uint32(tag(1, 0)).int64(1).ldelim(); // lastHeartbeatTime: a Time
    w.uint32(tag(5)).string('NoRoute');
    w.uint32(tag(1)).string('NetworkUnavailable');
    w.ldelim();
    w.uint32(tag(4)).fork().uint32(tag(2)).string('False').ldelim(); // a condition without a type
    w.uint32(tag(5)).fork().uint32(tag(2)).string('10.0.0.9').uint32(tag(1)).string('InternalIP').ldelim();
    w.uint32(tag(77, 0)).uint32(5); // a varint field of a later version
    w.ldelim();
    w.uint32(tag(1)).fork().uint32(tag(1)).string('old').ldelim(); // metadata twice: the last wins
    w.uint32(tag(1)).fork().uint32(tag(6)).string('8').uint32(tag(1)).string('w').ldelim();
    w.uint32(tag(2))
      .fork()
      .uint32(tag(7))
      .string('10.9.0.0/24')
      .uint32(tag(1))
      .string('10.9.0.0/24')
      .ldelim();
    w.uint32(tag(9, 5)).fixed32(1); // a 32-bit field
    const bytes = w.finish();
    const expected = {
      metadata: { resourceVersion: '8', name: 'w' },
      spec: { podCIDR: '10.9.0.0/24', podCIDRs: ['10.9.0.0/24'] },
      status: {
        conditions: [{ type: 'NetworkUnavailable', status: 'True', reason: 'NoRoute' }],
        addresses: [{ type: 'InternalIP', address: '10.0.0.9' }],
      },
    };
    expect(readNodeFields(readerOf(bytes), bytes.length)).toEqual(expected);
    // A plain Uint8Array (not a Buffer) reads the same.
    const plain = new Uint8Array(bytes);
    expect(Buffer.isBuffer(plain)).toBe(false);
    expect(readNodeFields(readerOf(plain), plain.length)).toEqual(expected);
  });

  it('throws RangeError for a length past the end of the bytes or of the message around it', () => {
    const tag = (id: number): number => (id << 3) | 2;
    const status = protobuf.Writer.create().uint32(tag(3)).fork().uint32(tag(4)).uint32(50).finish();
    expect(() => readNodeFields(readerOf(status), status.length)).toThrow(RangeError);
    // A condition's type longer than the condition.
    const inner = protobuf.Writer.create().uint32(tag(1)).uint32(40).finish();
    const cond = protobuf.Writer.create().uint32(tag(3)).fork().uint32(tag(4)).bytes(inner);
    const bytes = cond.ldelim().uint32(tag(1)).bytes(new Uint8Array(60)).finish();
    expect(() => readNodeFields(readerOf(bytes), bytes.length)).toThrow(RangeError);
  });
});
