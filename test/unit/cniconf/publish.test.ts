import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HostFileError } from '../../../pkg/cniconf/atomic.ts';
import {
  configsBefore,
  installBinary,
  installBinaryIfAbsent,
  publishConflist,
  removeConflist,
} from '../../../pkg/cniconf/publish.ts';
import { renderConflist } from '../../../pkg/cniconf/render.ts';

let dir: string;
const procs: ChildProcess[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-cniconf-'));
});
afterEach(() => {
  for (const p of procs.splice(0)) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const content = renderConflist({
  socket: '/run/trellis/cni.sock',
  spoolDir: '/var/lib/trellis/spool',
  mtu: 1500,
});
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('publishConflist', () => {
  it('writes atomically, leaves other files alone, leaves no temp file', async () => {
    writeFileSync(join(dir, '05-other.conflist'), 'someone else');
    writeFileSync(join(dir, '.hidden'), 'x');
    expect(await publishConflist(dir, '10-trellis.conflist', content)).toBe('written');
    expect(readFileSync(join(dir, '10-trellis.conflist'), 'utf8')).toBe(content);
    expect(statSync(join(dir, '10-trellis.conflist')).mode & 0o777).toBe(0o644);
    expect(readdirSync(dir).sort()).toEqual(['.hidden', '05-other.conflist', '10-trellis.conflist']);
    expect(readFileSync(join(dir, '05-other.conflist'), 'utf8')).toBe('someone else');
  });

  it("is 'unchanged' on a second publish with the same content, without touching the file", async () => {
    await publishConflist(dir, '10-trellis.conflist', content);
    const path = join(dir, '10-trellis.conflist');
    const old = new Date('2020-01-01T00:00:00Z');
    utimesSync(path, old, old);
    const before = statSync(path);
    expect(await publishConflist(dir, '10-trellis.conflist', content)).toBe('unchanged');
    const after = statSync(path);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.ino).toBe(before.ino);
    expect(await publishConflist(dir, '10-trellis.conflist', content.replace('1500', '1450'))).toBe(
      'written',
    );
    expect(statSync(path).ino).not.toBe(before.ino); // replaced by rename, not rewritten in place
  });

  it('creates a missing conf dir and removes stale temp files of its own target only', async () => {
    const sub = join(dir, 'net.d');
    await publishConflist(sub, '10-trellis.conflist', content);
    writeFileSync(join(sub, '.10-trellis.conflist.4242.deadbeef.tmp'), 'crashed writer');
    writeFileSync(join(sub, '.99-other.conflist.4242.deadbeef.tmp'), 'not ours');
    await publishConflist(sub, '10-trellis.conflist', `${content} `);
    expect(readdirSync(sub).sort()).toEqual(['.99-other.conflist.4242.deadbeef.tmp', '10-trellis.conflist']);
  });

  it('a reader polling during repeated publishes only ever sees a complete file', async () => {
    const path = join(dir, '10-trellis.conflist');
    const big = (n: number) => `${JSON.stringify({ n, pad: 'x'.repeat(200_000) })}\n`;
    await publishConflist(dir, '10-trellis.conflist', big(0));
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const text = readFileSync(path, 'utf8');
        JSON.parse(text); // throws on a torn file
        reads++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 1; i <= 30; i++) await publishConflist(dir, '10-trellis.conflist', big(i));
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect(JSON.parse(readFileSync(path, 'utf8')).n).toBe(30);
  });

  it('two publishes at once (from memory, then the first API pass): both succeed, the later one last', async () => {
    const path = join(dir, '10-trellis.conflist');
    for (let round = 0; round < 100; round++) {
      const older = content.replace('1500', String(1400 + (round % 50)));
      const newer = `${content.replace('1500', '1450')}${' '.repeat(round % 3)}`;
      // Neither may remove the other's temp file as stale, nor rename the older content last.
      const results = await Promise.all([
        publishConflist(dir, '10-trellis.conflist', older),
        publishConflist(dir, '10-trellis.conflist', newer),
      ]);
      expect(results[1]).toBe('written');
      expect(readFileSync(path, 'utf8')).toBe(newer);
    }
    expect(readdirSync(dir)).toEqual(['10-trellis.conflist']);
  });

  it('refuses names libcni would not load or that escape the directory', async () => {
    await expect(publishConflist(dir, '10-trellis.conflist.tmp', content)).rejects.toThrow(/must end with/);
    await expect(publishConflist(dir, '../10-trellis.conflist', content)).rejects.toThrow(HostFileError);
    await expect(publishConflist(dir, '.10-trellis.conflist', content)).rejects.toThrow(HostFileError);
  });

  it('removeConflist removes only our file and is idempotent', async () => {
    writeFileSync(join(dir, '05-other.conflist'), 'x');
    await publishConflist(dir, '10-trellis.conflist', content);
    expect(await removeConflist(dir, '10-trellis.conflist')).toBe('removed');
    expect(await removeConflist(dir, '10-trellis.conflist')).toBe('absent');
    expect(readdirSync(dir)).toEqual(['05-other.conflist']);
  });
});

