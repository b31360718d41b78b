/**
 * Input the CNI spec allows and the reference plugins (ptp) serve, which trellis refused: a DEL whose
 * prevResult does not parse (DEL never reads it; failing it left the lease, veth and routes, and the
 * runtime retries a failed DEL forever). Through the real binary and agent, asserting what the
 * kernel and the state directory show.
 */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { netnsSkipReason } from '../../support/netns.ts';
import { holdings, type NodeHoldings } from '../reliability/support.ts';
import { containerId, NodeHarness } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

/** prevResults runtimes and chained plugins have sent, with what the agent's log line must name. */
const BROKEN_PREV_RESULTS: [string, unknown, RegExp][] = [
  [
    'ips[].interface out of range',
    { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', interface: 4 }] },
    /^prevResult\.ips\[0\]\.interface 4/,
  ],
  [
    'ips[].gateway not an address',
    { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', gateway: '10.244.1' }] },
    /^prevResult\.ips\[0\]\.gateway "10\.244\.1"/,
  ],
  [
    'a route without dst',
    { cniVersion: '1.0.0', routes: [{ gw: '1.2.3.4' }] },
    /^prevResult\.routes\[0\]\.dst/,
  ],
  [
    'interfaces an object',
    { cniVersion: '1.0.0', interfaces: {} },
    /^prevResult\.interfaces must be an array/,
  ],
  [
    'a 0.2.0 result',
    { cniVersion: '0.2.0', ip4: { ip: '10.244.1.9/32' } },
    /^prevResult: incompatible CNI versions/,
  ],
];

describe.skipIf(skip !== undefined)(
  `input the spec allows: DEL with an unusable prevResult${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    /** What the node holds once the background veth deletions are done. */
    async function settledHoldings(veths: number): Promise<NodeHoldings> {
      await node.waitForVeths(veths);
      return holdings(node);
    }

    for (const [what, prevResult, named] of BROKEN_PREV_RESULTS) {
      it(`DEL with a prevResult it cannot parse (${what}) succeeds, frees everything and warns`, async () => {
        const before = holdings(node);
        const pod = node.podNs();
        const id = containerId();
        const add = await node.add(pod, id);
        expect(add.code, add.stdout).toBe(0);

        const del = await node.call(
          { command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0' },
          node.conf({ prevResult }),
        );
        expect(del.code, del.stdout).toBe(0);
        expect(del.stdout).toBe('');
        // No lease, reservation, veth or protocol-126 route of the pod left.
        expect(await settledHoldings(before.veths.length)).toEqual(before);
        const line = await node.logLine((l) => l.verb === 'DEL' && l.containerId === id.slice(0, 12));
        expect(line).toMatchObject({ outcome: 'ok', level: 'warn' });
        expect(String(line?.prevResultIgnored)).toMatch(named);
      });
    }

    it('a spooled DEL with such a prevResult is completed when the agent starts again', async () => {
      const before = holdings(node);
      const pod = node.podNs();
      const id = containerId();
      expect((await node.add(pod, id)).code).toBe(0);
      await node.agent.stop();
      const del = await node.call(
        { command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0' },
        node.conf({ prevResult: BROKEN_PREV_RESULTS[0]![1] }),
      );
      expect(del.code, del.stdout + del.stderr).toBe(0);
      expect(readdirSync(node.agent.spoolDir).filter((f) => f.endsWith('.del.json'))).toHaveLength(1);

      await node.startAgain();
      const line = await node.logLine((l) => l.verb === 'DEL' && l.containerId === id.slice(0, 12));
      expect(line).toMatchObject({ outcome: 'ok', spooled: true });
      // The spool is empty again and the pod's lease, veth and routes are gone.
      expect(await settledHoldings(before.veths.length)).toEqual(before);
    });
  },
);
