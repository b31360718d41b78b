import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_LINE_BYTES, WatchLines, WatchLineTooLong } from '../../../pkg/k8s/watch-lines.ts';

function collect(pieces: Buffer[], stopAfter = Number.POSITIVE_INFINITY): string[] {
  const lines = new WatchLines();
  const got: string[] = [];
  for (const p of pieces) lines.push(p, (l) => got.push(l) < stopAfter);
  return got;
}

describe('WatchLines', () => {
  it('joins a line cut anywhere, a UTF-8 character included, and trims CRLF and blank lines', () => {
    const text = Buffer.from('{"a":"é€"}\r\n\n  \n{"b":2}\n{"c"');
    // Cut inside "€" (3 bytes) and inside "é" (2 bytes).
    const cuts = [4, 7, 9, 12, 20];
    const pieces = [0, ...cuts].map((at, i) => text.subarray(at, cuts[i] ?? text.length));
    const lines = new WatchLines();
    const got: string[] = [];
    for (const p of pieces) lines.push(p, (l) => got.push(l) > 0);
    expect(got).toEqual(['{"a":"é€"}', '{"b":2}']);
    expect(lines.pending).toBe(true);
    lines.push(Buffer.from(':3}\n'), (l) => got.push(l) > 0);
    expect([got.at(-1), lines.pending]).toEqual(['{"c":3}', false]);
  });

  it('keeps its own copy of an unfinished line: the reader reuses its buffer for the next read', () => {
    const buf = Buffer.alloc(16);
    const lines = new WatchLines();
    const got: string[] = [];
    buf.write('{"x":1');
    lines.push(buf.subarray(0, 6), (l) => got.push(l) > 0);
    buf.fill(0).write('}\n');
    lines.push(buf.subarray(0, 2), (l) => got.push(l) > 0);
    expect(got).toEqual(['{"x":1}']);
  });

  it('refuses a line that grows past its limit without its end, and drops what it held', () => {
    const lines = new WatchLines(10);
    const got: string[] = [];
    const push = (text: string) => lines.push(Buffer.from(text), (l) => got.push(l) > 0);
    push('{"a":1}\n{"b":'); // 5 bytes held
    push('23456'); // 10: at the limit, still held
    expect(() => push('7')).toThrow(WatchLineTooLong);
    expect(lines.pending).toBe(false);
    expect(got).toEqual(['{"a":1}']);
    // A Node as large as etcd takes (~1.5 MiB) passes under the default.
    const big = new WatchLines();
    const node = `{"type":"ADDED","object":{"x":"${'n'.repeat(1_600_000)}"}}`;
    const seen: string[] = [];
    for (let at = 0; at < node.length; at += 64 * 1024)
      big.push(Buffer.from(node.slice(at, at + 64 * 1024)), (l) => seen.push(l) > 0);
    big.push(Buffer.from('\n'), (l) => seen.push(l) > 0);
    expect(seen.map((l) => l.length)).toEqual([node.length]);
    expect(MAX_LINE_BYTES).toBeGreaterThan(8 * 1_600_000);
  });

  it('stops at the line whose callback says false and drops what follows', () => {
    expect(collect([Buffer.from('1\n2\n3\n4')], 2)).toEqual(['1', '2']);
  });

  it('gives the same lines however the stream is cut', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.string({ unit: 'grapheme', minLength: 1 }).filter((s) => !/[\r\n]/.test(s) && s.trim() === s),
          {
            maxLength: 8,
          },
        ),
        fc.array(fc.nat(), { maxLength: 6 }),
        (want, rawCuts) => {
          const bytes = Buffer.from(want.map((l) => `${l}\n`).join(''));
          const cuts = [...new Set(rawCuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          const pieces = [0, ...cuts].map((at, i) => bytes.subarray(at, cuts[i] ?? bytes.length));
          expect(collect(pieces)).toEqual(want);
        },
      ),
    );
  });
});
