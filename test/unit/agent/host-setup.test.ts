import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  cniSourceDirProblem,
  describeCniInstall,
  installCniBinaries,
} from '../../../pkg/agent/host-setup.ts';
import { BinaryRefusedError } from '../../../pkg/cniconf/index.ts';
import { repoRoot } from '../manifests/support.ts';

/**
 * install-cni against real files: the image's source dir (what /app/cni-bin holds) and a node's bin dir
 * (/opt/cni/bin). trellis is always brought up to date; the node's own loopback and portmap, whatever
 * their bytes, are never replaced (the image's are Debian builds needing glibc >= 2.34).
 */

let tmp: string;
let src: string;
let bin: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'trellis-install-cni-'));
  src = join(tmp, 'cni-bin');
  bin = join(tmp, 'opt-cni-bin');
  mkdirSync(src);
  mkdirSync(bin);
  // install-cni runs VERSION on every binary it puts in place: each answers it (and differs from the others).
  for (const name of ['trellis', 'loopback', 'portmap']) {
    writeFileSync(join(src, name), `#!/bin/sh\n# image ${name}\necho '${VERSION_REPLY}'\n`);
    chmodSync(join(src, name), 0o755);
  }
});
afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

const VERSION_REPLY = '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
// referenceDir: no fallback to this host's /usr/lib/cni, so a missing source stays missing.
const install = () =>
  installCniBinaries({
    binDir: bin,
    shimPath: join(src, 'trellis'),
    sourceDir: src,
    referenceDir: join(tmp, 'no-reference-plugins'),
  });
const outcomes = (r: { name: string; outcome: string }[]) =>
  Object.fromEntries(r.map(({ name, outcome }) => [name, outcome]));

/** A plugin the node already had: different bytes, its own mode. */
function nodePlugin(name: string, mode = 0o755): { sha: string; ino: number; mtimeMs: number } {
  const p = join(bin, name);
  writeFileSync(p, `#!/bin/sh\necho node ${name} (static upstream build)\n`);
  chmodSync(p, mode);
  const st = statSync(p);
  return { sha: sha(p), ino: st.ino, mtimeMs: st.mtimeMs };
}

describe('installCniBinaries', () => {
  it("keeps the node's own portmap byte for byte, installs a missing loopback, replaces a different trellis", async () => {
    const portmap = nodePlugin('portmap');
    writeFileSync(join(bin, 'trellis'), '#!/bin/sh\necho old trellis\n');
    chmodSync(join(bin, 'trellis'), 0o755);

    const r = await install();

    expect(outcomes(r)).toEqual({ trellis: 'installed', loopback: 'installed', portmap: 'kept' });
    const st = statSync(join(bin, 'portmap'));
    expect(sha(join(bin, 'portmap'))).toBe(portmap.sha);
    expect(st.ino).toBe(portmap.ino);
    expect(st.mtimeMs).toBe(portmap.mtimeMs);
    expect(sha(join(bin, 'loopback'))).toBe(sha(join(src, 'loopback')));
    expect(statSync(join(bin, 'loopback')).mode & 0o7777).toBe(0o755);
    expect(sha(join(bin, 'trellis'))).toBe(sha(join(src, 'trellis')));
    expect(statSync(join(bin, 'trellis')).mode & 0o7777).toBe(0o755);
    // No temp files left behind.
    expect(readdirSync(bin).sort()).toEqual(['loopback', 'portmap', 'trellis']);
  });

  it('on an empty bin dir installs all three; a second run changes nothing', async () => {
    expect(outcomes(await install())).toEqual({
      trellis: 'installed',
      loopback: 'installed',
      portmap: 'installed',
    });
    for (const name of ['trellis', 'loopback', 'portmap']) {
      expect(sha(join(bin, name)), name).toBe(sha(join(src, name)));
    }
    const inodes = ['trellis', 'loopback', 'portmap'].map((n) => statSync(join(bin, n)).ino);
    // The plugins are now the node's: kept. trellis is identical: unchanged (not rewritten).
    expect(outcomes(await install())).toEqual({ trellis: 'unchanged', loopback: 'kept', portmap: 'kept' });
    expect(['trellis', 'loopback', 'portmap'].map((n) => statSync(join(bin, n)).ino)).toEqual(inodes);
  });

  it("never touches the node's plugins, whatever they are: other mode, symlink, dangling symlink", async () => {
    const loopback = nodePlugin('loopback', 0o700);
    symlinkSync(join(tmp, 'elsewhere', 'portmap'), join(bin, 'portmap'));

    expect(outcomes(await install())).toMatchObject({ loopback: 'kept', portmap: 'kept' });

    expect(sha(join(bin, 'loopback'))).toBe(loopback.sha);
    expect(statSync(join(bin, 'loopback')).mode & 0o7777).toBe(0o700);
    expect(lstatSync(join(bin, 'portmap')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(bin, 'portmap'))).toBe(join(tmp, 'elsewhere', 'portmap'));
  });

  it('needs no source for a plugin the node already has, and fails before writing when one is missing', async () => {
    nodePlugin('portmap');
    rmSync(join(src, 'portmap'));
    expect(outcomes(await install())).toMatchObject({ portmap: 'kept', loopback: 'installed' });

    rmSync(join(bin, 'loopback'));
    rmSync(join(bin, 'trellis'));
    rmSync(join(src, 'loopback'));
    // Not in the source dir, so looked for in the reference dir: that is the path the error names.
    await expect(install()).rejects.toThrow(
      `cannot install CNI binaries: missing ${join(tmp, 'no-reference-plugins', 'loopback')}`,
    );
    expect(readdirSync(bin)).toEqual(['portmap']);
  });
});

