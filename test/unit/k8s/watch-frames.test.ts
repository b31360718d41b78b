import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WatchFrames, WatchFrameTooLong } from '../../../pkg/k8s/watch-frames.ts';

/** A frame as apimachinery's length-delimited writer puts it: 4-byte big-endian length, then the bytes. */
function framed(payload: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(payload.length);
  return Buffer.concat([length, payload]);
}

function collect(frames: WatchFrames, pieces: Buffer[], stopAfter = Number.POSITIVE_INFINITY): string[] {
  const got: string[] = [];
  for (const p of pieces) frames.push(p, (f) => got.push(f.toString('latin1')) < stopAfter);
  return got;
}

describe('WatchFrames', () => {
  it('gives back every frame whatever the pieces, cut mid-length or mid-frame', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (payloads, cutsRaw) => {
          const stream = Buffer.concat(payloads.map((p) => framed(Buffer.from(p))));
          const cuts = [...new Set(cutsRaw.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          const pieces = [0, ...cuts].map((at, i) => stream.subarray(at, cuts[i] ?? stream.length));
          const frames = new WatchFrames();
          const got = collect(frames, pieces);
          expect(got).toEqual(payloads.map((p) => Buffer.from(p).toString('latin1')));
          expect(frames.pending).toBe(false);
        },
      ),
    );
  });

  it('holds an unfinished frame, its own copy: the reader reuses its buffer for the next read', () => {
    const frame = framed(Buffer.from('node-1'));
    const buf = Buffer.alloc(16);
    const frames = new WatchFrames();
    const got: string[] = [];
    frame.copy(buf, 0, 0, 2); // half the length
    frames.push(buf.subarray(0, 2), (f) => got.push(f.toString()) > 0);
    expect(frames.pending).toBe(true);
    buf.fill(0);
    frame.copy(buf, 0, 2, 7); // the rest of the length and "no"
    frames.push(buf.subarray(0, 5), (f) => got.push(f.toString()) > 0);
    buf.fill(0);
    frame.copy(buf, 0, 7);
    frames.push(buf.subarray(0, frame.length - 7), (f) => got.push(f.toString()) > 0);
    expect([got, frames.pending]).toEqual([['node-1'], false]);
  });

  it('a frame as large as etcd takes (~1.5 MiB) arrives in 64 KiB reads', () => {
    const payload = Buffer.alloc(1_600_000, 0x6e);
    const stream = framed(payload);
    const pieces: Buffer[] = [];
    for (let at = 0; at < stream.length; at += 64 * 1024) pieces.push(stream.subarray(at, at + 64 * 1024));
    const sizes: number[] = [];
    const frames = new WatchFrames();
    for (const p of pieces) frames.push(p, (f) => sizes.push(f.length) > 0);
    expect(sizes).toEqual([payload.length]);
  });

  it('refuses a length past its limit, dropping what it held: the stream lost its framing', () => {
    const frames = new WatchFrames(10);
    const got = collect(frames, [Buffer.concat([framed(Buffer.from('ok')), Buffer.from([0, 0])])]);
    expect([got, frames.pending]).toEqual([['ok'], true]);
    // A JSON watch read as frames: "{\"ty" is a length of 2 GB.
    expect(() => frames.push(Buffer.from([0, 11]), () => true)).toThrow(WatchFrameTooLong);
    expect(frames.pending).toBe(false);
    expect(() => new WatchFrames().push(Buffer.from('{"type":"ADDED"}'), () => true)).toThrow(
      /a watch frame says it is 2065855609 bytes, past 16777216 .*lost its framing/,
    );
  });

  it('stops at the frame whose callback says false and drops what follows', () => {
    const stream = Buffer.concat(['1', '2', '3', '4'].map((t) => framed(Buffer.from(t))));
    const frames = new WatchFrames();
    expect(collect(frames, [stream], 2)).toEqual(['1', '2']);
    expect(frames.pending).toBe(false);
  });
});
