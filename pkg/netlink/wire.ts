import { NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN } from './constants.ts';

/**
 * Netlink framing: message headers and type-length-value attributes, 4-byte aligned, host (little)
 * endian. Pure functions over Buffers; the encoders are hand-written because they sit on the hot
 * path (thousands of routes per burst) and the package's generic encoders are several times slower.
 */

const align4 = (n: number): number => (n + 3) & ~3;
export const NLA_TYPE_MASK = 0x3fff; // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

export function attr(type: number, payload: Uint8Array): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc(align4(len));
  putAttrHeader(out, 0, len, type);
  out.set(payload, 4);
  return out;
}

/** An attribute's length and type at off (the payload follows at off + 4). */
export function putAttrHeader(out: Uint8Array, off: number, len: number, type: number): void {
  putU16le(out, off, len);
  putU16le(out, off + 2, type);
}

export function u32Attr(type: number, value: number): Buffer {
  const out = Buffer.alloc(8);
  putU32Attr(out, 0, type, value);
  return out;
}

/** u32Attr written into out at off; returns the offset after it. */
export function putU32Attr(out: Buffer, off: number, type: number, value: number): number {
  putAttrHeader(out, off, 8, type);
  putU32le(out, off + 4, value);
  return off + 8;
}

export function u16BeAttr(type: number, value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeUInt16LE(6, 0);
  out.writeUInt16LE(type, 2);
  out.writeUInt16BE(value, 4);
  return out;
}

export function u8Attr(type: number, value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeUInt16LE(5, 0);
  out.writeUInt16LE(type, 2);
  out.writeUInt8(value, 4);
  return out;
}

/** A NUL-terminated string attribute (IFLA_IFNAME, IFLA_INFO_KIND). */
export function strAttr(type: number, value: string): Buffer {
  return attr(type, Buffer.from(`${value}\0`, 'utf8'));
}

export function nested(type: number, parts: readonly Uint8Array[]): Buffer {
  return attr(type, Buffer.concat(parts));
}

export interface RawMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Payload after the 16-byte header. */
  payload: Buffer;
}

/** One netlink message: nlmsghdr + body parts. */
export function encodeMessage(type: number, flags: number, seq: number, body: readonly Uint8Array[]): Buffer {
  return encodeMessages([{ type, flags, seq, body }]);
}

export interface EncodableMessage {
  type: number;
  flags: number;
  seq: number;
  body: readonly Uint8Array[];
}

/** Messages back to back in one datagram, each as encodeMessage writes it. */
export function encodeMessages(messages: readonly EncodableMessage[]): Buffer {
  // Indexed loops: a burst encodes thousands of messages, and with V8's optimizing tiers off
  // (scripts/build.ts) every for-of step allocates an iterator result.
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    const body = messages[i]!.body;
    let len = NLMSG_HDRLEN;
    for (let j = 0; j < body.length; j++) len += body[j]!.length;
    total += align4(len);
  }
  const out = zeroed(total);
  let off = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    off = writeMessage(out, off, m.type, m.flags, m.seq, m.body);
  }
  return out;
}

/** Writes one message at off; returns the offset of the next (4-byte aligned). */
function writeMessage(
  out: Buffer,
  off: number,
  type: number,
  flags: number,
  seq: number,
  body: readonly Uint8Array[],
): number {
  let pos = off + NLMSG_HDRLEN;
  for (let i = 0; i < body.length; i++) {
    const b = body[i]!;
    out.set(b, pos);
    pos += b.length;
  }
  putU32le(out, off, pos - off);
  putU16le(out, off + 4, type);
  putU16le(out, off + 6, flags);
  putU32le(out, off + 8, seq);
  // pid (off + 12) stays 0: the kernel fills in our port.
  return align4(pos);
}

/**
 * A zero-filled buffer carved from Node's shared pool when small: Buffer.alloc makes an ArrayBuffer
 * of its own each time, which a burst of thousands of messages paid for in allocation and in the
 * garbage collector's tracking of each (~2.4 x the time per message under the agent's V8 flags).
 */
export function zeroed(size: number): Buffer {
  return Buffer.allocUnsafe(size).fill(0);
}

/**
 * A u16 or u32 in host (little-endian) or network order at off, read by index, not through Buffer's
 * methods: a dump's thousands of messages and their attributes pass through these, in an agent
 * without V8's optimizing tiers, where each method call cost more than the read itself, and
 * allocated: Node checks the offset through a wrapper taking rest arguments, an array per read.
 */
