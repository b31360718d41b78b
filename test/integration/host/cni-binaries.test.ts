import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import {
  AGENT_BINARY,
  builtSkipReason,
  REFERENCE_PLUGIN_DIR,
  SHIM_BINARY,
} from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inOwnMounts } from '../../support/own-mounts.ts';
import { within } from '../faults/support.ts';

/**
 * The agent runs in a container, the runtime on the host: a chained plugin the agent can run may not
 * run on the host (the image's Debian portmap needs glibc >= 2.34; Ubuntu 20.04 has 2.31). Published
 * anyway, the list fails every pod while the node reports Ready. Here the "host" is this test's mount
 * namespace and the agent has one of its own, as a container does, in which alone portmap's
 * interpreter exists (a tmpfs over an empty directory). With --host-proc the agent runs VERSION in
 * the host's namespace, finds portmap cannot start there, and keeps the list unpublished, saying why
 * in its log and status, until the host can run it.
 */
const skip =
  netnsSkipReason ??
  builtSkipReason() ??
  (spawnSync('unshare', ['--version']).status === 0 && spawnSync('nsenter', ['--version']).status === 0
    ? undefined
    : 'unshare or nsenter (util-linux) is missing') ??
  (existsSync(join(REFERENCE_PLUGIN_DIR, 'loopback')) ? undefined : 'no reference loopback plugin');

const VERSION_REPLY = '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';

