import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { decodeRequest, encodeRequest } from '../../../pkg/shim/protocol.ts';
import { decodeSpoolEntry, isSpoolFileName, spoolFileName } from '../../../pkg/shim/spool.ts';
import { listSpooled, removeSpooled, writeSpooledDel } from '../../../pkg/shim/spool-fs.ts';

const delLine = (containerId: string, ifname: string, stdin = '{"cniVersion":"1.0.0"}'): string =>
  encodeRequest({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: containerId, CNI_IFNAME: ifname }, stdin);

describe('spool file names', () => {
  it('are <containerId>.<ifname>.del.json for ordinary ids', () => {
    expect(spoolFileName('0123abcd', 'eth0')).toBe('0123abcd.eth0.del.json');
    expect(isSpoolFileName('0123abcd.eth0.del.json')).toBe(true);
    expect(isSpoolFileName('0123abcd.eth0.del.json.bad')).toBe(false);
    expect(isSpoolFileName('0123abcd.eth0.del.json.1.abc.tmp')).toBe(false);
  });

  it('never give two different pairs the same name', () => {
    const pairs: [string, string][] = [
      ['a.b', 'c'],
      ['a', 'b.c'],
      ['a', 'b%2Ec'],
      ['a', 'b'],
    ];
    const names = pairs.map(([c, i]) => spoolFileName(c, i));
    expect(new Set(names).size).toBe(pairs.length);
  });

  it('stay under NAME_MAX for absurdly long container ids, still unique', () => {
    const long = 'a'.repeat(1000);
    const n1 = spoolFileName(long, 'eth0');
    const n2 = spoolFileName(long, 'eth1');
    const n3 = spoolFileName(`${long}b`, 'eth0');
    expect(n1.length).toBeLessThan(200);
    expect(n1.endsWith('.del.json')).toBe(true);
    expect(new Set([n1, n2, n3]).size).toBe(3);
  });

  it('refuse ids and ifnames that could escape the directory', () => {
    for (const [c, i] of [
      ['../etc', 'eth0'],
      ['a/b', 'eth0'],
      ['.hidden', 'eth0'],
      ['', 'eth0'],
      ['abc', '../x'],
      ['abc', '..'],
      ['abc', 'a/b'],
      ['abc', 'eth0 '],
      ['abc', 'averyveryverylongname'],
    ] as const) {
      let code: number | undefined;
      try {
        spoolFileName(c, i);
      } catch (err) {
        code = err instanceof CniError ? err.code : -1;
      }
      expect(code, `${c} ${i}`).toBe(CniCode.INVALID_ENV);
    }
  });

  it('decodeSpoolEntry accepts only a DEL whose pair matches the file name', () => {
    const line = delLine('abc', 'eth0');
    expect(decodeSpoolEntry('abc.eth0.del.json', line)).toEqual(decodeRequest(line));
    expect(() => decodeSpoolEntry('abc.eth1.del.json', line)).toThrow(/does not match its content/);
    const add = encodeRequest({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' }, '{}');
    expect(() => decodeSpoolEntry('abc.eth0.del.json', add)).toThrow(/"ADD" request, not DEL/);
    expect(() => decodeSpoolEntry('abc.eth0.del.json', '{"v":1,')).toThrow(CniError);
  });
});

describe('spool on disk', () => {
  let root: string;
  let dir: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'trl-spool-'));
    dir = join(root, 'var', 'spool');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('writes the request line to <id>.<ifname>.del.json, dir 0700 and file 0600, no temp left', () => {
    const line = delLine('abc', 'eth0');
    const file = writeSpooledDel(dir, 'abc', 'eth0', line);
    expect(file).toBe(join(dir, 'abc.eth0.del.json'));
    expect(readFileSync(file, 'utf8')).toBe(line);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['abc.eth0.del.json']);
  });

  it('sets mode 0600 whatever the umask', () => {
    const old = process.umask(0o000);
    try {
      const file = writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0'));
      expect(statSync(file).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(old);
    }
  });

  it('replaces an earlier DEL for the same pair and keeps pairs apart', async () => {
    writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0', '{"first":1}'));
    writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0', '{"second":2}'));
    writeSpooledDel(dir, 'abc', 'net1', delLine('abc', 'net1'));
    const { entries, bad } = await listSpooled(dir);
    expect(bad).toEqual([]);
    expect(entries.map((e) => [e.file, e.request.stdin])).toEqual([
      [join(dir, 'abc.eth0.del.json'), '{"second":2}'],
      [join(dir, 'abc.net1.del.json'), '{"cniVersion":"1.0.0"}'],
    ]);
    expect(entries[0]?.request.env).toEqual({
      CNI_COMMAND: 'DEL',
      CNI_CONTAINERID: 'abc',
      CNI_IFNAME: 'eth0',
    });
  });

  it('fails with IO_FAILURE naming the directory when it cannot write', () => {
    writeFileSync(join(root, 'file'), 'x');
    const blocked = join(root, 'file', 'spool'); // a path under a regular file
    expect(() => writeSpooledDel(blocked, 'abc', 'eth0', delLine('abc', 'eth0'))).toThrow(
      expect.objectContaining({
        code: CniCode.IO_FAILURE,
        message: expect.stringContaining(`could not spool the DEL to ${blocked}`),
      }),
    );
  });

  it('lists a missing directory as empty', async () => {
    expect(await listSpooled(join(root, 'nope'))).toEqual({ entries: [], bad: [], unreadable: [] });
  });

  it('moves corrupt files aside and reports them instead of throwing', async () => {
    writeSpooledDel(dir, 'good', 'eth0', delLine('good', 'eth0'));
    writeFileSync(join(dir, 'junk.eth0.del.json'), '{"v":1,"env":');
    writeFileSync(join(dir, 'moved.eth0.del.json'), delLine('other', 'eth0'));
    writeFileSync(join(dir, 'README'), 'not a spool file');
    const { entries, bad } = await listSpooled(dir);
    expect(entries.map((e) => e.file)).toEqual([join(dir, 'good.eth0.del.json')]);
    expect(bad.map((b) => [b.file, b.movedTo])).toEqual([
      [join(dir, 'junk.eth0.del.json'), join(dir, 'junk.eth0.del.json.bad')],
      [join(dir, 'moved.eth0.del.json'), join(dir, 'moved.eth0.del.json.bad')],
    ]);
    expect(bad[0]?.reason).toMatch(/not valid JSON/);
    expect(bad[1]?.reason).toMatch(/does not match its content/);
    expect(readdirSync(dir).sort()).toEqual([
      'README',
      'good.eth0.del.json',
      'junk.eth0.del.json.bad',
      'moved.eth0.del.json.bad',
    ]);
    // A second pass does not see them again.
    expect((await listSpooled(dir)).bad).toEqual([]);
  });

  it('leaves a DEL it cannot read now (an I/O error) for the next drain, never sets it aside', async () => {
    // The runtime was told the DEL succeeded: set aside, it would never run, and the pod's lease,
    // veth and routes would stay. The kernel's EIO: a link to /proc/self/mem, whose offset 0 no
    // process maps.
    const file = join(dir, 'abc.eth0.del.json');
    writeSpooledDel(dir, 'other', 'eth0', delLine('other', 'eth0'));
    symlinkSync('/proc/self/mem', file);
    const starved = await listSpooled(dir);
    expect(starved.entries.map((e) => e.file)).toEqual([join(dir, 'other.eth0.del.json')]);
    expect(starved.bad).toEqual([]);
    expect(starved.unreadable).toEqual([{ file, reason: expect.stringMatching(/EIO/) }]);
    // Readable at the next drain: listed, nothing moved aside.
    rmSync(file);
    writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0'));
    const later = await listSpooled(dir);
    expect(later.entries.map((e) => e.file)).toEqual([file, join(dir, 'other.eth0.del.json')]);
    expect(readdirSync(dir).sort()).toEqual(['abc.eth0.del.json', 'other.eth0.del.json']);
  });

  it('deletes temp files left by a shim that died mid-write, but not fresh ones', async () => {
    writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0'));
    const stale = join(dir, 'abc.eth1.del.json.1.x.tmp');
    const fresh = join(dir, 'abc.eth2.del.json.2.y.tmp');
    writeFileSync(stale, 'partial');
    writeFileSync(fresh, 'partial');
    const old = new Date(Date.now() - 11 * 60 * 1000);
    utimesSync(stale, old, old);
    const { entries } = await listSpooled(dir);
    expect(entries).toHaveLength(1);
    expect(readdirSync(dir).sort()).toEqual(['abc.eth0.del.json', 'abc.eth2.del.json.2.y.tmp']);
  });

  it('removeSpooled deletes and is idempotent', async () => {
    const file = writeSpooledDel(dir, 'abc', 'eth0', delLine('abc', 'eth0'));
    await removeSpooled(file);
    await removeSpooled(file);
    expect(readdirSync(dir)).toEqual([]);
  });
});
