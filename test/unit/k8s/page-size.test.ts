import { describe, expect, it } from 'vitest';
import {
  MAX_PAGE_LIMIT,
  MIN_PAGE_LIMIT,
  nextPageLimit,
  PAGE_TEXT_TARGET,
} from '../../../pkg/k8s/page-size.ts';

describe('nextPageLimit', () => {
  it('asks for as many objects as make the target text at the last page size', () => {
    expect(nextPageLimit(25, 165_000)).toBe(Math.floor((PAGE_TEXT_TARGET * 25) / 165_000));
    expect(nextPageLimit(25, 165_000)).toBe(24);
    expect(nextPageLimit(10, 50_000, 100_000)).toBe(20);
  });

  it("stays within client-go's 500 and a floor of 10", () => {
    expect(nextPageLimit(25, 25 * 100)).toBe(MAX_PAGE_LIMIT);
    expect(nextPageLimit(1, 1_000_000)).toBe(MIN_PAGE_LIMIT);
  });
});
