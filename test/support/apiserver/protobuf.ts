/**
 * The test API server's protobuf encoding (application/vnd.kubernetes.protobuf) of Node lists and
 * Status answers, as kube-apiserver writes them: "k8s\0", then a runtime.Unknown whose `raw` is the
 * object. The schema is the whole of what a Node can hold (k8s.io/api core/v1 and apimachinery meta/v1
 * generated.proto), written apart from the agent's reader (pkg/k8s/node-proto.ts), which knows
 * only the fields it reads: the fields it steps over are really on the wire.
 *
 * An object protobuf cannot carry (a test's malformed Node, storable only unchecked: a number where
 * a string goes, a field no Node has) is NotEncodable, and the list is answered in JSON, the encoding
 * such a test means to exercise.
 */
import protobuf from 'protobufjs/light.js';
import type { Json, JsonObject } from './patch.ts';

export const PROTOBUF_CONTENT_TYPE = 'application/vnd.kubernetes.protobuf';

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

type FieldJson = { id: number; type: string; rule?: 'repeated'; keyType?: 'string' };
const f = (id: number, type: string): FieldJson => ({ id, type });
const list = (id: number, type: string): FieldJson => ({ id, type, rule: 'repeated' });
const map = (id: number, type: string): FieldJson => ({ id, keyType: 'string', type });
// proto2, as generated.proto is (protobufjs takes JSON schemas as proto3 otherwise).
const message = (fields: Record<string, FieldJson>) => ({ edition: 'proto2', fields });

const schema = protobuf.Root.fromJSON({
  nested: {
    // runtime
    RuntimeTypeMeta: message({ apiVersion: f(1, 'string'), kind: f(2, 'string') }),
    Unknown: message({
      typeMeta: f(1, 'RuntimeTypeMeta'),
      raw: f(2, 'bytes'),
      contentEncoding: f(3, 'string'),
      contentType: f(4, 'string'),
    }),
    // resource
    Quantity: message({ string: f(1, 'string') }),
    // meta/v1
    Time: message({ seconds: f(1, 'int64'), nanos: f(2, 'int32') }),
    ListMeta: message({
      selfLink: f(1, 'string'),
      resourceVersion: f(2, 'string'),
      continue: f(3, 'string'),
      remainingItemCount: f(4, 'int64'),
    }),
    OwnerReference: message({
      kind: f(1, 'string'),
      name: f(3, 'string'),
      uid: f(4, 'string'),
      apiVersion: f(5, 'string'),
      controller: f(6, 'bool'),
      blockOwnerDeletion: f(7, 'bool'),
    }),
    FieldsV1: message({ Raw: f(1, 'bytes') }),
    ManagedFieldsEntry: message({
      manager: f(1, 'string'),
      operation: f(2, 'string'),
      apiVersion: f(3, 'string'),
      time: f(4, 'Time'),
      fieldsType: f(6, 'string'),
      fieldsV1: f(7, 'FieldsV1'),
      subresource: f(8, 'string'),
    }),
    ObjectMeta: message({
      name: f(1, 'string'),
      generateName: f(2, 'string'),
      namespace: f(3, 'string'),
      selfLink: f(4, 'string'),
      uid: f(5, 'string'),
      resourceVersion: f(6, 'string'),
      generation: f(7, 'int64'),
      creationTimestamp: f(8, 'Time'),
      deletionTimestamp: f(9, 'Time'),
      deletionGracePeriodSeconds: f(10, 'int64'),
      labels: map(11, 'string'),
      annotations: map(12, 'string'),
      ownerReferences: list(13, 'OwnerReference'),
      finalizers: list(14, 'string'),
      managedFields: list(17, 'ManagedFieldsEntry'),
    }),
    StatusCause: message({ reason: f(1, 'string'), message: f(2, 'string'), field: f(3, 'string') }),
    StatusDetails: message({
      name: f(1, 'string'),
      group: f(2, 'string'),
      kind: f(3, 'string'),
      causes: list(4, 'StatusCause'),
      retryAfterSeconds: f(5, 'int32'),
      uid: f(6, 'string'),
    }),
    Status: message({
      metadata: f(1, 'ListMeta'),
      status: f(2, 'string'),
      message: f(3, 'string'),
      reason: f(4, 'string'),
      details: f(5, 'StatusDetails'),
      code: f(6, 'int32'),
    }),
    // core/v1
    Taint: message({
      key: f(1, 'string'),
      value: f(2, 'string'),
      effect: f(3, 'string'),
      timeAdded: f(4, 'Time'),
    }),
    ConfigMapNodeConfigSource: message({
      namespace: f(1, 'string'),
      name: f(2, 'string'),
      uid: f(3, 'string'),
      resourceVersion: f(4, 'string'),
      kubeletConfigKey: f(5, 'string'),
    }),
    NodeConfigSource: message({ configMap: f(2, 'ConfigMapNodeConfigSource') }),
    NodeSpec: message({
      podCIDR: f(1, 'string'),
      externalID: f(2, 'string'),
      providerID: f(3, 'string'),
      unschedulable: f(4, 'bool'),
      taints: list(5, 'Taint'),
      configSource: f(6, 'NodeConfigSource'),
      podCIDRs: list(7, 'string'),
    }),
    NodeCondition: message({
      type: f(1, 'string'),
      status: f(2, 'string'),
      lastHeartbeatTime: f(3, 'Time'),
      lastTransitionTime: f(4, 'Time'),
      reason: f(5, 'string'),
      message: f(6, 'string'),
    }),
    NodeAddress: message({ type: f(1, 'string'), address: f(2, 'string') }),
    DaemonEndpoint: message({ Port: f(1, 'int32') }),
    NodeDaemonEndpoints: message({ kubeletEndpoint: f(1, 'DaemonEndpoint') }),
    NodeSwapStatus: message({ capacity: f(1, 'int64') }),
    NodeSystemInfo: message({
      machineID: f(1, 'string'),
      systemUUID: f(2, 'string'),
      bootID: f(3, 'string'),
      kernelVersion: f(4, 'string'),
      osImage: f(5, 'string'),
      containerRuntimeVersion: f(6, 'string'),
      kubeletVersion: f(7, 'string'),
      kubeProxyVersion: f(8, 'string'),
      operatingSystem: f(9, 'string'),
      architecture: f(10, 'string'),
      swap: f(11, 'NodeSwapStatus'),
    }),
    ContainerImage: message({ names: list(1, 'string'), sizeBytes: f(2, 'int64') }),
    AttachedVolume: message({ name: f(1, 'string'), devicePath: f(2, 'string') }),
    NodeConfigStatus: message({
      assigned: f(1, 'NodeConfigSource'),
      active: f(2, 'NodeConfigSource'),
      lastKnownGood: f(3, 'NodeConfigSource'),
      error: f(4, 'string'),
    }),
    NodeRuntimeHandlerFeatures: message({
      recursiveReadOnlyMounts: f(1, 'bool'),
      userNamespaces: f(2, 'bool'),
    }),
    NodeRuntimeHandler: message({ name: f(1, 'string'), features: f(2, 'NodeRuntimeHandlerFeatures') }),
    NodeFeatures: message({ supplementalGroupsPolicy: f(1, 'bool') }),
    NodeStatus: message({
      capacity: map(1, 'Quantity'),
      allocatable: map(2, 'Quantity'),
      phase: f(3, 'string'),
      conditions: list(4, 'NodeCondition'),
      addresses: list(5, 'NodeAddress'),
      daemonEndpoints: f(6, 'NodeDaemonEndpoints'),
      nodeInfo: f(7, 'NodeSystemInfo'),
      images: list(8, 'ContainerImage'),
      volumesInUse: list(9, 'string'),
      volumesAttached: list(10, 'AttachedVolume'),
      config: f(11, 'NodeConfigStatus'),
      runtimeHandlers: list(12, 'NodeRuntimeHandler'),
      features: f(13, 'NodeFeatures'),
    }),
    Node: message({ metadata: f(1, 'ObjectMeta'), spec: f(2, 'NodeSpec'), status: f(3, 'NodeStatus') }),
    NodeList: message({ metadata: f(1, 'ListMeta'), items: list(2, 'Node') }),
    // runtime and meta/v1: what a protobuf watch streams
    RawExtension: message({ raw: f(1, 'bytes') }),
    WatchEvent: message({ type: f(1, 'string'), object: f(2, 'RawExtension') }),
  },
});

