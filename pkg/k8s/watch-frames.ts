/**
 * A protobuf watch body cut into its frames (apimachinery's length-delimited framing: a 4-byte
 * big-endian length, then that many bytes), from pieces of bytes that end anywhere: mid-length,
 * mid-frame. watch-lines.ts does the same for JSON's newline-delimited events.
 */
import { MAX_LINE_BYTES } from './watch-lines.ts';

/** The largest frame held: an event is one object, as for a JSON line (watch-lines.ts). */
export const MAX_FRAME_BYTES = MAX_LINE_BYTES;

/** A frame's length says more than the limit: the stream lost its framing. */
export class WatchFrameTooLong extends Error {}

export class WatchFrames {
  /**
   * Bytes of a frame (or of its length) not finished yet, copied (pieces are views into a reused
   * buffer), and kept as pieces until the frame is whole: joined once, not at every read.
   */
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** The held frame's whole size with its length, once its length is in (0 before). */
  #need = 0;
  readonly #maxFrameBytes: number;

  constructor(maxFrameBytes = MAX_FRAME_BYTES) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /**
   * Calls onFrame with each frame the piece completes (a view, valid only during the call). onFrame
   * returns false to stop: the rest is dropped. Throws WatchFrameTooLong when a length is past the
   * limit (what is held is dropped).
   */
  push(piece: Buffer, onFrame: (frame: Buffer) => boolean): void {
    let buf = piece;
    if (this.#heldBytes > 0) {
      if (this.#need > 0 && this.#heldBytes + piece.length < this.#need) {
        this.#hold(piece);
        return;
      }
      buf = Buffer.concat([...this.#held, piece]);
      this.#drop();
    }
    let at = 0;
    while (buf.length - at >= 4) {
      const len = buf.readUInt32BE(at);
      if (len > this.#maxFrameBytes) {
        this.#drop();
        throw new WatchFrameTooLong(
          `a watch frame says it is ${len} bytes, past ${this.#maxFrameBytes} (an event is one object, a Node at most ~1.5 MiB): the stream lost its framing`,
        );
      }
      if (buf.length - at - 4 < len) {
        this.#need = 4 + len;
        break;
      }
      if (!onFrame(buf.subarray(at + 4, at + 4 + len))) return;
      at += 4 + len;
    }
    if (at < buf.length) this.#hold(buf.subarray(at));
  }

  /** Bytes of an unfinished frame are held (a stream that ends here cut an event). */
  get pending(): boolean {
    return this.#heldBytes > 0;
  }

  #hold(bytes: Buffer): void {
    this.#held.push(Buffer.from(bytes));
    this.#heldBytes += bytes.length;
  }

  #drop(): void {
    this.#held = [];
    this.#heldBytes = 0;
    this.#need = 0;
  }
}
