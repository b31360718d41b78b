import { describe, expect, it } from 'vitest';
import { deletedDirectoryOf } from '../../../pkg/agent/deleted-mount.ts';

/** A file system as path -> link count (absent: nothing there). */
const fs =
  (links: Record<string, number>) =>
  (path: string): { nlink: number } | undefined =>
    path in links ? { nlink: links[path]! } : undefined;

describe('deletedDirectoryOf', () => {
  it('names a directory with no links left, itself or the nearest ancestor there is', () => {
    const dead = fs({ '/': 20, '/run': 30, '/run/trellis': 0 });
    expect(deletedDirectoryOf('/run/trellis', dead)).toBe('/run/trellis');
    // The state dir's subdirectories went with it: the walk up finds the deleted mount root.
    expect(deletedDirectoryOf('/run/trellis/spool/x', dead)).toBe('/run/trellis');
  });

  it('names none when the nearest directory there is lives, or nothing is there at all', () => {
    const live = fs({ '/': 20, '/var': 12, '/var/lib': 40, '/var/lib/trellis': 4 });
    expect(deletedDirectoryOf('/var/lib/trellis', live)).toBeUndefined();
    // Removed outside a container: nothing at the path, its parent live; the agent makes it again.
    expect(deletedDirectoryOf('/var/lib/trellis/ipam/leases', live)).toBeUndefined();
    expect(deletedDirectoryOf('/run/trellis', fs({}))).toBeUndefined();
  });
});
