import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ipJson, netnsSkipReason, nsExec, nsPing, nsSysctl } from '../../support/netns.ts';
import { leaseAddresses } from '../reliability/support.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

describe.skipIf(skip !== undefined)(
  `agent lifecycle: STATUS, GC, spooled DEL${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('STATUS succeeds when the agent is ready, through its restart (the ready marker), and returns 50 without one', async () => {
      const ready = await node.call({ command: 'STATUS' }, node.conf({}, '1.1.0'));
      expect(ready.code, ready.stdout).toBe(0);
      expect(ready.stdout).toBe('');

      await node.agent.stop();
      const restarting = await node.call({ command: 'STATUS' }, node.conf({}, '1.1.0'));
      expect(restarting.code, restarting.stdout).toBe(0);
      // The runtime believed STATUS and sends a pod: its ADD waits for the agent instead of failing.
      const pod = node.podNs();
      const id = containerId();
      let answered = false;
      const during = node.add(pod, id).finally(() => {
        answered = true;
      });
      await new Promise((r) => setTimeout(r, 700));
      // Still waiting for an agent when the agent comes back (not failed at once).
      expect(answered).toBe(false);
      await node.startAgain();
      const added = await during;
      expect(added.code, added.stdout + added.stderr).toBe(0);
      expect(nsPing(node.host.name, podAddr(added.json as AddResult, 4))).toBe(true);
      expect((await node.del(id, pod.path)).code).toBe(0);
      await node.agent.stop();
      rmSync(`${node.agent.socket}.ready`);
      const down = await node.call({ command: 'STATUS' }, node.conf({}, '1.1.0'));
      expect(down.code).toBe(1);
      expect(down.json).toMatchObject({ code: 50 });
      const add = await node.add(node.podNs(), containerId());
      expect(add.json).toMatchObject({ code: 11 });
      expect((add.json as { msg: string }).msg).toContain(node.agent.socket);
      await node.startAgain();
    });

    it('GC releases every lease and veth that is not a valid attachment and keeps the rest working', async () => {
      const pods = [node.podNs(), node.podNs(), node.podNs()];
      const ids = pods.map(() => containerId());
      const results: AddResult[] = [];
      for (const [i, pod] of pods.entries()) results.push((await node.add(pod, ids[i]!)).json as AddResult);
      const before = node.hostVeths().length;

      const gc = await node.call(
        { command: 'GC' },
        node.conf({ 'cni.dev/valid-attachments': [{ containerID: ids[0], ifname: 'eth0' }] }, '1.1.0'),
      );
      expect(gc.code, gc.stdout).toBe(0);
      expect(await node.waitForVeths(before - 2)).toHaveLength(before - 2);
      for (const r of results.slice(1)) {
        expect(node.hostRoutes(4).some((route) => route.dst === podAddr(r, 4))).toBe(false);
        expect(node.hostRoutes(6).some((route) => route.dst === podAddr(r, 6))).toBe(false);
      }
      // On disk: the valid attachment's lease alone is left of the three.
      const leases = leaseAddresses(node);
      expect(ids.map((id) => leases.has(`${id}@eth0`))).toEqual([true, false, false]);
      const line = await node.logLine((l) => l.verb === 'GC');
      expect(((line?.released ?? []) as string[]).sort()).toEqual(
        [ids[1]!, ids[2]!].map((id) => `${id.slice(0, 12)}/eth0`).sort(),
      );
      // The valid attachment still works.
      expect(nsPing(node.host.name, podAddr(results[0]!, 4))).toBe(true);

      // A malformed attachment list is an error that collects nothing.
      const bad = await node.call(
        { command: 'GC' },
        node.conf({ 'cni.dev/valid-attachments': [{ ifname: 3 }] }, '1.1.0'),
      );
      expect(bad.code).toBe(1);
      expect(bad.json).toMatchObject({ code: 7 });
      expect(nsPing(node.host.name, podAddr(results[0]!, 4))).toBe(true);
      await node.del(ids[0]!, pods[0]!.path);
    });

    it('GC without a cni.dev/valid-attachments list collects nothing: code 0, the pod still there', async () => {
      // No list means the runtime does not know, not that no attachment is valid (cni-service.ts).
      const { pod, id, result, hostIf } = await node.addPod();
      const [v4, v6] = [podAddr(result, 4), podAddr(result, 6)];
      const gc = await node.call({ command: 'GC' }, node.conf({}, '1.1.0'));
      expect(gc.code, gc.stdout + gc.stderr).toBe(0);
      expect(gc.stdout).toBe('');
      const line = await node.logLine((l) => l.verb === 'GC' && l.note !== undefined);
      expect(line).toMatchObject({ outcome: 'ok', note: 'no cni.dev/valid-attachments: nothing collected' });
      expect(leaseAddresses(node).get(`${id}@eth0`)).toEqual([v4, v6]);
      expect(node.hostVeths()).toContain(hostIf);
      expect(node.hostRoutes(4)).toContainEqual(expect.objectContaining({ dst: v4, dev: hostIf }));
      expect(node.hostRoutes(6)).toContainEqual(expect.objectContaining({ dst: v6, dev: hostIf }));
      expect(nsPing(node.host.name, v4)).toBe(true);
      expect((await node.del(id, pod.path)).code).toBe(0);
    });

    it("GC for one network leaves another network's attachments alone (a pod on two trellis networks)", async () => {
      const pod = node.podNs();
      const id = containerId();
      const eth0 = await node.add(pod, id);
      expect(eth0.code, eth0.stdout).toBe(0);
      const net1 = await node.add(pod, id, node.conf({ name: 'trellis-b' }), 'net1');
      expect(net1.code, net1.stdout).toBe(0);
      const before = node.hostVeths().length;
      expect(readLeaseFile(node, `${id}@net1`)).toMatchObject({ network: 'trellis-b' });
      expect(readLeaseFile(node, `${id}@eth0`)).toMatchObject({ network: 'trellis' });

      // The runtime's GC of the first network lists that network's valid attachments: eth0 only.
      const gcA = await node.call(
        { command: 'GC' },
        node.conf({ 'cni.dev/valid-attachments': [{ containerID: id, ifname: 'eth0' }] }, '1.1.0'),
      );
      expect(gcA.code, gcA.stdout).toBe(0);
      // And the second network's, which has none left: net1 goes, eth0 stays.
      const gcB = await node.call(
        { command: 'GC' },
        node.conf({ name: 'trellis-b', 'cni.dev/valid-attachments': [] }, '1.1.0'),
      );
      expect(gcB.code, gcB.stdout).toBe(0);
      expect(await node.waitForVeths(before - 1)).toHaveLength(before - 1);
      const leases = leaseAddresses(node);
      expect([leases.has(`${id}@eth0`), leases.has(`${id}@net1`)]).toEqual([true, false]);
      expect(nsPing(node.host.name, podAddr(eth0.json as AddResult, 4))).toBe(true);
      await node.del(id, pod.path);
    });

    it('an attachment added again in another namespace moves there, and a repeated ADD is idempotent again', async () => {
      // A runtime reusing a container id whose DEL was lost: the new namespace gets the attachment.
      const [a, b] = [node.podNs(), node.podNs()];
      const id = containerId();
      expect((await node.add(a, id)).code).toBe(0);
      const inB = await node.add(b, id);
      expect(inB.code, inB.stdout).toBe(0);
      expect(readLeaseFile(node, `${id}@eth0`)).toMatchObject({ netns: b.path });
      // The same ADD again answers with what is there: same interface, same MAC, no veth rebuilt.
      const again = await node.add(b, id);
      expect((again.json as AddResult).interfaces).toEqual((inB.json as AddResult).interfaces);
      expect(nsPing(node.host.name, podAddr(inB.json as AddResult, 4))).toBe(true);
      await node.del(id, b.path);
    });

    it('a namespace reused by another container right after a DEL: the new ADD waits for the old veth, whatever its interface name', async () => {
      // cnitool, podman reconnects, Multus hot-plug: one namespace, a new container ID. DEL answers
      // before the old pair is deleted (15-33 ms of kernel work): without the wait the old pod end was
      // still there, so an ADD of eth0 failed "already exists" (code 4), and one of net1 kept the dying
      // eth0's default routes as the pod's and added none (the pod lost them a moment later).
      const pod = node.podNs();
      for (const ifname of ['eth0', 'net1']) {
        const old = containerId();
        const first = await node.add(pod, old);
        expect(first.code, first.stdout).toBe(0);
        expect((await node.del(old, pod.path)).code).toBe(0);
        const id = containerId();
        const next = await node.add(pod, id, undefined, ifname);
        expect(next.code, next.stdout).toBe(0);
        const result = next.json as AddResult;
        expect(result.routes.map((r) => r.dst).sort()).toEqual(['0.0.0.0/0', '::/0']);
        const links = ipJson<{ ifname: string }[]>(pod.name, 'link', 'show').map((l) => l.ifname);
        expect(links.sort()).toEqual([ifname, 'lo'].sort());
        const routes = ipJson<{ dst: string; dev: string }[]>(pod.name, '-4', 'route', 'show', 'default');
        expect(routes.map((r) => r.dev)).toEqual([ifname]);
        expect(nsPing(node.host.name, podAddr(result, 4))).toBe(true);
        expect((await node.call({ command: 'DEL', containerId: id, netns: pod.path, ifname })).code).toBe(0);
        await node.waitForVeths(0);
      }
    });

    it('DEL with a config list edited badly since the ADD, and a relative CNI_NETNS, still releases everything', async () => {
      const pod = node.podNs();
      const id = containerId();
      const add = await node.add(pod, id);
      expect(add.code, add.stdout).toBe(0);
      const before = node.hostVeths().length;
      // libcni sends DEL the config list as it is now; DEL reads none of these.
      const edited = node.conf({ mtu: 9_999_999, dns: { nameservers: ['x'] }, logLevel: 'trace' });
      const del = await node.call(
        { command: 'DEL', containerId: id, netns: 'var/run/x', ifname: 'eth0' },
        edited,
      );
      expect(del.code, del.stdout).toBe(0);
      expect(leaseAddresses(node).has(`${id}@eth0`)).toBe(false);
      expect(await node.waitForVeths(before - 1)).toHaveLength(before - 1);
      const line = await node.logLine((l) => l.verb === 'DEL' && l.level === 'warn');
      expect(line?.configIgnored).toContain('mtu must be an integer');
      expect(line?.envIgnored).toContain('CNI_NETNS "var/run/x" is not an absolute path');
      // ADD with the same config is refused, naming the field.
      const again = await node.add(node.podNs(), containerId(), edited);
      expect(again.json).toMatchObject({ code: 7 });
    });

    it('DEL while the agent is down succeeds, is spooled durably and is completed when the agent restarts', async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const before = node.hostVeths().length;
      await node.agent.stop();

      const del = await node.del(id, pod.path);
      expect(del.code, del.stdout + del.stderr).toBe(0);
      const spooled = readdirSync(node.agent.spoolDir).filter((f) => f.endsWith('.del.json'));
      expect(spooled).toHaveLength(1);
      expect(statSync(`${node.agent.spoolDir}/${spooled[0]}`).mode & 0o777).toBe(0o600);

      await node.startAgain();
      // Stopped cleanly (SIGTERM): nothing to say about the last run.
      expect(
        node.agent.logs.some((l) =>
          String(l.msg).startsWith('the last agent on this node did not stop cleanly'),
        ),
      ).toBe(false);
      expect(existsSync(`${node.agent.spoolDir}/${spooled[0]}`)).toBe(false);
      const line = await node.logLine((l) => l.verb === 'DEL' && l.containerId === id.slice(0, 12));
      expect(line).toMatchObject({
        outcome: 'ok',
        addresses: [podAddr(res, 4), podAddr(res, 6)],
        hostIf: hostVethName(id, 'eth0'),
      });
      expect(await node.waitForVeths(before - 1)).toHaveLength(before - 1);
      expect(node.hostRoutes(4).some((r) => r.dst === podAddr(res, 4))).toBe(false);
    });

    it('a restarted agent keeps every live pod: same addresses, connectivity, no spurious cleanup', async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const veths = node.hostVeths();
      await node.agent.kill();
      await node.startAgain();
      // Killed, not stopped: the new agent says so.
      const unclean = await node.logLine((l) =>
        String(l.msg).startsWith('the last agent on this node did not stop cleanly'),
      );
      expect(unclean).toMatchObject({ level: 'warn', stateDir: node.agent.stateDir });
      expect(node.hostVeths()).toEqual(veths);
      expect(nsPing(node.host.name, podAddr(res, 4))).toBe(true);
      const again = await node.add(pod, id);
      expect((again.json as AddResult).ips).toEqual(res.ips);
      await node.del(id, pod.path);
    });

    it('an agent whose socket file was removed under it listens again within seconds: ADD and STATUS work', async () => {
      rmSync(node.agent.socket); // a cleanup of /run/trellis: the agent lives on, no shim can reach it
      const line = await node.logLine(
        (l) => l.msg === 'the CNI socket file was removed under the agent; listening again',
        10_000,
      );
      expect(line).toMatchObject({ level: 'warn', socket: node.agent.socket });
      await vi.waitFor(() => expect(existsSync(node.agent.socket)).toBe(true), { timeout: 2000 });
      expect(statSync(node.agent.socket).mode & 0o777).toBe(0o600);
      const pod = node.podNs();
      const id = containerId();
      const add = await node.add(pod, id);
      expect(add.code, add.stdout).toBe(0);
      expect((await node.call({ command: 'STATUS' }, node.conf({}, '1.1.0'))).code).toBe(0);
      expect((await node.del(id, pod.path)).code).toBe(0);
    }, 30_000);

    it('IP forwarding turned off under the agent is turned back on within seconds, not at the next pass', async () => {
      // The node's own namespace (the test's): a `sysctl --system` that resets it. Passes are a
      // minute apart here: only the keeping can bring it back in time.
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      nsSysctl(node.host.name, 'net.ipv4.ip_forward', '0');
      const line = await node.logLine(
        (l) => l.msg === 'IP forwarding was off (something reset it); turned it back on',
        10_000,
      );
      expect(line).toMatchObject({ level: 'warn', sysctl: 'net/ipv4/ip_forward', was: '0' });
      expect(nsExec(node.host.name, 'sysctl', ['-n', 'net.ipv4.ip_forward']).trim()).toBe('1');
      expect(nsPing(node.host.name, podAddr(res, 4))).toBe(true);
      expect((await node.del(id, pod.path)).code).toBe(0);
    }, 30_000);

    it('an IPAM state directory removed under the agent is written back within seconds: leases survive a restart', async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const veths = node.hostVeths();
      // A node cleanup's rm -rf: without the write-back, ADD failed with 107 until a restart, and the
      // restart's sweep removed this running pod's veth (no lease named it).
      rmSync(join(node.agent.stateDir, 'ipam'), { recursive: true, force: true });
      const line = await node.logLine(
        (l) => l.msg === 'the IPAM state directory was removed under the agent; written back from memory',
        10_000,
      );
      expect(line).toMatchObject({ level: 'warn', dir: join(node.agent.stateDir, 'ipam') });
      expect(leaseAddresses(node).get(`${id}@eth0`)).toEqual(
        expect.arrayContaining([podAddr(res, 4), podAddr(res, 6)]),
      );
      const other = node.podNs();
      const otherId = containerId();
      const add = await node.add(other, otherId);
      expect(add.code, add.stdout).toBe(0);

      await node.agent.kill();
      await node.startAgain();
      expect(node.hostVeths()).toEqual(expect.arrayContaining(veths));
      expect(nsPing(node.host.name, podAddr(res, 4))).toBe(true);
      const again = await node.add(pod, id);
      expect((again.json as AddResult).ips).toEqual(res.ips);
      expect((await node.del(id, pod.path)).code).toBe(0);
      expect((await node.del(otherId, other.path)).code).toBe(0);
    }, 40_000);

    it("a pod's lease file and an address link removed under the agent are written back within seconds: a restart finds them", async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const [v4, v6] = [podAddr(res, 4), podAddr(res, 6)];
      const ipamDir = join(node.agent.stateDir, 'ipam');
      const before = readLeaseFile(node, `${id}@eth0`);
      const mark = node.agent.logs.length;
      // A hand cleanup of the wrong files: the restart after it rebuilt the lease from the veth's
      // alias at best, and a veth from a release that wrote none was swept, the pod cut off.
      rmSync(join(ipamDir, 'leases', `${id}@eth0.json`));
      unlinkSync(join(ipamDir, 'addrs', v6));
      const line = await node.logLine(
        (l) => l.msg === "a pod's lease record was removed under the agent; written back from memory",
        10_000,
      );
      expect(line).toMatchObject({
        level: 'warn',
        containerId: id.slice(0, 12),
        missing: ['lease file', v6],
      });
      expect(readLeaseFile(node, `${id}@eth0`)).toEqual(before);
      expect(readlinkSync(join(ipamDir, 'addrs', v6))).toBe(`${id}@eth0`);

      await node.agent.kill();
      await node.startAgain();
      const restarted = node.agent.logs.slice(mark).map((l) => String(l.msg));
      expect(restarted.filter((m) => m.startsWith('lease record missing'))).toEqual([]);
      expect(nsPing(node.host.name, v4) && nsPing(node.host.name, v6)).toBe(true);
      const again = await node.add(pod, id);
      expect((again.json as AddResult).ips).toEqual(res.ips);
      expect((await node.del(id, pod.path)).code).toBe(0);
    }, 40_000);
  },
);

/** One lease record as the agent wrote it (state dir ipam/leases/<containerId>@<ifname>.json). */
function readLeaseFile(node: NodeHarness, owner: string): unknown {
  return JSON.parse(readFileSync(join(node.agent.stateDir, 'ipam', 'leases', `${owner}.json`), 'utf8'));
}
