import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, ipJson, netnsSkipReason, nsPing } from '../../support/netns.ts';
import { leaseAddresses } from '../reliability/support.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

interface IpAddr {
  ifname: string;
  mtu: number;
  address: string;
  operstate: string;
  addr_info: {
    family: string;
    local: string;
    prefixlen: number;
    scope: string;
    nodad?: boolean;
    tentative?: boolean;
  }[];
}

describe.skipIf(skip !== undefined)(
  `pod networking through the real shim and agent${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('ADD gives the pod IPv4 and IPv6 that the kernel shows, reachable from the host and other pods', async () => {
      const podA = node.podNs();
      const podB = node.podNs();
      const idA = containerId();
      const idB = containerId();
      const runA = await node.add(podA, idA, node.conf({ mtu: 1400, dns: { nameservers: ['10.96.0.10'] } }));
      expect(runA.code, runA.stdout + runA.stderr).toBe(0);
      const resA = runA.json as AddResult;
      const runB = await node.add(podB, idB);
      expect(runB.code, runB.stdout).toBe(0);
      const resB = runB.json as AddResult;

      // The pod side, read from the kernel.
      const [eth0] = ipJson<IpAddr[]>(podA.name, 'addr', 'show', 'dev', 'eth0');
      expect(eth0!.mtu).toBe(1400);
      expect(eth0!.address).toBe(resA.interfaces[1]!.mac);
      expect(resA.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: podA.path, mtu: 1400 });
      const v4 = podAddr(resA, 4);
      const v6 = podAddr(resA, 6);
      expect(eth0!.addr_info).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ family: 'inet', local: v4, prefixlen: 32 }),
          expect.objectContaining({ family: 'inet6', local: v6, prefixlen: 128 }),
        ]),
      );
      // The pod's own addresses skip DAD (nodad): usable at once. The kernel flags even a no-DAD
      // link-local address tentative until its DAD work item runs (ms); a real DAD would take 1-2 s.
      expect(eth0!.addr_info.filter((a) => a.scope === 'global' && a.tentative === true)).toEqual([]);
      expect(eth0!.addr_info.find((a) => a.local === v6)?.nodad).toBe(true);
      const linkLocalSettled = Date.now() + 500;
      let linkLocal = eth0!.addr_info.filter((a) => a.scope === 'link');
      while (linkLocal.some((a) => a.tentative === true) && Date.now() < linkLocalSettled) {
        await new Promise((r) => setTimeout(r, 10));
        linkLocal = ipJson<IpAddr[]>(podA.name, 'addr', 'show', 'dev', 'eth0')[0]!.addr_info.filter(
          (a) => a.scope === 'link',
        );
      }
      expect(linkLocal.filter((a) => a.tentative === true)).toEqual([]);
      const lo = ipJson<{ operstate: string; flags: string[] }[]>(podA.name, 'link', 'show', 'lo')[0]!;
      expect(lo.flags).toContain('UP');
      expect(ip(podA.name, '-4', 'route', 'show', 'default')).toContain('via 169.254.1.1 dev eth0');
      expect(ip(podA.name, '-6', 'route', 'show', 'default')).toContain('via fe80::1 dev eth0');
      expect(resA.dns).toEqual({ nameservers: ['10.96.0.10'] });

      // The host side: the named veth with MTU, host routes tagged with protocol 126.
      const hostIf = resA.interfaces[0]!.name;
      expect(hostIf).toMatch(/^trl[0-9a-f]{12}$/);
      const [hostLink] = ipJson<IpAddr[]>(node.host.name, 'addr', 'show', 'dev', hostIf);
      expect(hostLink!.mtu).toBe(1400);
      expect(hostLink!.address).toBe(resA.interfaces[0]!.mac);
      expect(node.hostRoutes(4)).toEqual(
        expect.arrayContaining([expect.objectContaining({ dst: v4, dev: hostIf })]),
      );
      expect(node.hostRoutes(6)).toEqual(
        expect.arrayContaining([expect.objectContaining({ dst: v6, dev: hostIf })]),
      );

      // Connectivity: the gateway answers, host <-> pod and pod <-> pod on both families.
      expect(nsPing(podA.name, '169.254.1.1')).toBe(true);
      expect(nsPing(podA.name, 'fe80::1%eth0')).toBe(true);
      expect(nsPing(node.host.name, v4)).toBe(true);
      expect(nsPing(node.host.name, v6)).toBe(true);
      expect(nsPing(podA.name, podAddr(resB, 4))).toBe(true);
      expect(nsPing(podA.name, podAddr(resB, 6))).toBe(true);
      expect(nsPing(podB.name, v4)).toBe(true);

      // One structured log line per call, with pod, addresses, timing and outcome.
      const line = await node.logLine((l) => l.verb === 'ADD' && l.containerId === idA.slice(0, 12));
      expect(line).toMatchObject({
        outcome: 'ok',
        pod: `default/${idA}`,
        ifname: 'eth0',
        addresses: [v4, v6],
      });
      expect(typeof line!.durationMs).toBe('number');
      // A standalone agent (no --node-name) names its node by the host name, on every line.
      expect(line!.node).toBe(hostname());

      for (const [id, ns] of [
        [idA, podA],
        [idB, podB],
      ] as const) {
        expect((await node.del(id, ns.path)).code).toBe(0);
      }
    });

    it('DEL removes the veth, the host routes and the lease; a second DEL succeeds', async () => {
      await node.waitForVeths(0); // earlier tests' veths are deleted in the background
      const pod = node.podNs();
      const id = containerId();
      const before = node.hostVeths().length;
      const res = (await node.add(pod, id)).json as AddResult;
      const v4 = podAddr(res, 4);
      const v6 = podAddr(res, 6);
      expect(node.hostVeths()).toHaveLength(before + 1);
      expect(leaseAddresses(node).get(`${id}@eth0`)).toEqual([v4, v6]);
      expect(node.hostRoutes(6).some((r) => r.dst === v6)).toBe(true);

      const del = await node.del(id, pod.path);
      expect(del.code, del.stdout).toBe(0);
      expect(del.stdout).toBe('');
      // Routes and the lease are gone before DEL answers; the veth pair goes right after (off the
      // critical path).
      expect(node.hostRoutes(4).some((r) => r.dst === v4)).toBe(false);
      expect(node.hostRoutes(6).some((r) => r.dst === v6)).toBe(false);
      expect(leaseAddresses(node).has(`${id}@eth0`)).toBe(false);
      expect(await node.waitForVeths(before)).toHaveLength(before);
      expect(ip(pod.name, 'link', 'show')).not.toContain('eth0');

      const again = await node.del(id, pod.path);
      expect(again.code).toBe(0);
      // containerd's second DEL: empty CNI_NETNS, no prevResult.
      expect((await node.del(id, undefined)).code).toBe(0);

      // The lease is free: the address can be handed out again (round-robin comes back to it).
      const isDel = (l: Record<string, unknown>) => l.verb === 'DEL' && l.containerId === id.slice(0, 12);
      await node.logLine((l) => isDel(l) && Array.isArray(l.addresses) && l.addresses.length === 0);
      const delLog = node.agent.logs.filter(isDel);
      expect(delLog[0]).toMatchObject({ outcome: 'ok', addresses: [v4, podAddr(res, 6)] });
      expect(delLog[1]).toMatchObject({ outcome: 'ok', addresses: [] });
    });

    it('DEL after the pod namespace vanished succeeds and frees the address', async () => {
      await node.waitForVeths(0); // earlier tests' veths are deleted in the background
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const before = node.hostVeths().length;
      ip(undefined, 'netns', 'del', pod.name);
      // The kernel destroys the pair with the namespace.
      expect(await node.waitForVeths(before - 1)).toHaveLength(before - 1);
      const del = await node.del(id, pod.path);
      expect(del.code, del.stdout).toBe(0);
      const line = await node.logLine((l) => l.verb === 'DEL' && l.containerId === id.slice(0, 12));
      expect(line).toMatchObject({ outcome: 'ok', addresses: [podAddr(res, 4), podAddr(res, 6)] });
      expect(node.hostRoutes(4).some((r) => r.dst === podAddr(res, 4))).toBe(false);
    });

    it('ADD repeated for the same container and netns returns the same addresses', async () => {
      const pod = node.podNs();
      const id = containerId();
      const first = (await node.add(pod, id)).json as AddResult;
      const second = await node.add(pod, id);
      expect(second.code).toBe(0);
      expect((second.json as AddResult).ips).toEqual(first.ips);
      expect((second.json as AddResult).interfaces).toEqual(first.interfaces);
      await node.del(id, pod.path);
    });

    it('CHECK passes on a healthy pod and names a route deleted by hand', async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const check = () =>
        node.call(
          { command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0' },
          node.conf({ prevResult: res }),
        );
      const ok = await check();
      expect(ok.code, ok.stdout).toBe(0);
      expect(ok.stdout).toBe('');

      ip(pod.name, '-4', 'route', 'del', 'default');
      const drift = await check();
      expect(drift.code).toBe(1);
      expect(drift.json).toMatchObject({ code: 104 });
      expect((drift.json as { msg: string }).msg).toContain(
        'default route 0.0.0.0/0 via 169.254.1.1 is missing',
      );

      // A host route deleted by hand is check-drift.test.ts's (in-process: here the agent's host-side
      // repair races CHECK for it).
      await node.del(id, pod.path);
    });

    it('CHECK names a gateway address gone from the host veth; a repeated ADD puts it back', async () => {
      const pod = node.podNs();
      const id = containerId();
      const first = await node.add(pod, id);
      expect(first.code, first.stdout + first.stderr).toBe(0);
      const res = first.json as AddResult;
      const hostEnd = res.interfaces[0]!.name;
      const check = (prevResult: AddResult) =>
        node.call(
          { command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0' },
          node.conf({ prevResult }),
        );
      ip(node.host.name, 'addr', 'del', 'fe80::1/64', 'dev', hostEnd);
      ip(node.host.name, 'addr', 'del', '169.254.1.1/32', 'dev', hostEnd);
      const drift = await check(res);
      expect(drift.json).toMatchObject({ code: 104 });
      expect((drift.json as { msg: string }).msg).toContain(
        `gateway address fe80::1/64 is missing on host veth ${hostEnd}`,
      );
      expect((drift.json as { msg: string }).msg).toContain('gateway address 169.254.1.1/32 is missing');

      // The runtime's retry: ADD again sets the attachment up anew, with the same addresses.
      const again = await node.add(pod, id);
      expect(again.code, again.stdout + again.stderr).toBe(0);
      expect((again.json as AddResult).ips).toEqual(res.ips);
      const held = ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>(
        node.host.name,
        'addr',
        'show',
        'dev',
        (again.json as AddResult).interfaces[0]!.name,
      )[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`);
      expect(held).toEqual(expect.arrayContaining(['169.254.1.1/32', 'fe80::1/64']));
      expect(nsPing(pod.name, 'fe80::1%eth0')).toBe(true);
      const ok = await check(again.json as AddResult);
      expect(ok.code, ok.stdout).toBe(0);
      await node.del(id, pod.path);
    });

    it('ADD after another plugin of a chain passes its prevResult through, ours appended', async () => {
      const pod = node.podNs();
      const id = containerId();
      const prevResult = {
        cniVersion: '1.0.0',
        interfaces: [{ name: 'other0', sandbox: pod.path }],
        ips: [{ address: '192.0.2.7/24', interface: 0 }],
        routes: [{ dst: '198.51.100.0/24', gw: '192.0.2.1' }],
        dns: { nameservers: ['192.0.2.53'] },
      };
      const run = await node.call(
        { command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0' },
        node.conf({ prevResult }),
      );
      expect(run.code, run.stdout + run.stderr).toBe(0);
      const res = run.json as AddResult;
      expect(res.interfaces.map((i) => i.name)).toEqual(['other0', expect.stringMatching(/^trl/), 'eth0']);
      expect(res.ips[0]).toEqual({ address: '192.0.2.7/24', interface: 0 });
      // Our addresses name our pod interface at its new index.
      expect(res.ips.slice(1).map((i) => i.interface)).toEqual([2, 2]);
      expect(res.routes[0]).toEqual({ dst: '198.51.100.0/24', gw: '192.0.2.1' });
      expect(res.routes.map((r) => r.dst)).toContain('0.0.0.0/0');
      expect(res.dns).toEqual({ nameservers: ['192.0.2.53'] });
      // The whole chained result is CHECK's prevResult; the other plugin's address is not ours to check.
      const check = await node.call(
        { command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0' },
        node.conf({ prevResult: res }),
      );
      expect(check.code, check.stdout).toBe(0);
      await node.del(id, pod.path);
    });

    it('CHECK allows what a later plugin changed and reported, and finds what it claims but is gone', async () => {
      const pod = node.podNs();
      const id = containerId();
      const res = (await node.add(pod, id)).json as AddResult;
      const check = (prevResult: AddResult) =>
        node.call(
          { command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0' },
          node.conf({ prevResult }),
        );
      // A later plugin replaced the IPv4 default route and dropped it from the result, and added an
      // address to eth0 that it reports.
      ip(pod.name, '-4', 'route', 'del', 'default');
      ip(pod.name, 'addr', 'add', '192.0.2.9/32', 'dev', 'eth0');
      const changed: AddResult = {
        ...res,
        routes: res.routes.filter((r) => r.dst !== '0.0.0.0/0'),
        ips: [...res.ips, { address: '192.0.2.9/32', interface: 1 }],
      };
      const ok = await check(changed);
      expect(ok.code, ok.stdout).toBe(0);
      // The result still listing the default route: it is missed.
      const drift = await check({ ...changed, routes: res.routes });
      expect(drift.json).toMatchObject({ code: 104 });
      expect((drift.json as { msg: string }).msg).toContain(
        'default route 0.0.0.0/0 via 169.254.1.1 is missing',
      );
      // An address the result claims on eth0 that is neither ours nor there.
      ip(pod.name, 'addr', 'del', '192.0.2.9/32', 'dev', 'eth0');
      const gone = await check(changed);
      expect(gone.json).toMatchObject({ code: 104 });
      expect((gone.json as { msg: string }).msg).toContain(
        "prevResult address 192.0.2.9/32 is neither trellis's lease nor on eth0",
      );
      await node.del(id, pod.path);
    });

    it('a failed ADD leaves no lease, veth or route behind', async () => {
      await node.waitForVeths(0); // earlier tests' veths are deleted in the background
      const pod = node.podNs();
      // An interface named eth0 already in the pod makes the veth creation fail.
      ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'x0');
      const before = node.hostVeths();
      const routes4 = node.hostRoutes(4).length;
      const id = containerId();
      const run = await node.add(pod, id);
      expect(run.code).toBe(1);
      expect(run.json).toMatchObject({
        code: 4,
        msg: expect.stringContaining(`interface eth0 already exists in ${pod.path}`),
      });
      expect(node.hostVeths()).toEqual(before);
      expect(node.hostRoutes(4)).toHaveLength(routes4);
      // No lease: a DEL finds nothing to release.
      await node.del(id, pod.path);
      const delLine = await node.logLine((l) => l.verb === 'DEL' && l.containerId === id.slice(0, 12));
      expect(delLine).toMatchObject({ addresses: [] });
    });

    it('ADD into a path that is not a network namespace is refused with code 102 and no lease', async () => {
      const id = containerId();
      const leasesBefore = leaseAddresses(node);
      const run = await node.call({
        command: 'ADD',
        containerId: id,
        netns: '/proc/self/ns/uts',
        ifname: 'eth0',
      });
      expect(run.code).toBe(1);
      expect(run.json).toMatchObject({ code: 102 });
      const missing = await node.call({
        command: 'ADD',
        containerId: id,
        netns: '/var/run/netns/trl-nope',
        ifname: 'eth0',
      });
      expect(missing.json).toMatchObject({ code: 102 });
      expect((missing.json as { msg: string }).msg).toContain('/var/run/netns/trl-nope');
      expect(leaseAddresses(node)).toEqual(leasesBefore);
      expect(leaseAddresses(node).has(`${id}@eth0`)).toBe(false);
    });

    it('a CNI_NETNS that is no namespace file is refused without being opened (a device can act on open)', async () => {
      // A FIFO with a writer blocked in open(2) until some reader opens it: the agent's open would let
      // it through. /dev/watchdog is the harmful case (armed at open, rebooting the node at close).
      const dir = mkdtempSync(join(tmpdir(), 'trl-fifo-'));
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      const writer = spawn('sh', ['-c', 'exec 3>"$0"; echo opened', fifo], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let out = '';
      writer.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      try {
        for (const command of ['ADD', 'CHECK'] as const) {
          const run = await node.call(
            { command, containerId: containerId(), netns: fifo, ifname: 'eth0' },
            command === 'CHECK'
              ? node.conf({ prevResult: { cniVersion: '1.0.0', interfaces: [], ips: [] } })
              : node.conf(),
          );
          expect(run.json, run.stdout).toMatchObject({ code: 102 });
        }
        // Anything the agent opened was opened before it answered; the writer's line takes a pipe.
        await new Promise((r) => setTimeout(r, 200));
        expect(out).toBe('');
        expect(writer.exitCode).toBeNull();
      } finally {
        writer.kill();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);
