import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addList,
  builtSkipReason,
  type ConfList,
  checkList,
  delList,
  referencePluginsSkipReason,
} from '../../support/cni-driver.ts';
import { ip, netnsSkipReason, nodeIn } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason() ?? referencePluginsSkipReason('portmap');

function output(child: ChildProcess, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out; stderr: ${err}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`exit ${code}: ${err}`));
    });
  });
}

describe.skipIf(skip !== undefined)(
  `chaining with the reference portmap plugin${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('our result is a valid prevResult for portmap, and a hostPort reaches the pod from outside, a neighbour pod, itself (hairpin) and the node (its address and localhost)', async () => {
      // A client outside the node, on a link to the node's "host" namespace.
      const client = node.pool.add('cli');
      ip(
        node.host.name,
        'link',
        'add',
        'uplink0',
        'type',
        'veth',
        'peer',
        'name',
        'uplink0',
        'netns',
        client.name,
      );
      ip(node.host.name, 'addr', 'add', '192.0.2.1/24', 'dev', 'uplink0');
      ip(node.host.name, 'link', 'set', 'uplink0', 'up');
      ip(client.name, 'addr', 'add', '192.0.2.2/24', 'dev', 'uplink0');
      ip(client.name, 'link', 'set', 'uplink0', 'up');

      const list: ConfList = {
        cniVersion: '1.0.0',
        name: 'trellis',
        plugins: [
          { type: 'trellis', socket: node.agent.socket, spoolDir: node.agent.spoolDir },
          {
            type: 'portmap',
            capabilities: { portMappings: true },
            snat: true,
            // What libcni injects for a plugin with the portMappings capability.
            runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
          },
        ],
      };
      const pod = node.podNs();
      const id = containerId();
      const call = { containerId: id, netns: pod.path, ifname: 'eth0', hostNetns: node.host.name };
      const added = await addList(list, call);
      expect(added.code, added.stdout + added.stderr).toBe(0);
      const result = added.json as AddResult;
      expect(podAddr(result, 4)).toMatch(/^10\.244\.1\./);

      // A second pod on the same node, a client of the hostPort like any other.
      const neighbour = node.podNs();
      const neighbourCall = { ...call, containerId: containerId(), netns: neighbour.path };
      const neighbourAdded = await addList(list, neighbourCall);
      expect(neighbourAdded.code, neighbourAdded.stdout + neighbourAdded.stderr).toBe(0);

      const server = nodeIn(
        pod.name,
        "require('net').createServer(s => s.end('hello from the pod')).listen(80, '0.0.0.0', () => console.log('up'))",
      );
      // What the server answers a client in `ns` connecting to host:port.
      const ask = (ns: string, host: string, port = 8080) =>
        output(
          nodeIn(
            ns,
            `const s = require('net').connect(${port}, '${host}'); let d=''; s.on('data', c => d += c); s.on('end', () => { process.stdout.write(d); });`,
          ),
        );
      try {
        await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));
        // From outside the node, to its address.
        expect(await ask(client.name, '192.0.2.1')).toBe('hello from the pod');
        // From another pod on the node, to the node's address.
        expect(await ask(neighbour.name, '192.0.2.1')).toBe('hello from the pod');
        // Hairpin: the pod reaches itself through its own hostPort (portmap masquerades it, so the
        // answer goes back through the host and is un-DNATed there).
        expect(await ask(pod.name, '192.0.2.1')).toBe('hello from the pod');
        // From the node itself (a hostNetwork client), to its own address and to localhost (portmap's
        // "snat": true covers that case).
        expect(await ask(node.host.name, '192.0.2.1')).toBe('hello from the pod');
        expect(await ask(node.host.name, '127.0.0.1')).toBe('hello from the pod');
      } finally {
        server.kill('SIGKILL');
      }

      for (const [c, r] of [
        [call, result],
        [neighbourCall, neighbourAdded.json as AddResult],
      ] as const) {
        const dels = await delList(list, c, r);
        for (const d of dels) expect(d.code, d.stdout + d.stderr).toBe(0);
      }
    });
  },
);

const sbrSkip = netnsSkipReason ?? builtSkipReason() ?? referencePluginsSkipReason('sbr');

describe.skipIf(sbrSkip !== undefined)(
  `chaining with the reference sbr plugin${sbrSkip ? ` (skipped: ${sbrSkip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('CHECK passes once sbr moved the pod routes into its own table, still finds a route missing there, and DEL succeeds', async () => {
      const list: ConfList = {
        cniVersion: '1.0.0',
        name: 'trellis',
        plugins: [
          { type: 'trellis', socket: node.agent.socket, spoolDir: node.agent.spoolDir },
          { type: 'sbr' },
        ],
      };
      const pod = node.podNs();
      const id = containerId();
      const call = { containerId: id, netns: pod.path, ifname: 'eth0', hostNetns: node.host.name };
      const added = await addList(list, call);
      expect(added.code, added.stdout + added.stderr).toBe(0);
      const result = added.json as AddResult;

      // sbr's work, as the kernel has it: the pod's routes left the main table for table 100,
      // and a rule sends the pod's address there.
      expect(ip(pod.name, '-4', 'route', 'show', 'table', 'main')).not.toMatch(/default/);
      expect(ip(pod.name, '-4', 'route', 'show', 'table', '100')).toMatch(
        /default via 169\.254\.1\.1 dev eth0/,
      );
      expect(ip(pod.name, '-4', 'rule', 'show')).toMatch(
        new RegExp(`from ${podAddr(result, 4).replace(/\./g, '\\.')} lookup 100`),
      );

      const checks = await checkList(list, call, result);
      for (const c of checks) expect(c.code, c.stdout + c.stderr).toBe(0);

      // A route of trellis's removed from sbr's table is still found missing.
      ip(pod.name, '-4', 'route', 'del', 'default', 'table', '100');
      const broken = await checkList(list, call, result);
      expect(broken[0]!.code).toBe(1);
      expect(broken[0]!.stdout).toMatch(/default route 0\.0\.0\.0\/0 via 169\.254\.1\.1 is missing/);

      const dels = await delList(list, call, result);
      for (const d of dels) expect(d.code, d.stdout + d.stderr).toBe(0);
    });
  },
);