export function u16le(b: Buffer, off: number): number {
  if (off < 0 || off + 2 > b.length) outside(b, off, 2);
  return b[off]! | (b[off + 1]! << 8);
}

export function u32le(b: Buffer, off: number): number {
  if (off < 0 || off + 4 > b.length) outside(b, off, 4);
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

export function u8(b: Buffer, off: number): number {
  if (off < 0 || off + 1 > b.length) outside(b, off, 1);
  return b[off]!;
}

export function i32le(b: Buffer, off: number): number {
  if (off < 0 || off + 4 > b.length) outside(b, off, 4);
  return b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24);
}

export function u16be(b: Buffer, off: number): number {
  if (off < 0 || off + 2 > b.length) outside(b, off, 2);
  return (b[off]! << 8) | b[off + 1]!;
}

export function u32be(b: Buffer, off: number): number {
  if (off < 0 || off + 4 > b.length) outside(b, off, 4);
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

/**
 * A field past the end throws as Buffer's readers do: a truncated message is an error its reader
 * handles (an event socket takes it for lost events and resyncs), never a field read as 0. The
 * readers compare inline and call this only then: a call per read costs, without the optimizers.
 */
function outside(b: Buffer, off: number, size: number): never {
  throw new RangeError(`a ${size}-byte field at offset ${off} is outside a ${b.length}-byte buffer`);
}

/**
 * The writing side of u16le/u32le, by index for the same reason: Buffer's writeUInt16LE and
 * writeUInt32LE go through three more calls each (range and bounds checks), and a cold pass's burst
 * writes ~100,000 of these fields. The value is truncated to its width, as a C store would.
 */
export function putU16le(b: Uint8Array, off: number, v: number): void {
  b[off] = v;
  b[off + 1] = v >>> 8;
}

export function putU32le(b: Uint8Array, off: number, v: number): void {
  b[off] = v;
  b[off + 1] = v >>> 8;
  b[off + 2] = v >>> 16;
  b[off + 3] = v >>> 24;
}

export function putU32be(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = v >>> 16;
  b[off + 2] = v >>> 8;
  b[off + 3] = v;
}

/** Splits a datagram into messages; stops at a truncated tail instead of throwing. */
export function decodeMessages(buf: Buffer): RawMessage[] {
  const out: RawMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = u32le(buf, off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) break;
    out.push({
      type: u16le(buf, off + 4),
      flags: u16le(buf, off + 6),
      seq: u32le(buf, off + 8),
      pid: u32le(buf, off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/**
 * For a request datagram: whether a reply datagram holds the NLMSG_ERROR (ACK or error) of the
 * request's LAST message, or the NLMSG_DONE of a dump, which ends the kernel's reply to it (earlier
 * messages' errors, an NLM_F_ECHO and a dump's entries come before).
 */
export function endsReplyTo(request: Buffer): (datagram: Buffer) => boolean {
  const last = decodeMessages(request).at(-1)?.seq;
  return (datagram) =>
    decodeMessages(datagram).some((m) => (m.type === NLMSG_ERROR || m.type === NLMSG_DONE) && m.seq === last);
}

/** Attributes from offset to the end of buf; a later duplicate wins (the kernel never sends one). */
export function decodeAttrs(buf: Buffer, offset = 0): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = offset;
  while (off + 4 <= buf.length) {
    const len = u16le(buf, off);
    if (len < 4 || off + len > buf.length) break;
    out.set(u16le(buf, off + 2) & NLA_TYPE_MASK, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/**
 * The u32 value of the last attribute of `type` among those between `from` and `end`, found without
 * decoding the others (decodeAttrs builds a map of all of them: a dump read for one number each).
 */
export function u32AttrIn(payload: Buffer, from: number, end: number, type: number): number | undefined {
  let found: number | undefined;
  for (let off = from; off + 4 <= end; ) {
    const len = u16le(payload, off);
    if (len < 4 || off + len > end) break;
    if ((u16le(payload, off + 2) & NLA_TYPE_MASK) === type && len >= 8) found = u32le(payload, off + 4);
    off += align4(len);
  }
  return found;
}

/** The errno carried by an NLMSG_ERROR payload: 0 for an ACK, a positive errno otherwise. */
export function decodeErrno(payload: Buffer): number {
  const v = payload.length < 4 ? 0 : i32le(payload, 0);
  return v === 0 ? 0 : -v;
}
