/**
 * Nodes in Kubernetes' protobuf encoding (what client-go's kubelet and kube-proxy ask for), listed
 * and watched, read with only the fields a NodeView is made of. A kubelet's Node is kilobytes of
 * status (images, capacity, node info, heartbeats) the agent never reads: as JSON every byte of it
 * becomes objects before the view drops them (at 5,000 Nodes ~100 MB of garbage, more than half of
 * the first list's CPU); in protobuf the fields a view does not read are stepped over by their
 * length. The Nodes themselves are read by node-fields-proto.ts; the schema below is the rest.
 *
 * Field numbers are k8s.io/api's core/v1 and k8s.io/apimachinery's meta/v1 and runtime
 * generated.proto (stable: protobuf fields are never renumbered). A body is "k8s\0" and a
 * runtime.Unknown whose `raw` is the NodeList (apimachinery's protobuf serializer). A watch is a
 * stream of frames, each a 4-byte big-endian length and a bare meta/v1 WatchEvent (the stream
 * serializer writes no envelope) whose object's `raw` is the Node, or the Status of an ERROR, in its
 * envelope (apiserver's watch encoder embeds it with the plain serializer).
 *
 * The decoded page has the JSON shape with JSON's omitempty: a field absent on the wire (an empty
 * list or map) is absent, so views.ts reads both encodings the same way.
 */
import protobuf from 'protobufjs/light.js';
import { fieldEnd, readerOf, readNodeFields } from './node-fields-proto.ts';
import type { Page } from './transport.ts';

export const PROTOBUF_CONTENT_TYPE = 'application/vnd.kubernetes.protobuf';

/** What a Node list or watch asks for: protobuf, or JSON from a server (or proxy) without it. */
export const NODES_ACCEPT = `${PROTOBUF_CONTENT_TYPE}, application/json`;

const MAGIC = [0x6b, 0x38, 0x73, 0x00];

const field = (id: number, type: string, repeated = false): protobuf.IField =>
  repeated ? { id, type, rule: 'repeated' } : { id, type };
// proto2, as generated.proto is: strings are read as they are (proto3's UTF-8 check, in JavaScript,
// was a third of the decoding).
const message = (fields: Record<string, protobuf.IField>) => ({ edition: 'proto2', fields });

const schema = protobuf.Root.fromJSON({
  nested: {
    // runtime
    TypeMeta: message({ apiVersion: field(1, 'string'), kind: field(2, 'string') }),
    Unknown: message({
      typeMeta: field(1, 'TypeMeta'),
      raw: field(2, 'bytes'),
      contentEncoding: field(3, 'string'),
      contentType: field(4, 'string'),
    }),
    // meta/v1
    ListMeta: message({ resourceVersion: field(2, 'string'), continue: field(3, 'string') }),
    StatusCause: message({
      reason: field(1, 'string'),
      message: field(2, 'string'),
      field: field(3, 'string'),
    }),
    StatusDetails: message({
      name: field(1, 'string'),
      kind: field(3, 'string'),
      causes: field(4, 'StatusCause', true),
      retryAfterSeconds: field(5, 'int32'),
    }),
    Status: message({
      status: field(2, 'string'),
      message: field(3, 'string'),
      reason: field(4, 'string'),
      details: field(5, 'StatusDetails'),
      code: field(6, 'int32'),
    }),
    // runtime and meta/v1: a watch stream's frame
    RawExtension: message({ raw: field(1, 'bytes') }),
    WatchEvent: message({ type: field(1, 'string'), object: field(2, 'RawExtension') }),
  },
});

const Unknown = schema.lookupType('Unknown');
const ListMeta = schema.lookupType('ListMeta');
const Status = schema.lookupType('Status');
const WatchEvent = schema.lookupType('WatchEvent');

/** JSON's omitempty: no defaults, no empty lists or maps. */
const AS_JSON: protobuf.IConversionOptions = { defaults: false, arrays: false, objects: false };

/** A body that is not the protobuf this module reads. */
export class ProtobufBodyError extends Error {}

/** Whether a Content-Type header names Kubernetes' protobuf (a watch's adds `;stream=watch`). */
export function isProtobuf(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === PROTOBUF_CONTENT_TYPE;
}

function hasMagic(body: Uint8Array): boolean {
  return body.length >= 4 && MAGIC.every((b, i) => body[i] === b);
}

