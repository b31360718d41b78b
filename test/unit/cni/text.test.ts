import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { utf8Length } from '../../../pkg/cni/text.ts';

describe('utf8Length', () => {
  it('counts what TextEncoder writes, for any string (lone surrogates become U+FFFD, 3 bytes)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
      }),
    );
  });

  it.each([
    ['', 0],
    ['eth0', 4],
    ['é', 2],
    ['€', 3],
    ['😀', 4],
    ['\ud800', 3],
    ['\udc00\ud800x', 7],
  ])('%j is %i bytes', (s, n) => {
    expect(utf8Length(s)).toBe(n);
  });
});
