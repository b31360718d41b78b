import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason, runPlugin, SHIM_BINARY } from '../../support/cni-driver.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inOwnMounts } from '../../support/own-mounts.ts';
import { within } from '../faults/support.ts';
import { type AddResult, containerId, V4_CIDR, V6_CIDR } from './harness.ts';

/**
 * cri-dockerd names a pod's namespace /proc/PID/ns/net, with a PID of the host's PID namespace. The
 * DaemonSet's agent has a PID namespace of its own, whose /proc does not show that process: here the
 * agent runs the same way, in a PID and mount namespace of its own with a fresh /proc, the test
 * process's /proc bind-mounted at a directory first (the DaemonSet's read-only /host/proc).
 */
const skip =
  netnsSkipReason ??
  builtSkipReason() ??
  (spawnSync('unshare', ['--version']).status === 0 ? undefined : 'unshare (util-linux) is missing');

/**
 * argv that runs the agent like the DaemonSet's container, the host's /proc bind-mounted at `hostProc`
 * (undefined: a /proc mounted there already).
 */
function containerised(hostProc: string | undefined): string[] {
  return inOwnMounts(
    `${hostProc === undefined ? '' : 'mount --bind /proc "$0" && '}mount -t proc proc /proc`,
    [hostProc ?? 'sh'],
    { pid: true }, // the agent goes when the test kills unshare
  );
}

