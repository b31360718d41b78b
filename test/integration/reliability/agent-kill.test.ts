/**
 * SIGKILL the real agent at random moments during an ADD/DEL storm, 20+ times, restarting it each
 * time on the same state directory, while modelling a runtime: a failed ADD is followed by DEL
 * (retried until it succeeds), a failed DEL is retried, and some ADDs the kill cut into (answered by
 * the restarted agent, or failed) are abandoned without DEL (their namespace removed, as after a
 * runtime crash) for the agent's start-up sweep to clean.
 *
 * Invariants checked after every restart: every live pod keeps its address (lease on disk, host
 * route) and connectivity; no address is ever answered to two live pods; no two leases share an
 * address. At the end, after every pod is deleted and one more restart: nothing left.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId } from '../../../pkg/datapath/names.ts';
import type { PluginRun } from '../../support/cni-driver.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { delNetns, netnsSkipReason, nsPing, type TestNetns } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from '../datapath/harness.ts';
import { holdings, leaseAddresses, leaseCreated, waitFor } from './support.ts';

const skip = netnsSkipReason ?? builtSkipReason();
const ROUNDS = 22;
const OPS_PER_ROUND = 8;

interface Pod {
  id: string;
  ns: TestNetns;
  addrs: string[];
}

describe.skipIf(skip !== undefined)(
  `agent SIGKILLed during an ADD/DEL storm${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it(`${ROUNDS} kills at random moments: live pods keep address and connectivity, no duplicate, nothing half-done survives`, async () => {
      const live = new Map<string, Pod>(); // by container id
      const owner = new Map<string, string>(); // address -> container id, for live pods
      const duplicates: string[] = [];
      let interruptedCalls = 0;
      let abandoned = 0;
      let retriedDels = 0;
      let sweptLeases = 0;
      let sweptLinks = 0;
      const countSweep = (): void => {
        const line = node.agent.logs.find((l) => l.msg === 'start-up sweep removed half-done work');
        if (line === undefined) return;
        sweptLeases += Number(line.releasedLeases ?? 0);
        sweptLinks += Array.isArray(line.removedLinks) ? line.removedLinks.length : 0;
      };

      const becomeLive = (pod: Pod): void => {
        for (const a of pod.addrs) {
          const holder = owner.get(a);
          if (holder !== undefined && holder !== pod.id) duplicates.push(`${a}: ${holder} and ${pod.id}`);
          owner.set(a, pod.id);
        }
        live.set(pod.id, pod);
      };
      const leave = (pod: Pod): void => {
        for (const a of pod.addrs) if (owner.get(a) === pod.id) owner.delete(a);
        live.delete(pod.id);
      };
      /** The ADD of container `id` answered, as `logs` (one agent's) tell it. */
      const loggedBy = (logs: Record<string, unknown>[], id: string): boolean =>
        logs.some((l) => l.msg === 'CNI ADD ok' && l.containerId === shortId(id));
      const answeredAfterRestart = (id: string): boolean => loggedBy(node.agent.logs, id);
      /** A runtime retries DEL until it succeeds (the agent may be down: the shim then spools it). */
      const delUntilOk = async (id: string, ns: TestNetns): Promise<void> => {
        for (let attempt = 0; ; attempt++) {
          const r = await node.del(id, ns.path);
          if (r.code === 0) return;
          retriedDels++;
          if (attempt > 20) throw new Error(`DEL never succeeded: ${r.stdout}`);
          await new Promise((res) => setTimeout(res, 100));
        }
      };

      // Pods that exist before the storm and must live through all of it.
      const stable: Pod[] = [];
      for (let i = 0; i < 4; i++) {
        const ns = node.podNs();
        const id = containerId();
        const r = await node.add(ns, id);
        expect(r.code, r.stdout).toBe(0);
        const pod = { id, ns, addrs: [podAddr(r.json as AddResult, 4), podAddr(r.json as AddResult, 6)] };
        stable.push(pod);
        becomeLive(pod);
      }

      for (let round = 0; round < ROUNDS; round++) {
        // A mix of ADDs of new pods and DELs of pods added in earlier rounds.
        const deletable = [...live.values()].filter((p) => !stable.includes(p));
        const ops: Promise<{ kind: 'add' | 'del'; pod: Pod; run: PluginRun }>[] = [];
        for (let i = 0; i < OPS_PER_ROUND; i++) {
          const victim = i % 2 === 1 ? deletable.pop() : undefined;
          if (victim !== undefined) {
            leave(victim); // from the moment its DEL is sent
            ops.push(node.del(victim.id, victim.ns.path).then((run) => ({ kind: 'del', pod: victim, run })));
          } else {
            const ns = node.podNs();
            const pod: Pod = { id: containerId(), ns, addrs: [] };
            ops.push(node.add(ns, pod.id).then((run) => ({ kind: 'add', pod, run })));
          }
        }
        if (round % 3 === 2) {
          // The agent's part of an ADD is ~2 ms of the shim's ~100-600 ms (spawn + ip netns exec), so
          // random kills rarely land inside it: every third round kills the moment a lease file
          // appears, i.e. between the allocation and the answer.
          await leaseCreated(join(node.agent.stateDir, 'ipam', 'leases'), 1000);
        } else {
          // Kill somewhere inside the calls' window.
          await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 500)));
        }
        const killed = node.agent;
        await node.agent.kill();
        // The DaemonSet starts it again while the calls are still out (an ADD that finds no agent waits
        // for it while the ready marker is fresh, as after a restart).
        const restarted = node.startAgain();
        const results = await Promise.all(ops);
        await restarted;
        // An ADD's log line is written after its answer: wait for each answered ADD's line in one
        // agent's log or the other's before asking which agent answered it (the killed one may have
        // died between its answer and its line: 2 s at most).
        await waitFor(
          () =>
            results.every(
              ({ kind, pod, run }) =>
                kind !== 'add' ||
                run.code !== 0 ||
                loggedBy(killed.logs, pod.id) ||
                loggedBy(node.agent.logs, pod.id),
            ),
          2000,
        );
        countSweep();

        for (const { kind, pod, run } of results) {
          if (kind === 'add') {
            if (run.code === 0) {
              const res = run.json as AddResult;
              pod.addrs = [podAddr(res, 4), podAddr(res, 6)];
              // Answered by the restarted agent: the kill landed inside the call, which the CNI
              // binary asked again (or first) once the agent was back.
              if (answeredAfterRestart(pod.id)) {
                interruptedCalls++;
                // Every third such pod's runtime dies right after the answer: no DEL, its namespace
                // goes, and a start-up sweep must release it.
                if (interruptedCalls % 3 === 0) {
                  abandoned++;
                  delNetns(pod.ns.name);
                  continue;
                }
              }
              becomeLive(pod);
              continue;
            }
            interruptedCalls++;
            expect([11, 105], run.stdout).toContain((run.json as { code: number }).code);
            // Abandon every interrupted ADD the agent had got as far as a lease for (the sweep's
            // work), and every third of the others.
            const leased = leaseAddresses(node).has(`${pod.id}@eth0`);
            if (leased || interruptedCalls % 3 === 0) {
              // The runtime died too: no DEL, its namespace goes (the kernel removes the veth with it).
              abandoned++;
              delNetns(pod.ns.name);
            } else {
              await delUntilOk(pod.id, pod.ns);
              delNetns(pod.ns.name);
            }
          } else {
            // DEL through the shim never fails for a dead agent: it is spooled. Retry if it did fail.
            if (run.code !== 0) {
              interruptedCalls++;
              await delUntilOk(pod.id, pod.ns);
            }
            delNetns(pod.ns.name);
          }
        }

        // Invariants after this restart.
        const leases = leaseAddresses(node);
        const seen = new Map<string, string>();
        for (const [leaseOwner, addrs] of leases) {
          for (const a of addrs) {
            expect(seen.get(a), `${a} leased twice`).toBeUndefined();
            seen.set(a, leaseOwner);
          }
        }
        for (const pod of live.values()) {
          expect(leases.get(`${pod.id}@eth0`), `lease of live pod ${pod.id}`).toEqual(pod.addrs);
        }
        const routes = new Set(node.hostRoutes(4).map((r) => r.dst));
        for (const pod of live.values())
          expect(routes.has(pod.addrs[0]!), `route to ${pod.addrs[0]}`).toBe(true);
        for (const pod of stable)
          expect(nsPing(node.host.name, pod.addrs[0]!), `ping ${pod.addrs[0]}`).toBe(true);
      }
      expect(duplicates).toEqual([]);
      // The kills did land inside calls (ADDs asked again of the restarted agent, or failed), and the
      // sweep had abandoned work to clean.
      expect(interruptedCalls).toBeGreaterThanOrEqual(5);
      expect(abandoned).toBeGreaterThanOrEqual(1);

      // Every live pod still works and a repeated ADD answers the same addresses.
      for (const pod of live.values()) {
        const again = await node.add(pod.ns, pod.id);
        expect(again.code, again.stdout).toBe(0);
        expect([podAddr(again.json as AddResult, 4), podAddr(again.json as AddResult, 6)]).toEqual(pod.addrs);
        expect(nsPing(node.host.name, pod.addrs[0]!)).toBe(true);
      }
      // Tear everything down; one more kill + restart (sweep) must find nothing to keep.
      for (const pod of [...live.values()]) {
        leave(pod);
        await delUntilOk(pod.id, pod.ns);
        delNetns(pod.ns.name);
      }
      // One abandoned ADD for certain (a kill rarely lands after a lease is written and before the
      // answer): answered, then its runtime died without a DEL and its namespace went.
      const lostNs = node.podNs();
      const lost = await node.add(lostNs, containerId());
      expect(lost.code, lost.stdout).toBe(0);
      delNetns(lostNs.name);
      await node.agent.kill();
      await node.startAgain();
      countSweep();
      // Abandoned ADDs (lease held, namespace gone) were released by a start-up sweep, not by a DEL.
      expect(sweptLeases).toBeGreaterThanOrEqual(1);
      expect(await waitFor(() => node.hostVeths().length === 0, 10_000)).toBe(true);
      const left = holdings(node);
      // quarantine/ may hold records of ADDs killed between a lease file's creation and its write
      // (written in place: an empty or torn record that was never answered, set aside at load). They
      // hold nothing: no reservation is left, which is what the comparison below requires.
      expect({ ...left, quarantine: [] }).toEqual({
        leases: [],
        reservations: [],
        quarantine: [],
        spool: [],
        veths: [],
        routes: [],
      });
      console.log(
        JSON.stringify({
          rounds: ROUNDS,
          interruptedCalls,
          abandoned,
          retriedDels,
          sweptLeases,
          sweptLinks,
          quarantined: left.quarantine.length,
        }),
      );
    }, 240_000);
  },
);
