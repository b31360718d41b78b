import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonErrorPosition } from '../../../pkg/cni/json-position.ts';

/** V8's own position for a JSON.parse failure, when its message has one. */
function v8Position(s: string): number | 'valid' | undefined {
  try {
    JSON.parse(s);
    return 'valid';
  } catch (err) {
    const m = /at position (\d+)/.exec((err as Error).message);
    return m === null ? undefined : Number(m[1]);
  }
}

describe('jsonErrorPosition', () => {
  const cases: [string, number, number, number][] = [
    ['{"a":1,}', 7, 1, 8],
    ['{\n  "a": 1,\n  "b": }', 19, 3, 8],
    ['[1, 2', 5, 1, 6],
    ['{"a" 1}', 5, 1, 6],
    ['"\\x"', 2, 1, 3],
    ['01', 1, 1, 2],
    ['tru', 3, 1, 4],
    ['nul!', 3, 1, 4],
    ['"\\u12g4"', 5, 1, 6],
    ['{} x', 3, 1, 4],
    ['', 0, 1, 1],
  ];
  for (const [text, offset, line, column] of cases) {
    it(`finds ${JSON.stringify(text)} fails at ${offset}`, () => {
      expect(jsonErrorPosition(text)).toEqual({ offset, line, column });
    });
  }

  it('returns undefined for valid JSON', () => {
    for (const text of ['{}', ' [ ] ', '"\\u00e9"', '-0.5e+3', '{"a":[1,{"b":null}],"c":true}']) {
      expect(jsonErrorPosition(text)).toBeUndefined();
    }
  });

  it('handles a megabyte of nesting without recursion', () => {
    expect(jsonErrorPosition('['.repeat(1_000_000))?.offset).toBe(1_000_000);
  });

  it('agrees with JSON.parse on validity, and with V8 on the position', () => {
    const nearJson = fc
      .json()
      .chain((j) =>
        fc
          .tuple(
            fc.nat({ max: Math.max(0, j.length) }),
            fc.constantFrom('', ',', '}', ']', '"', ':', '\\', 'x', ' '),
          )
          .map(([at, ins]) => j.slice(0, at) + ins + j.slice(at)),
      );
    fc.assert(
      fc.property(fc.oneof(nearJson, fc.string({ maxLength: 12 })), (s) => {
        const v8 = v8Position(s);
        const ours = jsonErrorPosition(s);
        if (v8 === 'valid') expect(ours).toBeUndefined();
        else {
          expect(ours).toBeDefined();
          if (v8 !== undefined) expect(ours?.offset).toBe(v8);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
