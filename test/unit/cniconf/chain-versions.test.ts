import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChainVersionProbe,
  commonVersions,
  describeChainProblems,
  MountNsUnreachable,
  pluginVersions,
} from '../../../pkg/cniconf/index.ts';
import { SHIM_BINARY } from '../../support/cni-driver.ts';

const PORTMAP = '/usr/lib/cni/portmap';

describe('the versions a config list may advertise', () => {
  it('are the known versions every chained plugin supports', () => {
    expect(
      commonVersions([
        ['0.4.0', '1.0.0', '1.1.0'],
        ['1.0.0', '1.1.0'],
      ]),
    ).toEqual(['1.0.0', '1.1.0']);
    expect(
      commonVersions([
        ['0.4.0', '1.0.0', '1.1.0'],
        ['0.3.1', '1.0.0'],
      ]),
    ).toEqual(['1.0.0']);
    expect(commonVersions([['1.1.0'], []])).toEqual([]);
  });

  it.skipIf(!existsSync(PORTMAP))(
    `Debian's portmap answers VERSION without 1.1.0, so only 1.0.0 is advertised${existsSync(PORTMAP) ? '' : ` (skipped: no ${PORTMAP}; apt-get install containernetworking-plugins)`}`,
    async () => {
      const answer = await pluginVersions(PORTMAP);
      expect(answer).toHaveProperty('versions');
      const versions = 'versions' in answer ? answer.versions : [];
      expect(versions).toContain('1.0.0');
      expect(versions).not.toContain('1.1.0');
      expect(await new ChainVersionProbe().check([{ path: PORTMAP, chained: true }])).toEqual({
        versions: ['1.0.0'],
        problems: [],
      });
    },
  );

  it.skipIf(!existsSync(SHIM_BINARY))(
    `a chain of plugins that speak 1.1.0 (our shim) advertises it${existsSync(SHIM_BINARY) ? '' : ` (skipped: no ${SHIM_BINARY}; npm run build)`}`,
    async () => {
      expect(await new ChainVersionProbe().check([{ path: SHIM_BINARY, chained: true }])).toEqual({
        versions: ['1.0.0', '1.1.0'],
        problems: [],
      });
    },
  );

  it('a plugin that exits without reading stdin (EPIPE on our write) neither crashes us nor loses its answer', async () => {
    // Before the fix, the EPIPE on the plugin's closed stdin was an uncaught 'error' event: the
    // agent died at start-up (seen in the fault suite's test bed). 1,000 quick probes reproduced it
    // every time here.
    const dir = mkdtempSync(join(tmpdir(), 'trl-chain-'));
    const plugin = script(
      dir,
      'plug',
      `exec 0<&-\necho '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'`,
    );
    try {
      for (let round = 0; round < 20; round++) {
        const answers = await Promise.all(Array.from({ length: 50 }, () => pluginVersions(plugin)));
        for (const a of answers) expect(a).toEqual({ versions: ['0.4.0', '1.0.0'] });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** An executable shell script in `dir`. */
function script(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

describe('a binary that cannot serve the config list is a problem that says why, never a default', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trl-chain-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('missing, failing, killed, silent, not JSON, a CNI error: each named', async () => {
    expect(await pluginVersions(join(dir, 'absent'))).toEqual({ problem: 'cannot be run: ENOENT' });
    const glibc = script(
      dir,
      'old-host',
      `echo "$0: /lib/x86_64-linux-gnu/libc.so.6: version \\\`GLIBC_2.34' not found (required by $0)" >&2; exit 1`,
    );
    expect(await pluginVersions(glibc)).toEqual({
      problem: `exited with status 1: ${glibc}: /lib/x86_64-linux-gnu/libc.so.6: version \`GLIBC_2.34' not found (required by ${glibc})`,
    });
    expect(await pluginVersions(script(dir, 'sigill', 'kill -ILL $$'))).toEqual({
      problem: 'was killed by SIGILL',
    });
    expect(await pluginVersions(script(dir, 'slow', 'exec sleep 30'), { timeoutMs: 300 })).toEqual({
      problem: 'did not answer VERSION within 0.3 s',
    });
    expect(await pluginVersions(script(dir, 'chatty', 'echo hello'))).toEqual({
      problem: 'answered VERSION with something other than JSON: "hello\\n"',
    });
    expect(
      await pluginVersions(script(dir, 'refuses', `echo '{"code":4,"msg":"unknown command"}'; exit 1`)),
    ).toEqual({ problem: 'exited with status 1: code 4: unknown command' });
    expect(await pluginVersions(script(dir, 'odd', `echo '{"code":4,"msg":"no"}'`))).toEqual({
      problem: 'answered VERSION with an error: code 4: no',
    });
  });

  it('a plugin that ignores SIGTERM, or leaves a process holding its stdout, is killed and answered for at the timeout', async () => {
    // spawn's own timeout sent one SIGTERM to the plugin alone: both hung the probe (and with it the
    // publication and every later reconcile pass) for as long as the plugin liked.
    const stubborn = script(dir, 'stubborn', "trap '' TERM; sleep 30 & sleep 30");
    let started = Date.now();
    expect(await pluginVersions(stubborn, { timeoutMs: 300 })).toEqual({
      problem: 'did not answer VERSION within 0.3 s',
    });
    expect(Date.now() - started).toBeLessThan(5_000);
    // One that answers and exits, leaving a process of another group with its stdout: judged from its
    // answer once it has exited, not reported as a timeout.
    const pidFile = join(dir, 'escaped.pid');
    const escaping = script(
      dir,
      'escaping',
      `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'; setsid sleep 30 & echo $! > ${pidFile}; exit 0`,
    );
    try {
      started = Date.now();
      expect(await pluginVersions(escaping, { timeoutMs: 3_000 })).toEqual({ versions: ['1.0.0'] });
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      const pid = Number(readFileSync(pidFile, 'utf8'));
      if (pid > 0) spawnSync('kill', ['-9', String(pid)]);
    }
  }, 20_000);

  it('a plugin that answers and exits, leaving a process of its group with stdout: answered, and that process killed', async () => {
    const pidFile = join(dir, 'left.pid');
    const leaving = script(
      dir,
      'leaving',
      `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'; sleep 30 & echo $! > ${pidFile}; exit 0`,
    );
    expect(await pluginVersions(leaving, { timeoutMs: 3_000 })).toEqual({ versions: ['1.0.0'] });
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const alive = (): boolean => {
      try {
        return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 40 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
    const left = alive();
    if (left) spawnSync('kill', ['-9', String(pid)]);
    expect(left).toBe(false);
  });

  it('the check lists every problem, counts a chained plugin without 1.0.0, and not loopback (unchained)', async () => {
    const old = script(dir, 'portmap', `echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.1","0.4.0"]}'`);
    const loopback = script(dir, 'loopback', `echo '{"cniVersion":"0.4.0","supportedVersions":["0.4.0"]}'`);
    const shim = script(
      dir,
      'trellis',
      `echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'`,
    );
    const check = await new ChainVersionProbe().check([
      { path: shim, chained: true },
      { path: old, chained: true },
      { path: loopback, chained: false },
      { path: join(dir, 'gone'), chained: true },
    ]);
    expect(check.problems).toEqual([
      {
        binary: old,
        problem: 'speaks CNI 0.3.1, 0.4.0, not 1.0.0, the version the config list is written in',
      },
      { binary: join(dir, 'gone'), problem: 'is missing' },
    ]);
    expect(describeChainProblems(check.problems)).toBe(
      'portmap speaks CNI 0.3.1, 0.4.0, not 1.0.0, the version the config list is written in; gone is missing',
    );
  });

  it('a problem is asked again at the next check, so a fixed binary is seen without a restart', async () => {
    const probe = new ChainVersionProbe();
    const plugin = script(dir, 'portmap', 'exit 127');
    expect((await probe.check([{ path: plugin, chained: true }])).problems).toHaveLength(1);
    writeFileSync(plugin, `#!/bin/sh\necho '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'\n`);
    expect(await probe.check([{ path: plugin, chained: true }])).toEqual({
      versions: ['1.0.0'],
      problems: [],
    });
  });
});

describe.skipIf(spawnSync('nsenter', ['--version']).status !== 0)(
  "in the runtime's mount namespace, through nsenter and the binary's fd",
  () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'trl-chain-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('runs the binary there and names it by its path, not its fd', async () => {
      const ok = script(dir, 'portmap', `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'`);
      const mountNs = '/proc/self/ns/mnt';
      expect(await pluginVersions(ok, { mountNs })).toEqual({ versions: ['1.0.0'] });
      const failing = script(dir, 'failing', 'echo "$0: broken" >&2; exit 3');
      const answer = await pluginVersions(failing, { mountNs });
      expect(answer).toHaveProperty('problem');
      expect('problem' in answer && answer.problem).toMatch(/^exited with status 3: .*: broken$/);
      const orphan = join(dir, 'orphan');
      writeFileSync(orphan, '#!/nonexistent/sh\n');
      chmodSync(orphan, 0o755);
      expect(await pluginVersions(orphan, { mountNs })).toEqual({
        problem:
          "cannot be executed in the runtime's mount namespace: No such file or directory (its interpreter or dynamic loader is missing there)",
      });
    });

    it('no process to be had for a moment (EMFILE) is asked again next time, not taken as the namespace out of reach for good', async () => {
      const ok = script(dir, 'portmap', `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'`);
      // A process of its own with a small fd limit, filled up but for one: the binary opens, its pipes
      // do not.
      const probeScript = join(dir, 'probe.mjs');
      writeFileSync(
        probeScript,
        `import { openSync, closeSync } from 'node:fs';
import { ChainVersionProbe } from ${JSON.stringify(join(process.cwd(), 'pkg/cniconf/chain-versions.ts'))};
const probe = new ChainVersionProbe({ mountNs: '/proc/self/ns/mnt' });
const held = [];
try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
closeSync(held.pop());
const starved = await probe.check([{ path: ${JSON.stringify(ok)}, chained: true }]);
for (const fd of held) closeSync(fd);
const later = await probe.check([{ path: ${JSON.stringify(ok)}, chained: true }]);
console.log(JSON.stringify({ starved, later }));
`,
      );
      const run = spawnSync('sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" ${probeScript}`], {
        encoding: 'utf8',
      });
      expect(run.stderr).toBe('');
      const { starved, later } = JSON.parse(run.stdout) as Record<string, unknown>;
      expect(starved).toEqual({
        versions: [],
        problems: [
          {
            binary: ok,
            problem: 'could not be checked: no process could be started (EMFILE)',
            transient: true,
          },
        ],
      });
      // Still in the runtime's namespace: no fallback, nothing said of it.
      expect(later).toEqual({ versions: ['1.0.0'], problems: [] });
    });

    it("a namespace it cannot enter is not the binary's fault: the check falls back to its own and says so", async () => {
      const ok = script(dir, 'portmap', `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'`);
      await expect(pluginVersions(ok, { mountNs: join(dir, 'no-such-ns') })).rejects.toThrow(
        MountNsUnreachable,
      );
      // nsenter through a wrapper that counts its runs.
      const runs = join(dir, 'nsenter-runs');
      const nsenter = script(dir, 'nsenter', `echo run >> ${runs}; exec nsenter "$@"`);
      const probe = new ChainVersionProbe({ mountNs: join(dir, 'no-such-ns'), nsenter });
      const check = await probe.check([{ path: ok, chained: true }]);
      expect(readFileSync(runs, 'utf8')).toBe('run\n');
      expect(check.versions).toEqual(['1.0.0']);
      expect(check.problems).toEqual([]);
      expect(check.hostUnreachable).toMatch(/^nsenter: cannot open .*no-such-ns/);
      // Not tried again (a permission stays), still said: a binary that fails now fails in our namespace.
      writeFileSync(ok, '#!/bin/sh\nexit 7\n');
      expect(await probe.check([{ path: ok, chained: true }])).toEqual({
        versions: [],
        problems: [{ binary: ok, problem: 'exited with status 7' }],
        hostUnreachable: check.hostUnreachable,
      });
      expect(readFileSync(runs, 'utf8')).toBe('run\n');
      // No nsenter at all: the same fallback, not every binary blamed.
      const lost = new ChainVersionProbe({ mountNs: '/proc/self/ns/mnt', nsenter: join(dir, 'no-nsenter') });
      writeFileSync(ok, `#!/bin/sh\necho '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'\n`);
      expect(await lost.check([{ path: ok, chained: true }])).toEqual({
        versions: ['1.0.0'],
        problems: [],
        hostUnreachable: 'nsenter cannot be run: ENOENT',
      });
    });

    it('nsenter out of fds for a moment is a transient problem, not a namespace given up on for good', async () => {
      const ok = script(dir, 'portmap', `echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'`);
      const runs = join(dir, 'nsenter-runs');
      // Its first run fails as nsenter does when it cannot open the namespace file for want of an fd.
      const nsenter = script(
        dir,
        'nsenter',
        `echo run >> ${runs}; if [ $(wc -l < ${runs}) -eq 1 ]; then echo "nsenter: cannot open /proc/1/ns/mnt: Too many open files" >&2; exit 1; fi; exec nsenter "$@"`,
      );
      const probe = new ChainVersionProbe({ mountNs: '/proc/self/ns/mnt', nsenter });
      const first = await probe.check([{ path: ok, chained: true }]);
      expect(first).toEqual({
        versions: [],
        problems: [
          {
            binary: ok,
            problem: 'could not be checked: nsenter: cannot open /proc/1/ns/mnt: Too many open files',
            transient: true,
          },
        ],
      });
      // Asked again in the runtime's namespace, through nsenter.
      expect(await probe.check([{ path: ok, chained: true }])).toEqual({ versions: ['1.0.0'], problems: [] });
      expect(readFileSync(runs, 'utf8')).toBe('run\nrun\n');
    });
  },
);
