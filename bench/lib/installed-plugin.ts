/**
 * A plugin binary as a node runs it: copied into a bin directory by the code the DaemonSet's
 * install-cni init container copies the shim with (pkg/cniconf installBinary, a large-chunk copy).
 *
 * Why the benches copy every binary they time instead of running dist/bin/trellis and /usr/lib/cni
 * where they are: how fast the same bytes start depends on how the page cache came to hold them. A
 * file that was just written, or read in sequentially, sits in large folios; one whose pages were
 * reclaimed and then faulted back by exec sits in small ones, and an exec maps less per fault. The
 * test VMs reclaim page cache with most of their memory free (the host takes it back), so a binary
 * left alone drifts into the second state. For the ~100 MB Bun shim that is ~856 page faults per start
 * against ~800, and ~10.1 against ~7.9 ms from spawn to exit (AMD VM, session 37; posix_fadvise
 * DONTNEED followed by execs reproduces it, a `cat` of the file undoes it); Go's ptp starts with ~266
 * faults either way. Unnoticed, that drift moved the ADD ratio by ~0.2 between runs of the same code
 * (bench/HISTORY.md, session 37). A fresh copy of every binary at the start of a run puts all of them
 * in the state install-cni leaves on a node; bench/shim-startup.ts also times the shim after eviction.
 */
import { join } from 'node:path';
import { installBinary } from '../../pkg/cniconf/publish.ts';

/** Copies `src` to binDir/name (mode 0755) as install-cni does; returns the new path. */
export async function installPlugin(binDir: string, name: string, src: string): Promise<string> {
  await installBinary(src, binDir, name);
  return join(binDir, name);
}
