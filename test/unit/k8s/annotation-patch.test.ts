import { describe, expect, it } from 'vitest';
import { annotationPatch } from '../../../pkg/k8s/annotation-patch.ts';

describe('annotationPatch', () => {
  it("sets what differs, nulls what must be absent, leaves other owners' keys alone", () => {
    const current = { 'trellis.dev/a': '1', 'trellis.dev/b': '2', 'other.io/c': '3' };
    expect(
      annotationPatch(current, { 'trellis.dev/a': '1', 'trellis.dev/b': undefined, 'trellis.dev/d': '' }),
    ).toEqual({
      'trellis.dev/b': null,
      'trellis.dev/d': '',
    });
  });

  it('is undefined when the annotations already read as wanted (no write wakes every watch)', () => {
    expect(
      annotationPatch({ 'trellis.dev/a': '' }, { 'trellis.dev/a': '', 'trellis.dev/b': undefined }),
    ).toBeUndefined();
    expect(annotationPatch(undefined, { 'trellis.dev/a': undefined })).toBeUndefined();
  });
});