describe('installBinary', () => {
  it('installs with mode 0755, then reports unchanged for identical content', async () => {
    expect(await installBinary('/bin/true', dir, 'trellis')).toBe('installed');
    expect(statSync(join(dir, 'trellis')).mode & 0o7777).toBe(0o755);
    expect(sha(join(dir, 'trellis'))).toBe(sha('/bin/true'));
    const ino = statSync(join(dir, 'trellis')).ino;
    expect(await installBinary('/bin/true', dir, 'trellis')).toBe('unchanged');
    expect(statSync(join(dir, 'trellis')).ino).toBe(ino);
    // Same content but wrong mode is fixed.
    chmodSync(join(dir, 'trellis'), 0o600);
    expect(await installBinary('/bin/true', dir, 'trellis')).toBe('installed');
    expect(statSync(join(dir, 'trellis')).mode & 0o7777).toBe(0o755);
  });

  it('replaces a binary that is running (no ETXTBSY), and the running process is unaffected', async () => {
    const dest = join(dir, 'sleepy');
    copyFileSync('/bin/sleep', dest);
    chmodSync(dest, 0o755);
    const p = spawn(dest, ['30'], { stdio: 'ignore' });
    procs.push(p);
    await new Promise((r) => p.once('spawn', r));
    // A naive in-place write fails while the binary runs: the situation the rename avoids.
    await expect(writeFile(dest, readFileSync('/bin/true'))).rejects.toMatchObject({ code: 'ETXTBSY' });
    expect(await installBinary('/bin/true', dir, 'sleepy')).toBe('installed');
    expect(sha(dest)).toBe(sha('/bin/true'));
    expect(p.exitCode).toBeNull();
    expect(p.killed).toBe(false);
    expect(readdirSync(dir)).toEqual(['sleepy']);
  });
});

describe('installBinaryIfAbsent', () => {
  it('installs a missing binary atomically with mode 0755 and leaves no temp file', async () => {
    expect(await installBinaryIfAbsent('/bin/true', dir, 'loopback')).toBe('installed');
    expect(sha(join(dir, 'loopback'))).toBe(sha('/bin/true'));
    expect(statSync(join(dir, 'loopback')).mode & 0o7777).toBe(0o755);
    expect(readdirSync(dir)).toEqual(['loopback']);
  });

  it('keeps whatever is there: other bytes, other mode, a symlink, a dangling symlink', async () => {
    writeFileSync(join(dir, 'portmap'), "the node's own portmap");
    chmodSync(join(dir, 'portmap'), 0o700);
    const before = statSync(join(dir, 'portmap'));
    symlinkSync('/bin/false', join(dir, 'loopback'));
    symlinkSync(join(dir, 'nowhere'), join(dir, 'bandwidth'));

    for (const name of ['portmap', 'loopback', 'bandwidth']) {
      expect(await installBinaryIfAbsent('/bin/true', dir, name), name).toBe('kept');
    }
    const after = statSync(join(dir, 'portmap'));
    expect(readFileSync(join(dir, 'portmap'), 'utf8')).toBe("the node's own portmap");
    expect(after.mode & 0o7777).toBe(0o700);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(sha(join(dir, 'loopback'))).toBe(sha('/bin/false'));
    expect(readdirSync(dir).sort()).toEqual(['bandwidth', 'loopback', 'portmap']);
  });
});

describe('configsBefore', () => {
  const ours = '10-trellis.conflist';

  it('names the config files the runtime would load first, in its order', () => {
    const dir = ['99-loopback.conf', '10-kindnet.conflist', ours, '05-cilium.conflist', '10-calico.conflist'];
    expect(configsBefore(dir, ours)).toEqual([
      '05-cilium.conflist',
      '10-calico.conflist',
      '10-kindnet.conflist',
    ]);
  });

  it('counts .conf, .conflist and .json files only, as libcni does', () => {
    const dir = ['00-notes.txt', '01-old.conflist.bak', '02-x.json', '03-y.conf', 'README', ours];
    expect(configsBefore(dir, ours)).toEqual(['02-x.json', '03-y.conf']);
  });

  it('is empty when ours is first or not there at all', () => {
    expect(configsBefore([ours, '20-other.conflist', '99-z.conf'], ours)).toEqual([]);
    expect(configsBefore(['05-cilium.conflist'], ours)).toEqual([]);
  });

  it('sorts bytewise, as Go does: upper case before lower, digits before letters', () => {
    expect(configsBefore(['10-Zeta.conflist', '10-beta.conflist', '10-zeta.conflist', ours], ours)).toEqual([
      '10-Zeta.conflist',
      '10-beta.conflist',
    ]);
  });
});