const Unknown = schema.lookupType('Unknown');
const WatchEvent = schema.lookupType('WatchEvent');

/** What a protobuf watch answers with (kube-apiserver adds the stream parameter). */
export const PROTOBUF_WATCH_CONTENT_TYPE = `${PROTOBUF_CONTENT_TYPE};stream=watch`;

/** A JSON object the schema has no place for; its path says where. */
export class NotEncodable extends Error {}

/**
 * Whether a request's Accept prefers protobuf: its first media range (by q, then order) of the ones
 * this server writes (protobuf, JSON, anything).
 */
export function prefersProtobuf(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  const ranges = accept
    .split(',')
    .map((part, order) => {
      const [type = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase());
      const q = params.find((p) => p.startsWith('q='));
      return { type, q: q === undefined ? 1 : Number(q.slice(2)), order };
    })
    .filter(
      (r) => r.q > 0 && [PROTOBUF_CONTENT_TYPE, 'application/json', 'application/*', '*/*'].includes(r.type),
    )
    .sort((a, b) => b.q - a.q || a.order - b.order);
  return ranges[0]?.type === PROTOBUF_CONTENT_TYPE;
}

/** RFC 3339 (what JSON carries) as meta/v1 Time. */
function time(v: Json, path: string): { seconds: number; nanos: number } {
  const ms = typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(ms)) throw new NotEncodable(`${path}: ${JSON.stringify(v)} is not a time`);
  return { seconds: Math.floor(ms / 1000), nanos: (ms - Math.floor(ms / 1000) * 1000) * 1_000_000 };
}