describe('the new trellis is checked before it replaces the installed one', () => {
  const installChecked = (checkBinary: (copy: string) => Promise<string | undefined>) =>
    installCniBinaries({
      binDir: bin,
      shimPath: join(src, 'trellis'),
      sourceDir: src,
      referenceDir: join(tmp, 'no-reference-plugins'),
      checkBinary,
    });

  it('a refused one leaves the installed trellis as it was, and no copy behind', async () => {
    writeFileSync(join(bin, 'trellis'), '#!/bin/sh\necho old trellis\n');
    chmodSync(join(bin, 'trellis'), 0o755);
    const old = { sha: sha(join(bin, 'trellis')), ino: statSync(join(bin, 'trellis')).ino };
    const seen: { path: string; sha: string; mode: number }[] = [];
    const refusal = installChecked(async (copy) => {
      seen.push({ path: copy, sha: sha(copy), mode: statSync(copy).mode & 0o7777 });
      return 'exited with status 1: cannot run here';
    });
    await expect(refusal).rejects.toBeInstanceOf(BinaryRefusedError);
    await expect(refusal).rejects.toThrow(
      `the new ${join(bin, 'trellis')} exited with status 1: cannot run here: the installed one was kept`,
    );
    // The check ran on the complete copy, in the bin dir, as it would be installed.
    expect(seen).toEqual([
      { path: expect.stringContaining(`${bin}/.trellis.`), sha: sha(join(src, 'trellis')), mode: 0o755 },
    ]);
    expect(sha(join(bin, 'trellis'))).toBe(old.sha);
    expect(statSync(join(bin, 'trellis')).ino).toBe(old.ino);
    expect(readdirSync(bin)).toEqual(['trellis']);
    // A node with none installed yet: none is.
    rmSync(join(bin, 'trellis'));
    await expect(installChecked(async () => 'exited with status 1: cannot run here')).rejects.toThrow(
      `the new ${join(bin, 'trellis')} exited with status 1: cannot run here: none was installed`,
    );
    expect(readdirSync(bin)).toEqual([]);
  });

  it("a plugin the node lacks is checked too: one that cannot run there is not put in place, to be kept as the node's own", async () => {
    const checked: string[] = [];
    const refusal = installChecked(async (copy) => {
      checked.push(copy);
      return copy.includes('/.loopback.')
        ? "cannot be executed in the runtime's mount namespace: Exec format error"
        : undefined;
    });
    await expect(refusal).rejects.toThrow(
      `the new ${join(bin, 'loopback')} cannot be executed in the runtime's mount namespace: Exec format error: none was installed`,
    );
    expect(checked.map((c) => c.slice(bin.length + 1).split('.')[1])).toEqual(['trellis', 'loopback']);
    expect(readdirSync(bin)).toEqual(['trellis']); // no loopback, no copy left behind
    // Once the node has its own loopback, install-cni goes on past it.
    writeFileSync(join(bin, 'loopback'), '#!/bin/sh\n');
    expect(outcomes(await installChecked(async () => undefined))).toMatchObject({
      trellis: 'unchanged',
      loopback: 'kept',
      portmap: 'installed',
    });
  });

  it('one that passes is installed; an unchanged one is not run again', async () => {
    let runs = 0;
    const pass = async () => {
      runs += 1;
      return undefined;
    };
    expect(outcomes(await installChecked(pass))).toMatchObject({ trellis: 'installed' });
    expect(sha(join(bin, 'trellis'))).toBe(sha(join(src, 'trellis')));
    expect(outcomes(await installChecked(pass))).toMatchObject({ trellis: 'unchanged' });
    expect(runs).toBe(3); // trellis, loopback and portmap, once each
  });
});

