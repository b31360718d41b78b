/**
 * A protobuf Node read straight into the JSON-shaped fields a NodeView is made of, with protobufjs's
 * Reader and nothing else of it. protobufjs's reflected decoder made a message instance per nested
 * message and toObject copied each into its JSON shape; under the agent's V8 flags (no optimizing
 * compiler, a 1 MB young generation) a client listing 5,000 kubelet-sized Nodes spent 196-261 ms of
 * CPU a list that way, 94-165 ms this way (its garbage collector much of the difference).
 *
 * Field numbers are k8s.io/api's core/v1 and k8s.io/apimachinery's meta/v1 generated.proto (stable:
 * protobuf fields are never renumbered). The shape is JSON's with its omitempty: a field on the wire
 * is there (an empty string too); an absent field, an empty list or an empty map is absent; a nested
 * message on the wire is an object even when empty. Of the conditions only NetworkUnavailable and of
 * the addresses only InternalIP are read (the others' strings are never made), the only ones a view
 * reads. A field not listed here, or of another wire type, is stepped over by its wire type; the last
 * of a repeated singular field wins; a length past the end of the bytes throws RangeError.
 */
import protobuf from 'protobufjs/light.js';

type Reader = protobuf.Reader;
type Fields = Record<string, unknown>;

/** A length-delimited field's key: (number << 3) | 2. */
const LD1 = 0x0a;
const LD2 = 0x12;
const LD3 = 0x1a;
const LD4 = 0x22;
const LD5 = 0x2a;
const LD6 = 0x32;
const LD7 = 0x3a;
const LD12 = 0x62;

/** A Reader whose strings are Buffer's native UTF-8 slices (protobufjs decodes a plain Uint8Array's in JS). */
export function readerOf(bytes: Uint8Array): Reader {
  return protobuf.Reader.create(
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  );
}

/** Where the length-delimited field whose length is next ends. */
export function fieldEnd(r: Reader): number {
  const len = r.uint32();
  const end = r.pos + len;
  if (end > r.len) throw new RangeError(`index out of range: ${r.pos} + ${len} > ${r.len}`);
  return end;
}

/** A core/v1 Node: metadata (1), spec (2), status (3). */
export function readNodeFields(r: Reader, end: number): Fields {
  const node: Fields = {};
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === LD1) node.metadata = objectMeta(r, fieldEnd(r));
    else if (tag === LD2) node.spec = nodeSpec(r, fieldEnd(r));
    else if (tag === LD3) node.status = nodeStatus(r, fieldEnd(r));
    else r.skipType(tag & 7);
  }
  return node;
}

/** meta/v1 ObjectMeta: name (1), uid (5), resourceVersion (6), annotations (12). */
function objectMeta(r: Reader, end: number): Fields {
  const meta: Fields = {};
  let annotations: Record<string, string> | undefined;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === LD1) meta.name = r.string();
    else if (tag === LD5) meta.uid = r.string();
    else if (tag === LD6) meta.resourceVersion = r.string();
    else if (tag === LD12) {
      // A map entry: key (1), value (2), either absent meaning "".
      const entryEnd = fieldEnd(r);
      let key = '';
      let value = '';
      while (r.pos < entryEnd) {
        const t = r.uint32();
        if (t === LD1) key = r.string();
        else if (t === LD2) value = r.string();
        else r.skipType(t & 7);
      }
      annotations ??= {};
      annotations[key] = value;
    } else r.skipType(tag & 7);
  }
  if (annotations !== undefined) meta.annotations = annotations;
  return meta;
}

/** core/v1 NodeSpec: podCIDR (1), podCIDRs (7). */
function nodeSpec(r: Reader, end: number): Fields {
  const spec: Fields = {};
  const podCIDRs: string[] = [];
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === LD1) spec.podCIDR = r.string();
    else if (tag === LD7) podCIDRs.push(r.string());
    else r.skipType(tag & 7);
  }
  if (podCIDRs.length > 0) spec.podCIDRs = podCIDRs;
  return spec;
}

/** core/v1 NodeStatus: conditions (4), addresses (5); images, node info and capacity stepped over. */
function nodeStatus(r: Reader, end: number): Fields {
  const status: Fields = {};
  const conditions: Fields[] = [];
  const addresses: Fields[] = [];
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === LD4) {
      // NodeCondition: type (1), status (2), reason (5). Only NetworkUnavailable is read by a view.
      const c = stringsOfType(r, fieldEnd(r), NETWORK_UNAVAILABLE, 'status', 'reason');
      if (c !== undefined) conditions.push(c);
    } else if (tag === LD5) {
      // NodeAddress: type (1), address (2). Only InternalIP is read by a view.
      const a = stringsOfType(r, fieldEnd(r), INTERNAL_IP, 'address');
      if (a !== undefined) addresses.push(a);
    } else if ((tag & 7) === 2) {
      // Images, capacity, node info: tens of fields a Node, stepped over here without skipType's calls.
      r.pos = fieldEnd(r);
    } else r.skipType(tag & 7);
  }
  if (conditions.length > 0) status.conditions = conditions;
  if (addresses.length > 0) status.addresses = addresses;
  return status;
}

/** A type's name and its bytes on the wire (an object: destructuring a tuple allocates an iterator). */
interface TypeName {
  readonly name: string;
  readonly bytes: Buffer;
}
const typeNamed = (name: string): TypeName => ({ name, bytes: Buffer.from(name, 'latin1') });
const NETWORK_UNAVAILABLE = typeNamed('NetworkUnavailable');
const INTERNAL_IP = typeNamed('InternalIP');

/**
 * A message whose field 1 is its type, when the type is `type`: `{ type, [two]: field 2, [five]:
 * field 5 }` as far as they are on the wire. Undefined for any other type, whose strings are never
 * made (a kubelet's Node has five conditions, the view reads one).
 */
function stringsOfType(
  r: Reader,
  end: number,
  type: TypeName,
  two: string,
  five?: string,
): Fields | undefined {
  const out: Fields = {};
  let typed = false;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === LD1) {
      const len = r.uint32();
      if (r.pos + len > end) throw new RangeError(`index out of range: ${r.pos} + ${len} > ${end}`);
      typed = len === type.bytes.length && bytesAre(r.buf, r.pos, type.bytes);
      if (!typed) {
        r.pos = end;
        return undefined;
      }
      r.pos += len;
      out.type = type.name;
    } else if (tag === LD2) out[two] = r.string();
    else if (tag === LD5 && five !== undefined) out[five] = r.string();
    else r.skipType(tag & 7);
  }
  return typed ? out : undefined;
}

function bytesAre(buf: Uint8Array, at: number, want: Buffer): boolean {
  for (let i = 0; i < want.length; i++) if (buf[at + i] !== want[i]) return false;
  return true;
}
