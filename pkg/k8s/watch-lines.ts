/**
 * A watch body cut into its lines (newline-delimited JSON), from pieces of bytes that end anywhere:
 * mid-line, mid-character. Lines are split on the newline byte, which never occurs inside a UTF-8
 * sequence, and decoded whole.
 */
export class WatchLines {
  /** The bytes of a line not finished yet, copied: pieces may be views into a buffer the next read reuses. */
  #partial: Buffer[] = [];

  /**
   * Calls onLine with each line the piece completes (without its "\n", a trailing "\r" and outer
   * blanks trimmed; blank lines skipped). onLine returns false to stop: the rest is dropped.
   */
  push(piece: Buffer, onLine: (line: string) => boolean): void {
    let start = 0;
    let nl = piece.indexOf(10);
    while (nl >= 0) {
      const end =
        this.#partial.length === 0 ? piece.toString('utf8', start, nl) : this.#joined(piece, start, nl);
      const line = end.trim();
      if (line !== '' && !onLine(line)) {
        this.#partial = [];
        return;
      }
      start = nl + 1;
      nl = piece.indexOf(10, start);
    }
    if (start < piece.length) this.#partial.push(Buffer.from(piece.subarray(start)));
  }

  /** Bytes of an unfinished line are held (a stream that ends here cut an event). */
  get pending(): boolean {
    return this.#partial.length > 0;
  }

  #joined(piece: Buffer, start: number, nl: number): string {
    this.#partial.push(piece.subarray(start, nl));
    const text = Buffer.concat(this.#partial).toString('utf8');
    this.#partial = [];
    return text;
  }
}
