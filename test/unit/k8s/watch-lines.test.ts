import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WatchLines } from '../../../pkg/k8s/watch-lines.ts';

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
