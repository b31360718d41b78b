/**
 * Which of the process's mappings hold only page-cache pages of its executable and shared objects:
 * the `node` binary's start-up code and data (the snapshot V8 deserializes, the bootstrap's code, the
 * neighbours the kernel's fault-around mapped with them) and the libraries'. At 5,000 Nodes about 30 of
 * the agent's ~50 MB of file-backed RSS are pages it touched only while starting or in a burst of work
 * (bench/HISTORY.md, session 68). MADV_DONTNEED on a private file mapping that has no page of its own
 * only unmaps page-cache pages: the next access maps the same bytes again from the cache.
 *
 * A mapping is chosen only when that holds for certain: private (`p`), read-only (`r-`, so no page can
 * be written, and so copied, while we look), with no copy-on-write copy (`Anonymous: 0 kB`: the
 * relocated RELRO data of a library has one, and unmapping it would undo its relocations) and nothing
 * swapped out; not locked, I/O or raw-PFN memory; and a file the process keeps mapped for its life
 * (its executable, a shared object or a Node addon), never a data file some library could unmap and
 * the address be reused between the read and the madvise.
 */

export interface FileMapping {
  start: number;
  length: number;
  path: string;
  /** Resident kB when smaps was read. */
  rssKb: number;
}

const HEADER = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ *(.*)$/;

/** The mappings of /proc/self/smaps text whose resident pages can be unmapped without losing a byte. */
export function cleanFileMappings(smaps: string, executable: string): FileMapping[] {
  const out: FileMapping[] = [];
  let current: FileMapping | undefined;
  let clean = false;
  // Copied pages are known absent only from an Anonymous line that says 0.
  let anonymousRead = false;
  const close = () => {
    if (current !== undefined && clean && anonymousRead && current.rssKb > 0) out.push(current);
    current = undefined;
  };
  for (const line of smaps.split('\n')) {
    const header = HEADER.exec(line);
    if (header !== null) {
      close();
      const from = Number.parseInt(header[1] as string, 16);
      const to = Number.parseInt(header[2] as string, 16);
      const perms = header[3] as string;
      const path = header[4] as string;
      current = { start: from, length: to - from, path, rssKb: 0 };
      anonymousRead = false;
      clean = perms[0] === 'r' && perms[1] === '-' && perms[3] === 'p' && mappedForLife(path, executable);
      continue;
    }
    if (current === undefined) continue;
    if (line.startsWith('Rss:')) current.rssKb = kilobytes(line);
    else if (line.startsWith('Anonymous:') || line.startsWith('Swap:')) {
      if (kilobytes(line) !== 0) clean = false;
      if (line.startsWith('Anonymous:')) anonymousRead = true;
    } else if (line.startsWith('VmFlags:') && /\b(?:lo|io|pf)\b/.test(line)) {
      clean = false;
    }
  }
  close();
  return out;
}

function mappedForLife(path: string, executable: string): boolean {
  if (path === executable) return true;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return path.startsWith('/') && (/\.so(?:\.[0-9.]+)?$/.test(name) || name.endsWith('.node'));
}

/** A field's kB; unreadable counts as not zero, so the mapping is left alone. */
function kilobytes(line: string): number {
  const n = Number.parseInt(line.slice(line.indexOf(':') + 1), 10);
  return Number.isNaN(n) ? Number.POSITIVE_INFINITY : n;
}
