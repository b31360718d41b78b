import { readFileSync, readlinkSync } from 'node:fs';
import { cleanFileMappings } from './clean-file-mappings.ts';
import { getLibc } from './libc.ts';

const MADV_DONTNEED = 4;

export interface UnmappedPages {
  /** Resident kB the unmapped mappings held. */
  kb: number;
  mappings: number;
  /** Mappings madvise refused (one gone meanwhile): left as they were, tried again next time. */
  refused: number;
}

/**
 * Unmaps the process's clean pages of its executable and shared objects (clean-file-mappings.ts): a
 * page used again is mapped again from the page cache, one minor fault. Synchronous, on the JS thread.
 */
export function unmapCleanFilePages(): UnmappedPages {
  const mappings = cleanFileMappings(
    readFileSync('/proc/self/smaps', 'utf8'),
    readlinkSync('/proc/self/exe'),
  );
  const libc = getLibc();
  const done: UnmappedPages = { kb: 0, mappings: 0, refused: 0 };
  for (const m of mappings) {
    if (libc.madvise(m.start, m.length, MADV_DONTNEED).value === 0) {
      done.kb += m.rssKb;
      done.mappings++;
    } else done.refused++;
  }
  return done;
}

/**
 * The process's file-backed resident kB (RssFile in /proc/self/status); NaN where unreadable, not a
 * throw: the idle trim asks before each unmap, and a throw there would stop its malloc_trim too.
 */
export function fileBackedRssKb(): number {
  let status: string;
  try {
    status = readFileSync('/proc/self/status', 'utf8');
  } catch {
    return Number.NaN;
  }
  const at = status.indexOf('\nRssFile:');
  return at < 0 ? Number.NaN : Number.parseInt(status.slice(at + '\nRssFile:'.length), 10);
}
