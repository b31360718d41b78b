import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  i32le,
  putU16le,
  putU32be,
  putU32le,
  u8,
  u16be,
  u16le,
  u32be,
  u32le,
} from '../../../pkg/netlink/wire.ts';

// The index stores replace Buffer's checked writers on the hot encode path: they must lay out the
// same bytes, leave the neighbours alone, and read back through the decoders.
describe('field stores', () => {
  const at = fc.integer({ min: 0, max: 12 });

  it('putU16le writes what writeUInt16LE writes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), at, (v, off) => {
        const ours = Buffer.alloc(16, 0xaa);
        const node = Buffer.alloc(16, 0xaa);
        putU16le(ours, off, v);
        node.writeUInt16LE(v, off);
        expect(ours.equals(node)).toBe(true);
        expect(u16le(ours, off)).toBe(v);
      }),
    );
  });

  it('putU32le and putU32be write what writeUInt32LE and writeUInt32BE write', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), at, (v, off) => {
        const le = Buffer.alloc(16, 0x55);
        const be = Buffer.alloc(16, 0x55);
        const nodeLe = Buffer.alloc(16, 0x55);
        const nodeBe = Buffer.alloc(16, 0x55);
        putU32le(le, off, v);
        putU32be(be, off, v);
        nodeLe.writeUInt32LE(v, off);
        nodeBe.writeUInt32BE(v, off);
        expect(le.equals(nodeLe)).toBe(true);
        expect(be.equals(nodeBe)).toBe(true);
        expect(u32le(le, off)).toBe(v);
        expect(u32be(be, off)).toBe(v);
      }),
    );
  });

  it('truncates to the field width, as a C store would', () => {
    const b = Buffer.alloc(4);
    putU16le(b, 0, 0x12345);
    expect([...b]).toEqual([0x45, 0x23, 0, 0]);
    putU32le(b, 0, -1);
    expect(u32le(b, 0)).toBe(0xffffffff);
  });

  it('the index readers read what the Buffer readers read, signed and big-endian too', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), at, (bytes, off) => {
        const b = Buffer.from(bytes);
        expect(u8(b, off)).toBe(b.readUInt8(off));
        expect(u16le(b, off)).toBe(b.readUInt16LE(off));
        expect(u16be(b, off)).toBe(b.readUInt16BE(off));
        expect(u32le(b, off)).toBe(b.readUInt32LE(off));
        expect(i32le(b, off)).toBe(b.readInt32LE(off));
      }),
    );
    // An ifindex of -1 (a link netns id the kernel could not name) stays negative.
    expect(i32le(Buffer.from([0xff, 0xff, 0xff, 0xff]), 0)).toBe(-1);
    // A field past the end throws, as Buffer's readers do, never reads as 0.
    const short = Buffer.from([1, 2, 3]);
    for (const read of [u16le, u16be, u32le, u32be, i32le]) expect(() => read(short, 2)).toThrow(RangeError);
    expect(() => u8(short, 3)).toThrow(RangeError);
    expect(() => short.readUInt16LE(2)).toThrow(RangeError);
  });
});
