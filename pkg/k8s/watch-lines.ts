/**
 * The longest line held while its end has not come. An event is one object as JSON: a Node is at
 * most ~1.5 MiB (etcd's request limit), so a line past this is a stream that lost its framing (a
 * broken proxy, say). Holding it would grow the agent until it is killed, every read keeping the
 * watch's inactivity timer from ending it.
 */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** A line grew past the limit without its end. */
export class WatchLineTooLong extends Error {}

/**
 * A watch body cut into its lines (newline-delimited JSON), from pieces of bytes that end anywhere:
 * mid-line, mid-character. Lines are split on the newline byte, which never occurs inside a UTF-8
 * sequence, and decoded whole.
 */
export class WatchLines {
  /** The bytes of a line not finished yet, copied: pieces may be views into a buffer the next read reuses. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  readonly #maxLineBytes: number;

  constructor(maxLineBytes = MAX_LINE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  /**
   * Calls onLine with each line the piece completes (without its "\n", a trailing "\r" and outer
   * blanks trimmed; blank lines skipped). onLine returns false to stop: the rest is dropped. Throws
   * WatchLineTooLong when the unfinished line would pass the limit (what is held is dropped).
   */
  push(piece: Buffer, onLine: (line: string) => boolean): void {
    let start = 0;
    let nl = piece.indexOf(10);
    while (nl >= 0) {
      const end =
        this.#partial.length === 0 ? piece.toString('utf8', start, nl) : this.#joined(piece, start, nl);
      const line = end.trim();
      if (line !== '' && !onLine(line)) {
        this.#drop();
        return;
      }
      start = nl + 1;
      nl = piece.indexOf(10, start);
    }
    if (start < piece.length) {
      this.#partialBytes += piece.length - start;
      if (this.#partialBytes > this.#maxLineBytes) {
        this.#drop();
        throw new WatchLineTooLong(
          `a watch line grew past ${this.#maxLineBytes} bytes without its end (an event is one object, a Node at most ~1.5 MiB): the stream lost its framing`,
        );
      }
      this.#partial.push(Buffer.from(piece.subarray(start)));
    }
  }

  #drop(): void {
    this.#partial = [];
    this.#partialBytes = 0;
  }

  /** Bytes of an unfinished line are held (a stream that ends here cut an event). */
  get pending(): boolean {
    return this.#partial.length > 0;
  }

  #joined(piece: Buffer, start: number, nl: number): string {
    this.#partial.push(piece.subarray(start, nl));
    const text = Buffer.concat(this.#partial).toString('utf8');
    this.#drop();
    return text;
  }
}
