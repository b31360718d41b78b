/**
 * Faults around a real agent: the CNI binary SIGKILLed mid-call, the IPAM state directory full or
 * read-only (a tiny tmpfs in the agent's own mount namespace: the host's mounts are never touched),
 * and a live pod's lease file corrupted while the agent was down.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
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
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { removeAgentDir } from '../../support/agent-process.ts';
import { builtSkipReason, SHIM_BINARY } from '../../support/cni-driver.ts';
import { delNetns, ip, netnsSkipReason, nsPing } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr, V4_CIDR, V6_CIDR } from '../datapath/harness.ts';
import {
  agentPid,
  agentView,
  holdings,
  inAgentMountNs,
  isAlive,
  leaseAddresses,
  leaseCreated,
  spawnShim,
  startAgentWithTmpfsState,
  waitFor,
} from './support.ts';

const skip = netnsSkipReason ?? builtSkipReason();
const EMPTY = { leases: [], reservations: [], quarantine: [], spool: [], veths: [], routes: [] };

describe.skipIf(skip !== undefined)(`faults${skip ? ` (skipped: ${skip})` : ''}`, () => {
  describe('the CNI binary killed mid-call', () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('SIGKILL of the shim during ADD, at random moments and once the agent has the request; a retried ADD or DEL leaves nothing behind', async () => {
      // How long a whole ADD takes through the shim right now (fastest of 3): random kills land inside it.
      let windowMs = Number.POSITIVE_INFINITY;
      for (let k = 0; k < 3; k++) {
        const probe = node.podNs();
        const probeId = containerId();
        const t0 = performance.now();
        const baseline = await spawnShim(
          node,
          { command: 'ADD', containerId: probeId, netns: probe.path, ifname: 'eth0' },
          JSON.stringify(node.conf()),
        ).done;
        windowMs = Math.min(windowMs, performance.now() - t0);
        expect(baseline.code, baseline.stdout).toBe(0);
        expect((await node.del(probeId, probe.path)).code).toBe(0);
        delNetns(probe.name);
      }
      const outcomes = { killedBeforeExit: 0, killedAfterAgentGotIt: 0, retriedAdd: 0, straightDel: 0 };
      const leasesDir = join(node.agent.stateDir, 'ipam', 'leases');

      /** One ADD whose shim `kill` SIGKILLs; then the runtime's retried ADD (even i) or its DEL. */
      const killedAdd = async (i: number, kill: (id: string, shim: ChildProcess) => Promise<void>) => {
        const pod = node.podNs();
        const id = containerId();
        const shim = spawnShim(
          node,
          { command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0' },
          JSON.stringify(node.conf()),
        );
        await kill(id, shim.child);
        const first = await shim.done;
        if (first.signal === 'SIGKILL') {
          outcomes.killedBeforeExit++;
          const short = id.slice(0, 12);
          // The agent got the request (and finished it for nobody) before the shim died.
          if (
            await waitFor(() => node.agent.logs.some((l) => l.verb === 'ADD' && l.containerId === short), 300)
          ) {
            outcomes.killedAfterAgentGotIt++;
          }
        }
        if (i % 2 === 0) {
          // The runtime retries the ADD: it must succeed (same key, same namespace) and configure the pod.
          outcomes.retriedAdd++;
          const again = await node.add(pod, id);
          expect(again.code, again.stdout).toBe(0);
          const v4 = podAddr(again.json as AddResult, 4);
          expect(ip(pod.name, '-4', 'addr', 'show', 'dev', 'eth0')).toContain(`${v4}/32`);
          expect(nsPing(node.host.name, v4)).toBe(true);
          // Exactly one lease for this attachment.
          expect(leaseAddresses(node).get(`${id}@eth0`)).toEqual([v4, podAddr(again.json as AddResult, 6)]);
        } else {
          outcomes.straightDel++;
        }
        const del = await node.del(id, pod.path);
        expect(del.code, del.stdout).toBe(0);
        delNetns(pod.name);
      };

      // 24 kills at random moments of the window: most land before the request reaches the agent.
      for (let i = 0; i < 24; i++) {
        await killedAdd(i, async (_id, shim) => {
          await new Promise((r) => setTimeout(r, Math.floor(windowMs * (0.2 + 0.8 * Math.random()))));
          shim.kill('SIGKILL');
        });
      }
      // 4 kills the moment the pod's lease appears: the agent is mid-ADD, the shim waits for its answer.
      // (Random moments alone reach that stretch, the agent's few ms of a ~30 ms ADD, only by chance.)
      const randomHits = outcomes.killedAfterAgentGotIt;
      for (let i = 24; i < 28; i++) {
        await killedAdd(i, async (id, shim) => {
          await leaseCreated(leasesDir, 2_000, id);
          shim.kill('SIGKILL');
        });
      }
      const leaseHits = outcomes.killedAfterAgentGotIt - randomHits;
      expect(outcomes.killedBeforeExit).toBeGreaterThanOrEqual(6);
      expect(leaseHits).toBeGreaterThanOrEqual(1);
      expect(await waitFor(() => node.hostVeths().length === 0, 10_000)).toBe(true);
      expect(holdings(node)).toEqual(EMPTY);
      expect(isAlive(agentPid(node))).toBe(true);
      console.log(JSON.stringify({ ...outcomes, leaseHits, windowMs: Math.round(windowMs) }));
    }, 150_000);
  });

  describe('the IPAM state directory full, then read-only (tmpfs in the agent mount namespace)', () => {
    const node = new NodeHarness();
    let ipamDir = '';
    let pid = 0;
    beforeAll(async () => {
      node.host = node.pool.add('host');
      node.agent = startAgentWithTmpfsState({
        ns: node.host.name,
        podCIDRs: [V4_CIDR, V6_CIDR],
        sizeKiB: 256,
      });
      await node.agent.ready();
      pid = agentPid(node);
      ipamDir = agentView(pid, join(node.agent.stateDir, 'ipam'));
    });
    afterAll(async () => {
      try {
        await node.agent.kill();
      } finally {
        node.pool.cleanup();
        removeAgentDir(node.agent.dir);
      }
    });

    it('the tmpfs is the agent’s alone: the host sees an empty directory there', () => {
      const mounts = inAgentMountNs(pid, 'findmnt', [
        '-n',
        '-o',
        'FSTYPE,SOURCE',
        join(node.agent.stateDir, 'ipam'),
      ]);
      expect(mounts.trim()).toBe('tmpfs  trl-state');
      // The host's mount namespace has no mount there: findmnt finds none (exit 1).
      const host = spawnSync('findmnt', ['-n', join(node.agent.stateDir, 'ipam')], { encoding: 'utf8' });
      expect(host.status, host.stdout).toBe(1);
    });

    it('full: ADD fails with 107 naming ENOSPC and no partial lease; DEL of a live pod still works', async () => {
      const live = node.podNs();
      const liveId = containerId();
      const ok = await node.add(live, liveId);
      expect(ok.code, ok.stdout).toBe(0);
      const filler = join(ipamDir, 'filler');
      try {
        for (;;) appendFileSync(filler, Buffer.alloc(4096));
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      const before = holdings(node, ipamDir);
      expect(before.leases).toHaveLength(1);

      for (let i = 0; i < 3; i++) {
        const r = await node.add(node.podNs(), containerId());
        expect(r.code).toBe(1);
        expect(r.json).toMatchObject({ code: 107 });
        expect((r.json as { msg: string }).msg).toMatch(/IPAM state directory .*ENOSPC/);
        expect(holdings(node, ipamDir)).toEqual(before); // no lease, reservation, veth or route
      }
      // Written after the answer: awaited, not read at once.
      const line = await node.logLine((l) => l.verb === 'ADD' && l.outcome === 'error');
      expect(line).toMatchObject({ code: 107, outcome: 'error' });
      expect(node.agent.logs.findLast((l) => l.verb === 'ADD')).toMatchObject({ code: 107 });

      const del = await node.del(liveId, live.path);
      expect(del.code, del.stdout).toBe(0);
      expect(await waitFor(() => node.hostVeths().length === 0, 5000)).toBe(true);
      expect(holdings(node, ipamDir)).toEqual(EMPTY);

      // Space back: ADD works again.
      rmSync(filler);
      const again = await node.add(node.podNs(), containerId());
      expect(again.code, again.stdout).toBe(0);
    });

    it('read-only: ADD fails with 107 naming EROFS and holds nothing; DEL reports 107 (runtime retries) until writable, then works', async () => {
      const live = node.podNs();
      const liveId = containerId();
      const ok = await node.add(live, liveId);
      expect(ok.code, ok.stdout).toBe(0);
      const before = holdings(node, ipamDir);
      const mountpoint = join(node.agent.stateDir, 'ipam');
      await remountReadOnly(pid, mountpoint);
      try {
        const r = await node.add(node.podNs(), containerId());
        expect(r.json).toMatchObject({ code: 107 });
        expect((r.json as { msg: string }).msg).toMatch(/EROFS/);
        expect(holdings(node, ipamDir)).toEqual(before);

        // Nothing can be recorded: DEL says so (the lease and its addresses stay held, never reused)
        // and the runtime retries it.
        const del = await node.del(liveId, live.path);
        expect(del.json).toMatchObject({ code: 107 });
        expect((del.json as { msg: string }).msg).toMatch(/EROFS/);
        expect(holdings(node, ipamDir).leases).toEqual(before.leases);
      } finally {
        inAgentMountNs(pid, 'mount', ['-o', 'remount,rw', mountpoint]);
      }
      const retry = await node.del(liveId, live.path);
      expect(retry.code, retry.stdout).toBe(0);
      expect(holdings(node, ipamDir).leases).toEqual(before.leases.filter((l) => !l.startsWith(liveId)));
      expect(isAlive(pid)).toBe(true);
    });
  });

  describe('an agent started on a state directory already read-only, with what a crash left in it', () => {
    const node = new NodeHarness();
    let seed = '';
    beforeAll(() => {
      seed = mkdtempSync(join(tmpdir(), 'trl-ro-seed-'));
      // What the last run left: a lease rewrite cut short (its tmp file), a reservation no lease
      // accounts for (an allocation cut short), a DEL the shim spooled while no agent ran, its lock.
      for (const d of ['leases', 'addrs', 'quarantine'])
        mkdirSync(join(seed, 'ipam', d), { recursive: true, mode: 0o700 });
      chmodSync(join(seed, 'ipam'), 0o700);
      writeFileSync(join(seed, 'ipam', 'leases', '.c0ffee01@eth0.json.tmp'), '{"torn');
      symlinkSync('c0ffee09@eth0', join(seed, 'ipam', 'addrs', '10.244.1.9'));
      writeFileSync(join(seed, 'agent.lock'), '');
      const spooled = spawnSync(SHIM_BINARY, [], {
        env: {
          CNI_COMMAND: 'DEL',
          CNI_CONTAINERID: 'c0ffee0a',
          CNI_IFNAME: 'eth0',
          CNI_PATH: '/opt/cni/bin',
        },
        input: JSON.stringify({
          cniVersion: '1.0.0',
          name: 'trellis',
          type: 'trellis',
          socket: join(seed, 'no-agent.sock'),
          spoolDir: join(seed, 'spool'),
        }),
        encoding: 'utf8',
      });
      expect(spooled.status, spooled.stdout + spooled.stderr).toBe(0);
      expect(readdirSync(join(seed, 'spool'))).toHaveLength(1);
      node.host = node.pool.add('host');
    });
    afterAll(async () => {
      try {
        await node.agent?.kill();
      } finally {
        node.pool.cleanup();
        if (node.agent !== undefined) removeAgentDir(node.agent.dir);
        rmSync(seed, { recursive: true, force: true });
      }
    });

    it('starts and serves: load and the spool drain leave their writes for the next start; ADD fails with 107 naming EROFS', async () => {
      node.agent = startAgentWithTmpfsState({
        ns: node.host.name,
        podCIDRs: [V4_CIDR, V6_CIDR],
        sizeKiB: 256,
        readOnlyState: { seed },
      });
      await node.agent.ready();
      const logs = node.agent.logs;
      expect(
        logs.find((l) => String(l.msg).startsWith('the IPAM state directory takes no writes')),
      ).toMatchObject({
        level: 'error',
        repairs: ['removing leases/.c0ffee01@eth0.json.tmp', 'freeing addrs/10.244.1.9'],
      });
      expect(
        logs.find(
          (l) =>
            l.msg === 'spooled DEL done, but its file could not be removed: replayed again by the next drain',
        ),
      ).toMatchObject({ error: expect.stringContaining('EROFS') });
      const r = await node.add(node.podNs(), containerId());
      expect(r.json).toMatchObject({ code: 107 });
      expect((r.json as { msg: string }).msg).toMatch(/EROFS/);
      expect(isAlive(agentPid(node))).toBe(true);
    });
  });

  /**
   * `mount -o remount,ro` fails with EBUSY while a file on the mount is open for writing: the agent
   * has one open for a moment ~50 ms after an ADD (a spare lease file being created by the idle
   * top-up, pkg/ipam/spares.ts). An administrator would retry; so does the test.
   */
  async function remountReadOnly(agentPid: number, mountpoint: string): Promise<void> {
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        inAgentMountNs(agentPid, 'mount', ['-o', 'remount,ro', mountpoint]);
        return;
      } catch (err) {
        if (!String(err).includes('busy') || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  describe('a corrupted lease file', () => {
    // A /29: 5 addresses, so reuse of the corrupted lease's address would show quickly.
    const node = new NodeHarness(['10.244.7.0/29', 'fd00:10:244:7::/120']);
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('is quarantined at restart and rebuilt from the kernel: CHECK passes, the pod keeps its address and connectivity across restarts; no other pod gets it; DEL frees it', async () => {
      const victim = node.podNs();
      const victimId = containerId();
      // An MTU of the config's own, which the lease records and the rebuilt one must record again.
      const r = await node.add(victim, victimId, node.conf({ mtu: 1400 }));
      expect(r.code, r.stdout).toBe(0);
      const leaseFile = join(node.agent.stateDir, 'ipam', 'leases', `${victimId}@eth0.json`);
      const leaseMtu = (): unknown => (JSON.parse(readFileSync(leaseFile, 'utf8')) as { mtu?: unknown }).mtu;
      expect(leaseMtu()).toBe(1400);
      const victimV4 = podAddr(r.json as AddResult, 4);
      const victimV6 = podAddr(r.json as AddResult, 6);
      const other = await node.add(node.podNs(), containerId());
      expect(other.code).toBe(0);

      await node.agent.kill();
      writeFileSync(leaseFile, '{"containerId":"tor');
      await node.startAgain();
      const quarantined = node.agent.logs.find((l) => l.msg === 'IPAM record quarantined at load');
      expect(quarantined).toMatchObject({ reason: expect.stringMatching(/not valid JSON/) });
      expect(String(quarantined?.file)).toContain(victimId);
      // Rebuilt from the host veth's routes once the pod CIDRs were known (before ready): a normal
      // lease again, with the same addresses. The torn record showed no namespace path: the pod's
      // was found among the named namespaces (its eth0 is the veth's peer and has the addresses).
      expect(node.agent.logs.find((l) => l.msg === 'quarantined lease rebuilt')).toMatchObject({
        containerId: victimId.slice(0, 12),
        ifname: 'eth0',
        addresses: [victimV4, victimV6],
        netns: victim.path,
        source: 'kernel',
      });
      expect(leaseAddresses(node).get(`${victimId}@eth0`)).toEqual([victimV4, victimV6]);
      // With the MTU the pair was set up with (its host end's), so setting it up again keeps it.
      expect(leaseMtu()).toBe(1400);
      // The lease restored, quarantine/ keeps nothing of it (the record and its reason were hints for this).
      expect(holdings(node).quarantine.filter((f) => f.startsWith(`${victimId}@eth0.json.`))).toEqual([]);
      expect(holdings(node).quarantine.some((f) => f.endsWith('.held'))).toBe(false);
      const check = await node.call(
        { command: 'CHECK', containerId: victimId, netns: victim.path, ifname: 'eth0' },
        node.conf({ mtu: 1400, prevResult: r.json }),
      );
      expect(check.code, check.stdout).toBe(0);

      // The running pod is untouched by the start-up sweep, and stays so across another restart.
      expect(nsPing(node.host.name, victimV4)).toBe(true);
      await node.agent.kill();
      await node.startAgain();
      expect(node.agent.logs.some((l) => String(l.msg).startsWith('quarantined lease'))).toBe(false);
      expect(leaseAddresses(node).get(`${victimId}@eth0`)).toEqual([victimV4, victimV6]);
      expect(nsPing(node.host.name, victimV4)).toBe(true);
      expect(nsPing(node.host.name, victimV6)).toBe(true);

      // Fill the pool: the held addresses are never handed out.
      const handed: string[] = [];
      for (let i = 0; i < 5; i++) {
        const a = await node.add(node.podNs(), containerId());
        if (a.code === 0) handed.push(podAddr(a.json as AddResult, 4), podAddr(a.json as AddResult, 6));
        else expect(a.json).toMatchObject({ code: 101 });
      }
      expect(handed).toHaveLength(6); // 5 usable - victim - other = 3 pods
      expect(handed).not.toContain(victimV4);
      expect(handed).not.toContain(victimV6);

      // The runtime's DEL frees the rebuilt lease like any other: routes first, then the veth.
      const del = await node.del(victimId, victim.path);
      expect(del.code, del.stdout).toBe(0);
      expect(leaseAddresses(node).has(`${victimId}@eth0`)).toBe(false);
      expect(node.hostRoutes(4).some((rt) => rt.dst === victimV4)).toBe(false);
      const next = await node.add(node.podNs(), containerId());
      expect(next.code, next.stdout).toBe(0);
      expect(podAddr(next.json as AddResult, 4)).toBe(victimV4);
    });
  });

  describe('corrupted lease files rebuilt from the kernel', () => {
    const node = new NodeHarness(['10.244.8.0/29', 'fd00:10:244:8::/120']);
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('finds the pod namespace the kernel confirms (not the one a torn record names); a pod whose veth is gone is released, not held forever', async () => {
      const torn = node.podNs();
      const tornId = containerId();
      const a = await node.add(torn, tornId);
      expect(a.code, a.stdout).toBe(0);
      const gone = node.podNs();
      const goneId = containerId();
      const b = await node.add(gone, goneId);
      expect(b.code, b.stdout).toBe(0);
      const goneV4 = podAddr(b.json as AddResult, 4);

      await node.agent.kill();
      const leases = join(node.agent.stateDir, 'ipam', 'leases');
      // Torn right after the namespace path (a write cut short), the path changed to the other pod's
      // namespace (which has no eth0 once its veth is gone); garbage for the other one.
      const text = readFileSync(join(leases, `${tornId}@eth0.json`), 'utf8');
      const cut = text.indexOf('\n', text.indexOf('"netns"'));
      expect(cut).toBeGreaterThan(0);
      expect(text.slice(0, cut)).toContain(torn.path);
      writeFileSync(
        join(leases, `${tornId}@eth0.json`),
        text.slice(0, cut + 1).replace(torn.path, gone.path),
      );
      writeFileSync(join(leases, `${goneId}@eth0.json`), 'garbage');
      // The second pod's host veth deleted by hand (in the test's node namespace) while the agent is down.
      ip(node.host.name, 'link', 'del', hostVethName(goneId, 'eth0'));
      await node.startAgain();

      expect(node.agent.logs.find((l) => l.msg === 'quarantined lease rebuilt')).toMatchObject({
        containerId: tornId.slice(0, 12),
        addresses: [podAddr(a.json as AddResult, 4), podAddr(a.json as AddResult, 6)],
        netns: torn.path,
        source: 'kernel',
      });
      expect(
        node.agent.logs.find((l) => String(l.msg).startsWith('quarantined lease released')),
      ).toMatchObject({
        containerId: goneId.slice(0, 12),
        reason: expect.stringMatching(/host veth trl[0-9a-f]{12} does not exist/),
      });
      const lease = JSON.parse(readFileSync(join(leases, `${tornId}@eth0.json`), 'utf8')) as {
        netns?: string;
      };
      expect(lease.netns).toBe(torn.path);
      const check = await node.call(
        { command: 'CHECK', containerId: tornId, netns: torn.path, ifname: 'eth0' },
        node.conf({ prevResult: a.json }),
      );
      expect(check.code, check.stdout).toBe(0);

      // The rebuilt pod's address stays its own; the released one is free again: fill the pool.
      const handed: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await node.add(node.podNs(), containerId());
        if (r.code === 0) handed.push(podAddr(r.json as AddResult, 4));
        else expect(r.json).toMatchObject({ code: 101 });
      }
      expect(handed).toHaveLength(4); // 5 usable - torn
      expect(handed).toContain(goneV4);
      expect(handed).not.toContain(podAddr(a.json as AddResult, 4));
      expect((await node.del(goneId, gone.path)).code).toBe(0);
      expect((await node.del(tornId, torn.path)).code).toBe(0);
      expect(leaseAddresses(node).has(`${tornId}@eth0`)).toBe(false);
    });
  });
});
