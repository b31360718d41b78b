import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, netnsSkipReason, type TestNetns } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

/**
 * A pod sends with its own addresses only: a packet from another pod's address (or any address not
 * routed back through the sender's veth) is dropped on the node, IPv4 and IPv6, while the pod's own
 * traffic passes. Pod A, with NET_ADMIN in its namespace as a test pod has, takes pod B's address as
 * a second one and sends UDP from it to pod C; C records the sources it hears.
 */
const skip = netnsSkipReason ?? builtSkipReason();

/** In `ns`: a UDP listener on `port` (both families) printing each datagram's source address. */
function listen(ns: string, port: number) {
  const program = `
    const dgram = require('node:dgram');
    const s = dgram.createSocket({ type: 'udp6', ipv6Only: false });
    s.on('message', (_m, r) => console.log(r.address.replace(/^::ffff:/, '')));
    s.bind(${port}, '::', () => console.log('listening'));
  `;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  child.stdout
    .setEncoding('utf8')
    .on('data', (d: string) => lines.push(...d.split('\n').filter((l) => l !== '')));
  return { child, lines };
}

/** In `ns`: three UDP datagrams from `from` to `to`:`port`. */
function send(ns: string, from: string, to: string, port: number): void {
  const type = to.includes(':') ? 'udp6' : 'udp4';
  const program = `
    const s = require('node:dgram').createSocket('${type}');
    s.bind(0, ${JSON.stringify(from)}, async () => {
      for (let i = 0; i < 3; i++) await new Promise((r) => s.send('x', ${port}, ${JSON.stringify(to)}, r));
      s.close();
    });
  `;
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', program], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`send from ${from}: ${r.stderr}`);
}

describe.skipIf(skip !== undefined)(
  `pods send from their own addresses only (real agent, real shim)${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    const pods: { ns: TestNetns; res: AddResult }[] = [];
    beforeAll(async () => {
      await node.start();
      for (let i = 0; i < 3; i++) {
        const ns = node.podNs();
        const add = await node.add(ns, containerId());
        if (add.code !== 0) throw new Error(add.stdout);
        ip(ns.name, 'link', 'set', 'lo', 'up');
        pods.push({ ns, res: add.json as AddResult });
      }
    }, 60_000);
    afterAll(() => node.stop());

    it("a pod's packets from another pod's address are dropped, its own pass (IPv4 and IPv6)", async () => {
      const [a, b, c] = pods as [(typeof pods)[0], (typeof pods)[0], (typeof pods)[0]];
      const l = listen(c.ns.name, 5557);
      try {
        for (let i = 0; !l.lines.includes('listening'); i++) {
          expect(i).toBeLessThan(250);
          await new Promise((r) => setTimeout(r, 20));
        }
        for (const family of [4, 6] as const) {
          const own = podAddr(a.res, family);
          const stolen = podAddr(b.res, family);
          const bits = family === 4 ? '32' : '128';
          ip(
            a.ns.name,
            'addr',
            'add',
            `${stolen}/${bits}`,
            'dev',
            'eth0',
            ...(family === 6 ? ['nodad'] : []),
          );
          send(a.ns.name, stolen, podAddr(c.res, family), 5557);
          send(a.ns.name, own, podAddr(c.res, family), 5557);
        }
        const heard = () => l.lines.filter((x) => x !== 'listening');
        for (let i = 0; heard().length < 6; i++) {
          expect(i, `C heard ${JSON.stringify(heard())}`).toBeLessThan(100);
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 200));
        expect(new Set(heard())).toEqual(new Set([podAddr(a.res, 4), podAddr(a.res, 6)]));
        const counters = spawnSync(
          'ip',
          ['netns', 'exec', node.host.name, 'nft', 'list', 'chain', 'inet', 'trellis', 'prerouting'],
          {
            encoding: 'utf8',
          },
        ).stdout;
        const dropped = [...counters.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
        // The three datagrams of each family, and for IPv6 whatever the kernel of A sent from the stolen
        // address itself (neighbour discovery), dropped as well.
        expect(dropped).toHaveLength(2);
        expect(dropped[0]).toBe(3);
        expect(dropped[1]).toBeGreaterThanOrEqual(3);
      } finally {
        l.child.kill('SIGKILL');
      }
    });
  },
);
