/**
 * Reading one newline-terminated message off a stream socket, with a byte limit, for both ends of
 * the shim <-> agent protocol. Chunks are bytes: a UTF-8 newline (0x0a) never occurs inside a
 * multi-byte sequence, so scanning bytes is exact and decoding happens once, at the end.
 */
import { CniError } from '../cni/errors.ts';

export class LineReader {
  readonly #maxBytes: number;
  readonly #code: number;
  readonly #what: string;
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #line: string | undefined;

  /**
   * @param maxBytes largest line accepted (newline excluded)
   * @param code the CniCode thrown when a line grows past maxBytes
   * @param what names the message in that error ("request", "agent answer")
   */
  constructor(maxBytes: number, code: number, what: string) {
    this.#maxBytes = maxBytes;
    this.#code = code;
    this.#what = what;
  }

  /** The complete line once its newline arrived, else undefined. Bytes after the newline are ignored. */
  get line(): string | undefined {
    return this.#line;
  }

  /** Bytes received so far for the current line. */
  get size(): number {
    return this.#bytes;
  }

  /**
   * Feeds a chunk; returns the line (without its newline) when this chunk completes it.
   * Throws CniError(code) as soon as the line exceeds maxBytes, so a sender cannot make us buffer
   * without bound.
   */
  push(chunk: Uint8Array): string | undefined {
    if (this.#line !== undefined) return undefined;
    const nl = chunk.indexOf(0x0a);
    const take = nl === -1 ? chunk.length : nl;
    if (this.#bytes + take > this.#maxBytes) {
      throw new CniError(this.#code, `${this.#what} exceeds ${this.#maxBytes} bytes`);
    }
    // Copy (Buffer#slice would share memory): a runtime may reuse the chunk's memory afterwards.
    this.#chunks.push(new Uint8Array(chunk.subarray(0, take)));
    this.#bytes += take;
    if (nl === -1) return undefined;
    this.#line = this.#decode();
    return this.#line;
  }

  /** Whatever arrived, as text, when the peer closed before sending a newline. */
  partial(): string {
    return this.#line ?? this.#decode();
  }

  #decode(): string {
    const all = new Uint8Array(this.#bytes);
    let at = 0;
    for (const c of this.#chunks) {
      all.set(c, at);
      at += c.length;
    }
    this.#chunks = [all];
    return new TextDecoder().decode(all);
  }
}