describe('an explicit CNI source dir', () => {
  it('must exist, be a directory and hold trellis', () => {
    expect(cniSourceDirProblem(src)).toBeUndefined();
    expect(cniSourceDirProblem(join(tmp, 'nope'))).toBe('does not exist');
    expect(cniSourceDirProblem(join(src, 'loopback'))).toBe('is not a directory');
    rmSync(join(src, 'trellis'));
    expect(cniSourceDirProblem(src)).toBe('holds no trellis binary');
  });

  it('a plugin it lacks comes from the reference dir, and the log line says where each file came from', async () => {
    const ref = join(tmp, 'reference');
    mkdirSync(ref);
    writeFileSync(join(ref, 'portmap'), '#!/bin/sh\necho debian portmap\n');
    rmSync(join(src, 'portmap'));
    const r = await installCniBinaries({
      binDir: bin,
      shimPath: join(src, 'trellis'),
      sourceDir: src,
      referenceDir: ref,
    });
    const { fields, message } = describeCniInstall(r);
    expect(fields).toEqual({
      installed: ['trellis', 'loopback', 'portmap'],
      unchanged: [],
      kept: [],
      from: { trellis: join(src, 'trellis'), loopback: join(src, 'loopback'), portmap: join(ref, 'portmap') },
    });
    expect(message).toBe(
      `CNI binaries: installed trellis from ${src}; installed loopback from ${src} and portmap from ${ref}, ` +
        "as the node had none (the image's are Debian builds: they need glibc >= 2.34 on the node)",
    );
  });
});

describe('trellis-agent install-cni (the init container command)', () => {
  const installCni = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [join(repoRoot, 'cmd', 'agent', 'main.ts'), 'install-cni', ...args], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { PATH: process.env.PATH ?? '', TRELLIS_LOG_LEVEL: 'info', ...env },
    });

  it('an explicit source dir that does not exist, or lacks trellis: exit 2 naming it, nothing installed', () => {
    const nope = join(tmp, 'nope');
    const flag = installCni([`--cni-bin-dir=${bin}`, `--cni-source-dir=${nope}`]);
    expect(flag.status, flag.stdout).toBe(2);
    expect(flag.stderr).toBe(`trellis-agent: --cni-source-dir ${nope} does not exist\n`);
    const env = installCni([`--cni-bin-dir=${bin}`], { TRELLIS_CNI_SOURCE_DIR: nope });
    expect(env.status, env.stdout).toBe(2);
    expect(env.stderr).toBe(
      `trellis-agent: --cni-source-dir (from $TRELLIS_CNI_SOURCE_DIR) ${nope} does not exist\n`,
    );
    rmSync(join(src, 'trellis'));
    const noShim = installCni([`--cni-bin-dir=${bin}`, `--cni-source-dir=${src}`]);
    expect(noShim.status, noShim.stdout).toBe(2);
    expect(noShim.stderr).toBe(`trellis-agent: --cni-source-dir ${src} holds no trellis binary\n`);
    expect(readdirSync(bin)).toEqual([]);
  });

  it('a new trellis that does not answer VERSION: exit 1, an error line saying why, the installed one kept', () => {
    writeFileSync(join(bin, 'trellis'), '#!/bin/sh\necho old trellis\n');
    chmodSync(join(bin, 'trellis'), 0o755);
    const old = sha(join(bin, 'trellis'));
    // A build for another CPU, say: here, a binary that dies at start.
    writeFileSync(join(src, 'trellis'), '#!/bin/sh\necho "cannot execute binary file" >&2\nexit 126\n');
    const r = installCni([`--cni-bin-dir=${bin}`, `--cni-source-dir=${src}`]);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.at(-1)).toMatchObject({
      level: 'error',
      binary: join(bin, 'trellis'),
      from: join(src, 'trellis'),
      problem: 'exited with status 126: cannot execute binary file',
      msg: 'not installing the new CNI binary: it exited with status 126: cannot execute binary file on this node; the installed one was kept',
    });
    expect(sha(join(bin, 'trellis'))).toBe(old);
    expect(readdirSync(bin)).toEqual(['trellis']);
  });

  it('a relative --cni-bin-dir: exit 2 naming the flag', () => {
    const r = installCni(['--cni-bin-dir=relative', `--cni-source-dir=${src}`]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('trellis-agent: --cni-bin-dir must be an absolute path, got "relative"\n');
  });

  it('logs which binaries it installed and which of the node it kept', () => {
    nodePlugin('portmap');
    const before = sha(join(bin, 'portmap'));
    const r = spawnSync(
      process.execPath,
      [
        join(repoRoot, 'cmd', 'agent', 'main.ts'),
        'install-cni',
        `--cni-bin-dir=${bin}`,
        `--cni-source-dir=${src}`,
      ],
      { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TRELLIS_LOG_LEVEL: 'info' } },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const line = lines.find((l) => l.dir === bin);
    expect(line, r.stdout).toBeDefined();
    expect(line).toMatchObject({
      installed: ['trellis', 'loopback'],
      unchanged: [],
      kept: ['portmap'],
      from: { trellis: join(src, 'trellis'), loopback: join(src, 'loopback') },
    });
    expect(String(line!.msg)).toMatch(/kept.*portmap/);
    expect(sha(join(bin, 'portmap'))).toBe(before);
    expect(sha(join(bin, 'loopback'))).toBe(sha(join(src, 'loopback')));
  });
});
