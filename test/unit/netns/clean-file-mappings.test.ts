import { describe, expect, it } from 'vitest';
import { cleanFileMappings } from '../../../pkg/netns/clean-file-mappings.ts';

const EXE = '/usr/local/bin/node';

/** One smaps entry as the kernel writes it (the fields the selector reads, and some it does not). */
function entry(
  range: string,
  perms: string,
  path: string,
  fields: { rss?: number; anonymous?: number; swap?: number; vmFlags?: string } = {},
): string {
  const { rss = 64, anonymous = 0, swap = 0, vmFlags = 'rd mr mw me' } = fields;
  return [
    `${range} ${perms} 00002000 fe:00 260131${path === '' ? '' : `                     ${path}`}`,
    'Size:                 20 kB',
    `Rss:                 ${rss} kB`,
    'Pss:                  20 kB',
    'Private_Clean:        20 kB',
    `Anonymous:            ${anonymous} kB`,
    `Swap:                 ${swap} kB`,
    'Locked:                0 kB',
    `VmFlags: ${vmFlags}`,
  ].join('\n');
}

describe('cleanFileMappings', () => {
  it("chooses the executable's and shared objects' read-only private mappings that hold only page-cache pages", () => {
    const smaps = [
      entry('400000-600000', 'r--p', EXE, { rss: 16000 }),
      entry('600000-a00000', 'r-xp', EXE, { rss: 19000, vmFlags: 'rd ex mr mw me' }),
      entry('7f0000000000-7f0000100000', 'r-xp', '/usr/lib/x86_64-linux-gnu/libc.so.6', { rss: 1048 }),
      entry('7f0000200000-7f0000300000', 'r--p', '/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30'),
      entry('7f0000300000-7f0000400000', 'r-xp', '/app/node_modules/ffi-rs/ffi-rs.linux-x64-gnu.node'),
      entry('7f0000400000-7f0000500000', 'r--p', '/usr/lib/x86_64-linux-gnu/libm.so'),
    ].join('\n');
    expect(cleanFileMappings(smaps, EXE)).toEqual([
      { start: 0x400000, length: 0x200000, path: EXE, rssKb: 16000 },
      { start: 0x600000, length: 0x400000, path: EXE, rssKb: 19000 },
      {
        start: 0x7f0000000000,
        length: 0x100000,
        path: '/usr/lib/x86_64-linux-gnu/libc.so.6',
        rssKb: 1048,
      },
      {
        start: 0x7f0000200000,
        length: 0x100000,
        path: '/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30',
        rssKb: 64,
      },
      {
        start: 0x7f0000300000,
        length: 0x100000,
        path: '/app/node_modules/ffi-rs/ffi-rs.linux-x64-gnu.node',
        rssKb: 64,
      },
      { start: 0x7f0000400000, length: 0x100000, path: '/usr/lib/x86_64-linux-gnu/libm.so', rssKb: 64 },
    ]);
  });

  it('leaves every mapping whose pages are not all the file’s own alone', () => {
    const libc = '/usr/lib/x86_64-linux-gnu/libc.so.6';
    const smaps = [
      // the RELRO segment: read-only now, but the dynamic linker wrote its relocations into copies
      entry('1000-2000', 'r--p', libc, { anonymous: 16 }),
      entry('2000-3000', 'r--p', libc, { swap: 4 }),
      entry('3000-4000', 'rw-p', libc),
      entry('4000-5000', 'r--s', libc),
      entry('5000-6000', 'r-xp', libc, { vmFlags: 'rd ex mr mw me lo' }),
      entry('6000-7000', 'r--p', libc, { vmFlags: 'rd mr io pf' }),
      // nothing resident: nothing to gain
      entry('7000-8000', 'r-xp', libc, { rss: 0 }),
      // not the executable or a library: a data file some code may unmap while we look
      entry('8000-9000', 'r--p', '/usr/lib/locale/locale-archive'),
      entry('9000-a000', 'r--p', '/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)'),
      entry('a000-b000', 'r--p', 'libc.so.6'),
      entry('b000-c000', 'r--p', '[vdso]'),
      entry('c000-d000', 'r--p', ''),
      entry('d000-e000', 'r--p', 'anon_inode:[io_uring]'),
      entry('e000-f000', 'r--p', '/usr/local/bin/nodejs'),
    ].join('\n');
    expect(cleanFileMappings(smaps, EXE)).toEqual([]);
  });

  it('an unreadable or missing count leaves its mapping alone; an empty or partial text is no error', () => {
    const smaps = entry('1000-2000', 'r--p', EXE).replace('Anonymous:            0 kB', 'Anonymous: ?');
    expect(cleanFileMappings(smaps, EXE)).toEqual([]);
    expect(cleanFileMappings('', EXE)).toEqual([]);
    expect(
      cleanFileMappings(`1000-2000 r--p 00000000 fe:00 1 ${EXE}\nRss: 8 kB\nAnonymous: 0 kB`, EXE),
    ).toEqual([{ start: 0x1000, length: 0x1000, path: EXE, rssKb: 8 }]);
    expect(cleanFileMappings(`1000-2000 r--p 00000000 fe:00 1 ${EXE}\nRss: 8 kB\nSwap: 0 kB`, EXE)).toEqual(
      [],
    );
  });
});