const SCALAR: Record<string, (v: Json) => boolean> = {
  string: (v) => typeof v === 'string',
  bool: (v) => typeof v === 'boolean',
  int32: (v) => Number.isInteger(v),
  int64: (v) => Number.isInteger(v),
};

/** One value of `field`'s type, from its JSON. */
function value(field: protobuf.Field, v: Json, path: string): unknown {
  const t = field.resolvedType;
  if (t instanceof protobuf.Type) {
    if (t.name === 'Time') return time(v, path);
    if (t.name === 'Quantity') {
      if (typeof v !== 'string') throw new NotEncodable(`${path}: ${JSON.stringify(v)} is not a quantity`);
      return { string: v };
    }
    if (t.name === 'FieldsV1') return { Raw: Buffer.from(JSON.stringify(v)) };
    return shape(t, v, path);
  }
  const ok = SCALAR[field.type];
  if (ok === undefined || !ok(v))
    throw new NotEncodable(`${path}: ${JSON.stringify(v)} is not a ${field.type}`.slice(0, 200));
  return v;
}

/** A JSON object as what protobufjs encodes as `type`; NotEncodable where it does not fit. */
function shape(type: protobuf.Type, json: Json, path: string): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new NotEncodable(`${path}: not an object`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) {
    // JSON's null is Go's zero value: nothing on the wire.
    if (v === null) continue;
    const field = type.fields[k];
    if (field === undefined) throw new NotEncodable(`${path}.${k}: no such field in ${type.name}`);
    const at = `${path}.${k}`;
    if (field.repeated) {
      if (!Array.isArray(v)) throw new NotEncodable(`${at}: not a list`);
      out[k] = v.map((x, i) => value(field, x, `${at}[${i}]`));
    } else if (field.map) {
      if (typeof v !== 'object' || Array.isArray(v)) throw new NotEncodable(`${at}: not a map`);
      out[k] = Object.fromEntries(
        Object.entries(v).map(([mk, mv]) => [mk, value(field, mv, `${at}[${mk}]`)]),
      );
    } else {
      out[k] = value(field, v, at);
    }
  }
  return out;
}

function encode(typeName: string, json: JsonObject, path: string): Uint8Array {
  const type = schema.lookupType(typeName);
  return type.encode(type.fromObject(shape(type, json, path))).finish();
}

/** A message's bytes, wrapped as the serializer does. */
function envelope(kind: string, raw: Uint8Array): Buffer {
  const unknown = Unknown.encode(
    Unknown.fromObject({ typeMeta: { apiVersion: 'v1', kind }, raw, contentEncoding: '', contentType: '' }),
  ).finish();
  return Buffer.concat([MAGIC, unknown]);
}

/**
 * Each stored Node version's encoding, kept as long as that version is: protobufjs from JSON is many
 * times slower than Go's generated code, and a list's time in the benches should be the client's
 * (bench/route-convergence.ts splits off the server's share).
 */
const nodeBytes = new WeakMap<JsonObject, Uint8Array>();

function encodeNode(node: JsonObject): Uint8Array {
  let bytes = nodeBytes.get(node);
  if (bytes === undefined) {
    const { kind: _k, apiVersion: _a, ...rest } = node;
    bytes = encode('Node', rest, 'Node');
    nodeBytes.set(node, bytes);
  }
  return bytes;
}

/**
 * Encodes a Node version as it is stored, as kube-apiserver has its objects decoded in memory, ready
 * to write: a list's first answer then costs what later ones do. False for a Node protobuf cannot
 * carry: its lists are answered in JSON, and so are Node watches from then on.
 */
export function encodeNodeAhead(node: JsonObject): boolean {
  try {
    encodeNode(node);
    return true;
  } catch (err) {
    if (!(err instanceof NotEncodable)) throw err;
    return false;
  }
}

/** A NodeList in protobuf (NotEncodable if an item cannot be). */
export function encodeNodeList(metadata: JsonObject, items: readonly JsonObject[]): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).bytes(encode('ListMeta', metadata, 'NodeList.metadata'));
  for (const item of items) w.uint32((2 << 3) | 2).bytes(encodeNode(item));
  return envelope('NodeList', w.finish());
}

/** A Status (an error answer) in protobuf. */
export function encodeStatus(status: JsonObject): Buffer {
  const { kind: _k, apiVersion: _a, ...rest } = status;
  return envelope('Status', encode('Status', rest, 'Status'));
}

/**
 * One event of a Node watch as kube-apiserver streams it in protobuf: a 4-byte big-endian length,
 * then a bare WatchEvent (the stream serializer writes no envelope) whose object's `raw` is the Node,
 * or an ERROR's Status, in its envelope (the watch encoder embeds it with the plain serializer).
 * NotEncodable if the object cannot be.
 */
export function encodeWatchFrame(type: string, object: JsonObject): Buffer {
  const inner = type === 'ERROR' ? encodeStatus(object) : envelope('Node', encodeNode(object));
  const event = WatchEvent.encode(WatchEvent.fromObject({ type, object: { raw: inner } })).finish();
  const length = Buffer.alloc(4);
  length.writeUInt32BE(event.length);
  return Buffer.concat([length, event]);
}