/** The envelope's type and payload (ProtobufBodyError when it is not one). */
function unwrap(body: Uint8Array): { kind: string; raw: Uint8Array } {
  if (!hasMagic(body))
    throw new ProtobufBodyError('the body does not start with the protobuf prefix "k8s\\0"');
  let u: { typeMeta?: { kind?: string }; raw?: Uint8Array; contentEncoding?: string };
  try {
    // Through a Buffer's reader, `raw` is a view of the body, not a copy.
    u = Unknown.decode(readerOf(body.subarray(4))) as typeof u;
  } catch (err) {
    throw new ProtobufBodyError(`the protobuf envelope cannot be read: ${(err as Error).message}`);
  }
  if (u.contentEncoding !== undefined && u.contentEncoding !== '')
    throw new ProtobufBodyError(
      `the protobuf body has content encoding ${JSON.stringify(u.contentEncoding)}`,
    );
  return { kind: u.typeMeta?.kind ?? '', raw: u.raw ?? new Uint8Array() };
}

/** A NodeList page: its items with only the fields a NodeView reads, and its metadata. */
export function decodeNodeListPage(body: Uint8Array): Page {
  const { kind, raw } = unwrap(body);
  if (kind !== 'NodeList')
    throw new ProtobufBodyError(`the answer is a ${kind || 'object without a kind'}, not a NodeList`);
  const items: unknown[] = [];
  let metadata: Page['metadata'] | undefined;
  try {
    // NodeList: metadata (1), items (2).
    const r = readerOf(raw);
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag === ((1 << 3) | 2)) metadata = ListMeta.toObject(ListMeta.decode(r, r.uint32()), AS_JSON);
      else if (tag === ((2 << 3) | 2)) items.push(readNodeFields(r, fieldEnd(r)));
      else r.skipType(tag & 7);
    }
  } catch (err) {
    throw new ProtobufBodyError(`the NodeList cannot be read: ${(err as Error).message}`);
  }
  return { items, ...(metadata === undefined ? {} : { metadata }) };
}

/** A Status answer (an error), JSON-shaped; undefined when the body is not one. */
export function decodeStatus(body: Uint8Array): Record<string, unknown> | undefined {
  try {
    const { kind, raw } = unwrap(body);
    return kind === 'Status' ? Status.toObject(Status.decode(raw), AS_JSON) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The continue token from the first bytes of a NodeList page (list-head.ts's, for protobuf): the
 * serializer writes the envelope's type, then the list's metadata, then its items, so the token
 * comes before the items. 'more' while the bytes end before the metadata does.
 */
export function continueFromProtoHead(head: Uint8Array): string | undefined | 'more' {
  if (head.length < MAGIC.length) return 'more';
  if (!hasMagic(head)) return undefined;
  const r = protobuf.Reader.create(head.subarray(4));
  try {
    for (;;) {
      const tag = r.uint32();
      if (tag !== ((2 << 3) | 2)) {
        r.skipType(tag & 7);
        continue;
      }
      r.uint32(); // raw's length: the rest of the body
      // The NodeList's first field must be its metadata (1, length-delimited).
      if (r.uint32() !== ((1 << 3) | 2)) return undefined;
      const len = r.uint32();
      if (r.pos + len > r.len) return 'more';
      const meta = ListMeta.decode(r.buf.subarray(r.pos, r.pos + len)) as { continue?: string };
      return meta.continue === undefined || meta.continue === '' ? undefined : meta.continue;
    }
  } catch (err) {
    // The reader ran past the bytes so far: the head is not all here yet.
    return err instanceof RangeError ? 'more' : undefined;
  }
}

/**
 * One frame of a Node watch as its event: a Node's object with only the fields a NodeView reads (a
 * BOOKMARK's too: its resourceVersion), an ERROR's the Status, both JSON-shaped. ProtobufBodyError
 * when the frame is not such an event.
 */
export function decodeNodeWatchEvent(frame: Uint8Array): { type: string; object: unknown } {
  let ev: { type?: string; object?: { raw?: Uint8Array } };
  try {
    ev = WatchEvent.decode(readerOf(frame)) as typeof ev;
  } catch (err) {
    throw new ProtobufBodyError(`the watch event cannot be read: ${(err as Error).message}`);
  }
  if (ev.type === undefined || ev.type === '') throw new ProtobufBodyError('the watch event has no type');
  const { kind, raw } = unwrap(ev.object?.raw ?? new Uint8Array());
  if (kind !== 'Node' && kind !== 'Status')
    throw new ProtobufBodyError(
      `the watch event's object is a ${kind || 'object without a kind'}, not a Node or a Status`,
    );
  try {
    const object =
      kind === 'Node'
        ? readNodeFields(readerOf(raw), raw.length)
        : Status.toObject(Status.decode(raw), AS_JSON);
    return { type: ev.type, object };
  } catch (err) {
    throw new ProtobufBodyError(`the watch event's ${kind} cannot be read: ${(err as Error).message}`);
  }
}