describe.skipIf(skip !== undefined)(
  `pods named /proc/PID/ns/net, agent in a PID namespace of its own${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const pool = new NetnsPool();
    const hostProc = mkdtempSync(join(tmpdir(), 'trl-host-proc-'));
    const sleepers: ChildProcess[] = [];
    let host: string;
    let withHostProc: AgentProcess;
    let without: AgentProcess;

    beforeAll(async () => {
      host = pool.add('host').name;
      const common = { ns: host, podCIDRs: [V4_CIDR, V6_CIDR], wrap: containerised(hostProc) };
      withHostProc = startAgent({ ...common, extraArgs: ['--host-proc', hostProc] });
      await withHostProc.ready();
      // A second agent on the same node namespace would fight over the routes: it gets one of its own.
      without = startAgent({ ...common, ns: pool.add('host2').name });
      await without.ready();
    });
    afterEach(() => {
      for (const s of sleepers.splice(0)) s.kill('SIGKILL');
    });
    afterAll(async () => {
      for (const a of [withHostProc, without]) {
        await a?.kill();
        if (a !== undefined) removeAgentDir(a.dir);
      }
      pool.cleanup();
      rmSync(hostProc, { recursive: true, force: true });
    });

    /**
     * A process in a fresh pod namespace, and that namespace as cri-dockerd names it. Returned only once
     * the process has entered it: until `ip netns exec` has called setns, /proc/PID/ns/net is the
     * namespace the test runs in, and an ADD there would configure that one.
     */
    async function podProcess(): Promise<{ ns: string; path: string }> {
      const ns = pool.add('pod', { loUp: false }).name;
      const sleeper = spawn('ip', ['netns', 'exec', ns, 'sleep', '300'], { stdio: 'ignore' });
      sleepers.push(sleeper);
      const path = `/proc/${sleeper.pid}/ns/net`;
      const want = statSync(`/var/run/netns/${ns}`).ino;
      for (let i = 0; ; i++) {
        if (statSync(path, { throwIfNoEntry: false })?.ino === want) return { ns, path };
        if (i === 1000) throw new Error(`pid ${sleeper.pid} did not enter ${ns} within 10 s`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }

    const conf = (agent: AgentProcess) =>
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'trellis',
        type: 'trellis',
        socket: agent.socket,
        spoolDir: agent.spoolDir,
      });

    it('with --host-proc the pod gets its interface, CHECK and DEL work, the result names the runtime path', async () => {
      const pod = await podProcess();
      const id = containerId();
      const call = { containerId: id, netns: pod.path, ifname: 'eth0', hostNetns: host };
      const add = await runPlugin(SHIM_BINARY, { command: 'ADD', ...call }, conf(withHostProc));
      expect(add.code, add.stdout + add.stderr).toBe(0);
      const res = add.json as AddResult;
      expect(res.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: pod.path });
      const shown = ipJson<{ ifname: string; addr_info: { local: string }[] }[]>(
        pod.ns,
        'addr',
        'show',
        'eth0',
      );
      expect(shown[0]!.addr_info.map((a) => a.local)).toEqual(
        expect.arrayContaining(res.ips.map((i) => i.address.split('/')[0])),
      );
      const check = await runPlugin(
        SHIM_BINARY,
        { command: 'CHECK', ...call },
        JSON.stringify({ ...JSON.parse(conf(withHostProc)), prevResult: res }),
      );
      expect(check.code, check.stdout).toBe(0);
      const del = await runPlugin(SHIM_BINARY, { command: 'DEL', ...call }, conf(withHostProc));
      expect(del.code, del.stdout).toBe(0);
      // The veth pair goes in the background, right after DEL answered.
      const deadline = Date.now() + 5000;
      const podLinks = () => ipJson<{ ifname: string }[]>(pod.ns, 'link').map((l) => l.ifname);
      while (podLinks().includes('eth0') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      expect(podLinks()).toEqual(['lo']);
    });

    it("a namespace pinned where the agent's container has no mount (containerd's state dir) is opened through the host's root", async () => {
      // The host's PID 1 here is a process of the test's own (this machine's may not be open to it):
      // `sleep` as PID 1 of a PID namespace, in the test's mount namespace, its /proc at `pid1Proc`.
      // The agent runs inside that PID namespace (as the DaemonSet's container runs in the host's),
      // in a PID and mount namespace of its own, with `pid1Proc` as its --host-proc.
      const pid1Proc = mkdtempSync(join(tmpdir(), 'trl-pid1-proc-'));
      const stateDir = mkdtempSync(join(tmpdir(), 'trl-ctr-state-'));
      const pinned = join(stateDir, 'netns', 'cni-1');
      const run = (cmd: string[]) => {
        const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
        expect(r.status, `${cmd.join(' ')}: ${r.stderr}`).toBe(0);
      };
      const init = spawn(
        'unshare',
        [
          '--pid',
          '--fork',
          '--kill-child',
          'sh',
          '-c',
          'mount -t proc proc "$0" && exec sleep 600',
          pid1Proc,
        ],
        {
          stdio: 'ignore',
        },
      );
      sleepers.push(init);
      const mounts: string[] = [];
      let agent: AgentProcess | undefined;
      try {
        await within(5000, "the PID namespace's /proc", () => existsSync(join(pid1Proc, '1', 'comm')));
        mounts.push(pid1Proc);
        const initPid = readFileSync(`/proc/${init.pid}/task/${init.pid}/children`, 'utf8').trim();
        agent = startAgent({
          ns: pool.add('host4').name,
          podCIDRs: [V4_CIDR, V6_CIDR],
          wrap: ['nsenter', `--pid=/proc/${initPid}/ns/pid`, '--', ...containerised(undefined)],
          extraArgs: ['--host-proc', pid1Proc],
        });
        await agent.ready();
        // Mounted after the agent started: its mount namespace (private) never sees what is in it,
        // as a DaemonSet's container does not see /run/containerd.
        const pod = pool.add('pod', { loUp: false }).name;
        run(['mount', '-t', 'tmpfs', 'trl-ctr-state', stateDir]);
        mounts.push(stateDir);
        run(['mkdir', join(stateDir, 'netns')]);
        run(['touch', pinned]);
        run(['mount', '--bind', `/var/run/netns/${pod}`, pinned]);
        mounts.push(pinned);
        const call = { containerId: containerId(), netns: pinned, ifname: 'eth0', hostNetns: agent.ns };
        const add = await runPlugin(SHIM_BINARY, { command: 'ADD', ...call }, conf(agent));
        expect(add.code, add.stdout + add.stderr).toBe(0);
        const res = add.json as AddResult;
        expect(res.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: pinned });
        const shown = ipJson<{ addr_info: { local: string }[] }[]>(pod, 'addr', 'show', 'eth0');
        expect(shown[0]!.addr_info.map((a) => a.local)).toEqual(
          expect.arrayContaining(res.ips.map((i) => i.address.split('/')[0])),
        );
        const del = await runPlugin(SHIM_BINARY, { command: 'DEL', ...call }, conf(agent));
        expect(del.code, del.stdout).toBe(0);
        // An agent with no way to it: 102, naming the runtime's path.
        const other = await runPlugin(
          SHIM_BINARY,
          { ...call, command: 'ADD', containerId: containerId(), hostNetns: without.ns },
          conf(without),
        );
        expect(other.json, other.stdout).toMatchObject({ code: 102, msg: expect.stringContaining(pinned) });
      } finally {
        await agent?.kill();
        if (agent !== undefined) removeAgentDir(agent.dir);
        for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
        init.kill('SIGKILL');
        rmSync(stateDir, { recursive: true, force: true });
        rmSync(pid1Proc, { recursive: true, force: true });
      }
    });

    it('an agent given a --host-proc without a /proc there stops at start, exit 2, before it serves', async () => {
      const empty = mkdtempSync(join(tmpdir(), 'trl-host-proc-empty-'));
      const agent = startAgent({
        ns: pool.add('host3').name,
        podCIDRs: [V4_CIDR],
        extraArgs: ['--host-proc', empty],
      });
      try {
        await expect(agent.ready()).rejects.toThrow(`--host-proc ${empty} has no self/ns/net`);
        expect(agent.child.exitCode).toBe(2);
      } finally {
        await agent.kill();
        removeAgentDir(agent.dir);
        rmSync(empty, { recursive: true, force: true });
      }
    });

    it("without it the same path is not found in the agent's own /proc: code 102, no lease, no veth", async () => {
      const pod = await podProcess();
      const id = containerId();
      const add = await runPlugin(
        SHIM_BINARY,
        { command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', hostNetns: without.ns },
        conf(without),
      );
      expect(add.json, add.stdout).toMatchObject({ code: 102, msg: expect.stringContaining(pod.path) });
      expect(ip(without.ns, 'link', 'show', 'type', 'veth')).toBe('');
      expect(
        readdirSync(join(without.stateDir, 'ipam', 'leases')).filter((f) => f.endsWith('.json')),
      ).toEqual([]);
      // The call's log line is written after the answer (cni-service.ts), so it may still be on its way.
      const line = () => without.logs.find((l) => l.verb === 'ADD' && l.containerId === id.slice(0, 12));
      await within(5000, 'the ADD logged', () => line() !== undefined);
      expect(line()).toMatchObject({ code: 102 });
    });
  },
);