describe.skipIf(skip !== undefined)(
  `the config list waits for CNI binaries that run where the runtime runs them${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const pool = new NetnsPool();
    const dir = mkdtempSync(join(tmpdir(), 'trl-cnibin-'));
    const interp = join(dir, 'interp');
    const agents: AgentProcess[] = [];

    /** A node dir: bin/ with trellis, loopback and a portmap whose interpreter is `interp`/sh. */
    function nodeDirs(name: string): { confDir: string; binDir: string } {
      const confDir = join(dir, name, 'net.d');
      const binDir = join(dir, name, 'bin');
      mkdirSync(confDir, { recursive: true });
      mkdirSync(binDir, { recursive: true });
      symlinkSync(SHIM_BINARY, join(binDir, 'trellis'));
      symlinkSync(join(REFERENCE_PLUGIN_DIR, 'loopback'), join(binDir, 'loopback'));
      writeFileSync(join(binDir, 'portmap'), `#!${interp}/sh\necho '${VERSION_REPLY}'\n`, { mode: 0o755 });
      return { confDir, binDir };
    }

    /** Runs the agent in a mount namespace of its own, as a container, with an empty tmpfs over `dir` (then `more`). */
    const ownMounts = (dir: string, more = ''): string[] =>
      inOwnMounts(`mount -t tmpfs tmpfs "$0"${more}`, [dir]);
    /** The agent's own namespace, where a tmpfs over `interp` holds a shell. */
    const containerised = ownMounts(interp, ' && cp /bin/sh "$0/sh"');

    function status(agent: AgentProcess): StatusView {
      const r = spawnSync(
        'ip',
        ['netns', 'exec', agent.ns, AGENT_BINARY, 'status', '--socket', agent.socket, '--json'],
        { encoding: 'utf8', timeout: 30_000 },
      );
      return JSON.parse(r.stdout) as StatusView;
    }

    let checked: AgentProcess;
    let unchecked: AgentProcess;
    let checkedDirs: { confDir: string; binDir: string };
    let uncheckedDirs: { confDir: string; binDir: string };

    beforeAll(async () => {
      mkdirSync(interp);
      // The host's /proc as the DaemonSet mounts it: PID 1 is this test's process (its mount namespace).
      const hostProc = join(dir, 'host-proc');
      mkdirSync(hostProc);
      symlinkSync('/proc/self', join(hostProc, 'self'));
      symlinkSync(`/proc/${process.pid}`, join(hostProc, '1'));
      checkedDirs = nodeDirs('checked');
      uncheckedDirs = nodeDirs('unchecked');
      const common = {
        podCIDRs: ['10.244.1.0/24'],
        wrap: containerised,
        extraArgs: ['--resync-seconds', '1'],
      };
      checked = startAgent({
        ...common,
        ns: pool.add('checked').name,
        publish: checkedDirs,
        extraArgs: [...common.extraArgs, '--host-proc', hostProc],
      });
      unchecked = startAgent({ ...common, ns: pool.add('unchecked').name, publish: uncheckedDirs });
      agents.push(checked, unchecked);
      // Without --host-proc the agent checks in its own namespace, where portmap runs: published.
      await unchecked.ready();
    });

    afterAll(async () => {
      for (const a of agents) {
        await a.kill();
        removeAgentDir(a.dir);
      }
      pool.cleanup();
      rmSync(dir, { recursive: true, force: true });
    });

    it('not published, not ready, the log and status say which binary and why; the list appears once the host runs it', async () => {
      const conflist = join(checkedDirs.confDir, '10-trellis.conflist');
      expect(existsSync(join(uncheckedDirs.confDir, '10-trellis.conflist'))).toBe(true);

      const why = `cannot be executed in the runtime's mount namespace: No such file or directory (its interpreter or dynamic loader is missing there)`;
      const refusal = (l: Record<string, unknown>): boolean =>
        String(l.msg).startsWith('not publishing the CNI config:');
      await within(10_000, 'the refusal logged', () => checked.logs.some(refusal));
      const line = checked.logs.find(refusal);
      expect(line).toMatchObject({
        level: 'error',
        msg: `not publishing the CNI config: portmap ${why} (the runtime would fail every pod)`,
        problems: [{ binary: join(checkedDirs.binDir, 'portmap'), problem: why }],
      });
      // Several passes later: still unpublished, logged once, not ready, and the status names it.
      const passes = (): number => checked.logs.filter((l) => l.msg === 'reconciled').length;
      const seen = passes();
      await within(10_000, 'three more passes', () => passes() >= seen + 3);
      expect(existsSync(conflist)).toBe(false);
      expect(checked.logs.filter(refusal)).toHaveLength(1);
      expect(checked.logs.some((l) => l.msg === 'trellis agent ready')).toBe(false);
      const st = status(checked);
      expect(st.ready).toBe(false);
      expect(st.notReadyReason).toBe(
        `waiting for CNI binaries that run where the runtime runs them: portmap ${why}`,
      );
      expect(st.cniBinaryProblems).toEqual([{ binary: join(checkedDirs.binDir, 'portmap'), problem: why }]);

      // The host gets the interpreter (the agent's namespace still sees its own tmpfs there).
      copyFileSync('/bin/sh', join(interp, 'sh'));
      await within(10_000, 'the list published', () => existsSync(conflist));
      await checked.ready();
      expect(checked.logs.some((l) => l.msg === 'the CNI binaries run now')).toBe(true);
      expect(status(checked).cniBinaryProblems).toBeUndefined();
    });

    it('a plugin symlinked into a host path the agent does not mount is run on the host: published, ready; gone there too, named', async () => {
      // containerd's or a distribution's layout: /opt/cni/bin/portmap -> /usr/libexec/cni/portmap, a
      // path only the host has (install-cni keeps it). In the agent's namespace the link dangles.
      const hostOnly = join(dir, 'host-only');
      mkdirSync(hostOnly);
      writeFileSync(join(hostOnly, 'portmap'), `#!/bin/sh\necho '${VERSION_REPLY}'\n`, { mode: 0o755 });
      const linked = nodeDirs('linked');
      rmSync(join(linked.binDir, 'portmap'));
      symlinkSync(join(hostOnly, 'portmap'), join(linked.binDir, 'portmap'));
      const hostProc = join(dir, 'host-proc');
      const agent = startAgent({
        podCIDRs: ['10.244.1.0/24'],
        ns: pool.add('linked').name,
        publish: linked,
        // Its own mount namespace, with nothing at the host-only path.
        wrap: ownMounts(hostOnly),
        extraArgs: ['--resync-seconds', '1', '--host-proc', hostProc],
      });
      agents.push(agent);
      await agent.ready();
      expect(existsSync(join(linked.confDir, '10-trellis.conflist'))).toBe(true);
      expect(status(agent).cniBinaryProblems).toBeUndefined();

      // Dangling on the host as well: the agent says so (the list in place stays).
      rmSync(join(hostOnly, 'portmap'));
      const dangling = `is a symlink to ${join(hostOnly, 'portmap')}, which the runtime's mount namespace does not have (or cannot start: its interpreter or loader missing there)`;
      await within(10_000, 'the problem in status', () =>
        (status(agent).cniBinaryProblems ?? []).some((p) => p.problem === dangling),
      );
    });

    it("a plugin symlinked to a path the agent's image has too is judged by the host's copy, not the image's", async () => {
      // /opt/cni/bin/portmap -> /usr/lib/cni/portmap: Debian's path, on the host and in the image
      // alike. The host's is too old for the list (no 1.0.0); the image's would vouch for it.
      const shared = join(dir, 'shared-lib');
      mkdirSync(shared);
      const old = '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}';
      writeFileSync(join(shared, 'portmap'), `#!/bin/sh\necho '${old}'\n`, { mode: 0o755 });
      writeFileSync(`${shared}.image`, `#!/bin/sh\necho '${VERSION_REPLY}'\n`, { mode: 0o755 });
      const linked = nodeDirs('shared');
      rmSync(join(linked.binDir, 'portmap'));
      symlinkSync(join(shared, 'portmap'), join(linked.binDir, 'portmap'));
      const agent = startAgent({
        podCIDRs: ['10.244.1.0/24'],
        ns: pool.add('shared').name,
        publish: linked,
        // Its own mount namespace, where the path holds the image's newer portmap.
        wrap: ownMounts(shared, ' && cp "$0.image" "$0/portmap"'),
        extraArgs: ['--resync-seconds', '1', '--host-proc', join(dir, 'host-proc')],
      });
      agents.push(agent);
      const why = 'speaks CNI 0.3.0, 0.3.1, 0.4.0, not 1.0.0, the version the config list is written in';
      const refused = (): boolean => {
        try {
          return (status(agent).cniBinaryProblems ?? []).some((p) => p.problem === why);
        } catch {
          return false; // its admin socket not up yet
        }
      };
      await within(10_000, 'the problem in status', refused);
      expect(existsSync(join(linked.confDir, '10-trellis.conflist'))).toBe(false);
      expect(status(agent).ready).toBe(false);
      // The host's portmap upgraded in place (the link unchanged): asked again, published.
      writeFileSync(join(shared, 'portmap'), `#!/bin/sh\necho '${VERSION_REPLY}'\n`, { mode: 0o755 });
      await agent.ready();
      expect(existsSync(join(linked.confDir, '10-trellis.conflist'))).toBe(true);
    });

    it('binaries that could not be asked for a moment (nsenter out of fds) are asked again within seconds, not at the next pass', async () => {
      // In the agent's own mount namespace nsenter fails its first three runs (one per binary) as it
      // does when it cannot open the namespace file for want of an fd (the agent runs it from
      // /usr/bin: a PATH cannot put a stand-in first). A pass every 10 minutes could not be what
      // makes the node ready.
      const wrappers = join(dir, 'emfile-bin');
      mkdirSync(wrappers);
      const runs = join(wrappers, 'runs');
      const real = spawnSync('sh', ['-c', 'command -v nsenter'], { encoding: 'utf8' }).stdout.trim();
      copyFileSync(real, join(wrappers, 'nsenter.real'));
      writeFileSync(
        join(wrappers, 'nsenter'),
        `#!/bin/sh\necho run >> ${runs}\nif [ "$(wc -l < ${runs})" -le 3 ]; then echo "nsenter: cannot open /proc/1/ns/mnt: Too many open files" >&2; exit 1; fi\nexec ${wrappers}/nsenter.real "$@"\n`,
        { mode: 0o755 },
      );
      const dirs = nodeDirs('emfile');
      copyFileSync('/bin/sh', join(interp, 'sh')); // the host runs portmap (the first test gave it too)
      const agent = startAgent({
        podCIDRs: ['10.244.1.0/24'],
        ns: pool.add('emfile').name,
        publish: dirs,
        wrap: inOwnMounts(`mount --bind "$0/nsenter" ${real}`, [wrappers]),
        extraArgs: ['--resync-seconds', '600', '--host-proc', join(dir, 'host-proc')],
      });
      agents.push(agent);
      await agent.ready();
      expect(existsSync(join(dirs.confDir, '10-trellis.conflist'))).toBe(true);
      const asked = agent.logs.find((l) => String(l.msg).startsWith('could not check the CNI binaries now:'));
      expect(asked, JSON.stringify(agent.logs)).toMatchObject({ level: 'warn' });
      expect(String(asked!.msg)).toContain('Too many open files');
      expect(readFileSync(runs, 'utf8').split('\n').length - 1).toBeGreaterThan(3);
    });

    it('a published list removed under the agent is written back within seconds, not at the next pass', async () => {
      const dirs = nodeDirs('kept');
      // A pass every 10 minutes: only the keeping can bring it back in time.
      const agent = startAgent({
        podCIDRs: ['10.244.1.0/24'],
        ns: pool.add('kept').name,
        publish: dirs,
        extraArgs: ['--resync-seconds', '600'],
      });
      agents.push(agent);
      await agent.ready();
      const conflist = join(dirs.confDir, '10-trellis.conflist');
      const published = readFileSync(conflist, 'utf8');
      rmSync(conflist); // a clean-up of /etc/cni/net.d, another network's uninstall
      const back = (l: Record<string, unknown>): boolean =>
        l.msg === 'the CNI config list was removed under the agent; written back';
      await within(10_000, 'written back', () => agent.logs.some(back));
      expect(agent.logs.find(back)).toMatchObject({ level: 'warn', file: conflist });
      expect(readFileSync(conflist, 'utf8')).toBe(published);
    });

    it('a conf dir the list cannot be written into is named, with what it costs', async () => {
      const dirs = nodeDirs('readonly');
      const agent = startAgent({
        podCIDRs: ['10.244.1.0/24'],
        ns: pool.add('readonly').name,
        publish: dirs,
        // Its own mount namespace, where the conf dir is a read-only tmpfs.
        wrap: ownMounts(dirs.confDir, ' && mount -o remount,ro "$0"'),
        extraArgs: ['--resync-seconds', '600'],
      });
      agents.push(agent);
      const failed = (l: Record<string, unknown>): boolean => l.msg === 'reconcile failed';
      await within(15_000, 'the pass failed', () => agent.logs.some(failed));
      expect(String(agent.logs.find(failed)?.error)).toMatch(
        new RegExp(
          `^cannot write the CNI config list into ${dirs.confDir} \\(mounted read-only\\?\\): .*EROFS.*; the runtime needs it there to set up new pods$`,
        ),
      );
      expect(status(agent).ready).toBe(false);
    });

    it('install-cni keeps the installed trellis when the new one cannot start on the host, and installs it where it can', () => {
      // An upgrade whose binary runs in the image but not on the host (its interpreter or loader only
      // in the container): put under the old list, it would fail every pod, DELs included.
      const nodeBin = join(dir, 'upgrade', 'bin');
      const image = join(dir, 'upgrade', 'image');
      // An interpreter directory of its own: the first test gives the host `interp`'s shell.
      const imageInterp = join(dir, 'upgrade', 'interp');
      for (const d of [nodeBin, image, imageInterp]) mkdirSync(d, { recursive: true });
      copyFileSync(SHIM_BINARY, join(nodeBin, 'trellis'));
      const installed = readFileSync(join(nodeBin, 'trellis'));
      writeFileSync(join(image, 'trellis'), `#!${imageInterp}/sh\necho '${VERSION_REPLY}'\n`, {
        mode: 0o755,
      });
      const hostProc = join(dir, 'host-proc');
      const installCni = (extra: string[]) => {
        const argv = [
          ...ownMounts(imageInterp, ' && cp /bin/sh "$0/sh"'),
          AGENT_BINARY,
          'install-cni',
          `--cni-bin-dir=${nodeBin}`,
          `--cni-source-dir=${image}`,
          ...extra,
        ];
        return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
      };
      const refused = installCni([`--host-proc=${hostProc}`]);
      expect(refused.status, refused.stdout + refused.stderr).toBe(1);
      const line = JSON.parse(refused.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      expect(line).toMatchObject({
        level: 'error',
        binary: join(nodeBin, 'trellis'),
        problem: expect.stringContaining("cannot be executed in the runtime's mount namespace"),
      });
      expect(readFileSync(join(nodeBin, 'trellis')).equals(installed)).toBe(true);
      expect(readdirSync(nodeBin)).toEqual(['trellis']);
      // Checked in its own namespace (no --host-proc), where the interpreter is: installed.
      const done = installCni([]);
      expect(done.status, done.stdout + done.stderr).toBe(0);
      expect(readFileSync(join(nodeBin, 'trellis'), 'utf8')).toContain(VERSION_REPLY);
    });

    it('another network’s config that sorts first is named in the log and status until it goes (the metric: unit tests)', async () => {
      const dir = uncheckedDirs.confDir;
      const shadowing = (l: Record<string, unknown>): boolean =>
        String(l.msg).includes('sorts before 10-trellis.conflist');
      expect(unchecked.logs.some(shadowing)).toBe(false);
      expect(status(unchecked).cniConfigShadowedBy).toBeUndefined();
      // kindnet's, a stray one, and files the runtime does not load (one sorts first, one after).
      writeFileSync(join(dir, '10-kindnet.conflist'), '{}');
      writeFileSync(join(dir, '05-old.conf'), '{}');
      writeFileSync(join(dir, '00-notes.txt'), '');
      writeFileSync(join(dir, '99-late.conflist'), '{}');
      await within(10_000, 'the warning', () => unchecked.logs.some(shadowing));
      expect(unchecked.logs.find(shadowing)).toMatchObject({
        level: 'warn',
        msg: 'CNI config 05-old.conf sorts before 10-trellis.conflist: containerd and CRI-O use the first file, so new pods get its network, not trellis',
        dir,
        files: ['05-old.conf', '10-kindnet.conflist'],
      });
      expect(status(unchecked).cniConfigShadowedBy).toEqual(['05-old.conf', '10-kindnet.conflist']);
      // Still ready: a readiness failure would hold every rollout on the node (docs/operations.md).
      expect(status(unchecked).readiness?.ok).toBe(true);
      const passes = (): number => unchecked.logs.filter((l) => l.msg === 'reconciled').length;
      const seen = passes();
      await within(10_000, 'two more passes', () => passes() >= seen + 2);
      expect(unchecked.logs.filter(shadowing)).toHaveLength(1); // logged when it starts, not every pass

      rmSync(join(dir, '10-kindnet.conflist'));
      rmSync(join(dir, '05-old.conf'));
      const first = (l: Record<string, unknown>): boolean =>
        String(l.msg).includes('is the first CNI config again');
      await within(10_000, 'the all-clear', () => unchecked.logs.some(first));
      expect(unchecked.logs.find(first)).toMatchObject({ level: 'info', dir });
      expect(status(unchecked).cniConfigShadowedBy).toBeUndefined();

      // Multus handing pods to another network: the fix makes trellis its default, never "remove" it.
      const multus = join(dir, '00-multus.conf');
      writeFileSync(
        multus,
        JSON.stringify({ cniVersion: '0.3.1', name: 'multus', type: 'multus', clusterNetwork: 'other' }),
      );
      try {
        const multusWarning = (l: Record<string, unknown>): boolean =>
          String(l.msg).startsWith('CNI config 00-multus.conf sorts before');
        await within(10_000, 'the Multus warning', () => unchecked.logs.some(multusWarning));
        expect(unchecked.logs.find(multusWarning)).toMatchObject({
          files: ['00-multus.conf'],
          fix: `make trellis the default network of the meta-plugin (Multus) that ${multus} configures: "clusterNetwork": "trellis" there (or in the Multus daemon's config that writes it)`,
        });
      } finally {
        rmSync(multus, { force: true });
      }
    });
  },
);
