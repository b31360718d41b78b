import { describe, expect, it } from 'vitest';
import { FilePageUnmapPolicy } from '../../../pkg/agent/file-page-policy.ts';

describe('FilePageUnmapPolicy', () => {
  it('unmaps after the first burst, then only once the file-backed RSS has grown by the threshold', () => {
    const policy = new FilePageUnmapPolicy(12_288);
    expect(policy.due(50_000)).toBe(true); // the first burst, whatever the size
    policy.unmapped(16_000);
    // A steady minute maps a few MB back: no unmap, no churn.
    expect(policy.due(16_000)).toBe(false);
    expect(policy.due(22_600)).toBe(false);
    expect(policy.due(28_287)).toBe(false);
    // Rare paths added up to the threshold: unmap again, and count from where it left the RSS.
    expect(policy.due(28_288)).toBe(true);
    policy.unmapped(17_500);
    expect(policy.due(28_288)).toBe(false);
    expect(policy.due(29_788)).toBe(true);
  });

  it('an unreadable size (NaN) never asks for another unmap', () => {
    const policy = new FilePageUnmapPolicy(12_288);
    policy.unmapped(16_000);
    expect(policy.due(Number.NaN)).toBe(false);
    const never = new FilePageUnmapPolicy(12_288);
    expect(never.due(Number.NaN)).toBe(true); // the first burst still unmaps
  });
});
