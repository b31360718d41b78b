import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * unmapCleanFilePages in a real Node process (pkg/netns/file-pages.ts): its file-backed RSS falls by
 * what the start-up touched, and everything the process computes afterwards, through its own code,
 * V8's builtins, ICU, OpenSSL, zlib and a libc call through ffi-rs, comes out as before. The
 * copy-on-write pages the dynamic linker made (the libraries' relocated RELRO data) stay as they were.
 */
const CHILD = `
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileBackedRssKb, unmapCleanFilePages } from ${JSON.stringify(join(import.meta.dirname, '../../../pkg/netns/file-pages.ts'))};
import { trimMalloc } from ${JSON.stringify(join(import.meta.dirname, '../../../pkg/netns/libc.ts'))};

const status = (field) =>
  Number.parseInt(readFileSync('/proc/self/status', 'utf8').split('\\n').find((l) => l.startsWith(field + ':')).slice(field.length + 1), 10);
const copied = () => {
  // Anonymous kB of every private mapping of a file: the copies a madvise must never drop.
  let sum = 0, fileMapping = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
    const h = /^[0-9a-f]+-[0-9a-f]+ \\S{3}p \\S+ \\S+ \\S+ +(\\/.*)$/.exec(line);
    if (h) fileMapping = true;
    else if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) fileMapping = false;
    else if (fileMapping && line.startsWith('Anonymous:')) sum += Number.parseInt(line.slice(10), 10);
  }
  return sum;
};
const work = () => [
  createHash('sha256').update(gzipSync(Buffer.from('trellis '.repeat(10_000)))).digest('hex'),
  new Intl.DateTimeFormat('de-DE', { dateStyle: 'full', timeZone: 'UTC' }).format(new Date(0)),
  JSON.stringify(JSON.parse(JSON.stringify({ a: [1, 2.5, 'x'], b: { c: null } }))),
  /(\\d+)\\.(\\d+)/.exec('10.244.1.0')?.slice(1).join(','),
  (12345.678).toLocaleString('fr-FR'),
].join('|');

trimMalloc();
const before = work();
const fileBefore = status('RssFile');
const copiedBefore = copied();
const done = unmapCleanFilePages();
const fileAfter = status('RssFile');
const copiedAfter = copied();
trimMalloc(); // a libc call through ffi-rs after its own pages were unmapped
const after = work();
console.log(JSON.stringify({ before, after, fileBefore, fileAfter, copiedBefore, copiedAfter, done, read: fileBackedRssKb(), status: status('RssFile') }));
`;

describe('unmapCleanFilePages in a real process', () => {
  it('unmaps the start-up file pages, keeps the copied ones, and the process computes as before', () => {
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', CHILD], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    const r = JSON.parse(out) as {
      before: string;
      after: string;
      fileBefore: number;
      fileAfter: number;
      copiedBefore: number;
      copiedAfter: number;
      done: { kb: number; mappings: number; refused: number };
      read: number;
      status: number;
    };
    expect(r.after).toBe(r.before);
    expect(r.before).toContain('Donnerstag, 1. Januar 1970');
    // An idle Node 24 maps ~40 MB of its binary; most of it is the start-up's.
    expect(r.done.kb).toBeGreaterThan(10_000);
    expect(r.done.refused).toBe(0);
    expect(r.fileBefore - r.fileAfter).toBeGreaterThan(10_000);
    expect(r.copiedBefore).toBeGreaterThan(0);
    expect(r.copiedAfter).toBe(r.copiedBefore);
    // fileBackedRssKb reads the same RssFile (two reads a few µs apart: within a page or two).
    expect(r.read).toBeGreaterThan(1000);
    expect(Math.abs(r.read - r.status)).toBeLessThanOrEqual(64);
  });
});
