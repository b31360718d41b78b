import { describe, expect, it } from 'vitest';
import { ParseCache } from '../../../pkg/ip/cache.ts';

/** A cache in front of a parser that counts its calls, the way parseIp and parseCidr use it. */
function cachedParser(generationSize: number) {
  const cache = new ParseCache<{ text: string }>(generationSize);
  const parsed: string[] = [];
  const parse = (s: string): { text: string } | undefined => {
    const hit = cache.get(s);
    if (hit !== undefined) return hit ?? undefined;
    parsed.push(s);
    return cache.remember(s, s.startsWith('bad') ? undefined : { text: s });
  };
  return { cache, parse, parsed };
}

describe('ParseCache', () => {
  it('answers from the cache: a text is parsed once, a bad one too, and results are frozen', () => {
    const { parse, parsed } = cachedParser(100);
    const first = parse('10.0.0.1');
    expect(parse('10.0.0.1')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(parse('bad text')).toBeUndefined();
    expect(parse('bad text')).toBeUndefined();
    expect(parsed).toEqual(['10.0.0.1', 'bad text']);
  });

  it('stays within two generations however many distinct texts go through it (pod churn)', () => {
    const { cache, parse } = cachedParser(100);
    let largest = 0;
    for (let i = 0; i < 10_000; i++) {
      parse(`fd00:10:244::${i.toString(16)}`);
      largest = Math.max(largest, cache.size);
    }
    expect(largest).toBe(200);
  });

  it('keeps what every pass reads while churn flows through, and drops what is no longer read', () => {
    const { parse, parsed } = cachedParser(100);
    const hot = Array.from({ length: 60 }, (_, i) => `10.0.${i}.1`);
    for (let pass = 0; pass < 50; pass++) {
      for (const t of hot) parse(t);
      // Each pass also meets 30 texts never seen before (new pods' addresses).
      for (let j = 0; j < 30; j++) parse(`fd00::${pass}:${j}`);
    }
    // Every hot text was parsed once, in the first pass, although the cache rotated many times.
    expect(parsed.filter((t) => hot.includes(t))).toEqual(hot);
    // A churned text from the first pass is long gone: reading it again parses it again.
    parsed.length = 0;
    parse('fd00::0:0');
    expect(parsed).toEqual(['fd00::0:0']);
  });

  it('re-parses rather than grows when a pass reads more texts than a generation holds', () => {
    const { cache, parse, parsed } = cachedParser(100);
    const hot = Array.from({ length: 250 }, (_, i) => `10.1.${i}.1`);
    for (let pass = 0; pass < 5; pass++) for (const t of hot) parse(t);
    expect(cache.size).toBeLessThanOrEqual(200);
    expect(parsed.length).toBeGreaterThan(hot.length);
  });
});
