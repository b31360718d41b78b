import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, ipJson, netnsSkipReason, nsPing } from '../../support/netns.ts';
import { holdings } from '../reliability/support.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

/**
 * ADD creates the veth pair without looking first (one netlink round trip less per pod); a name
 * collision is dealt with when the kernel reports it. These pin down the two collisions there are.
 */
describe.skipIf(skip !== undefined)(
  `ADD over leftovers: a stale host end, a taken pod ifname${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness();
    beforeAll(() => node.start());
    afterAll(() => node.stop());

    it('a host veth left by a crashed ADD of the same attachment is replaced and the pod works', async () => {
      const pod = node.podNs();
      const id = containerId();
      const name = hostVethName(id, 'eth0');
      // What a crash between veth creation and the answer leaves: the host end, its peer elsewhere.
      ip(node.host.name, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'trl-orphan');
      const before = ipJson<{ ifindex: number }[]>(node.host.name, 'link', 'show', name)[0]!.ifindex;

      const add = await node.add(pod, id);
      expect(add.code, add.stdout).toBe(0);
      const after = ipJson<{ ifindex: number }[]>(node.host.name, 'link', 'show', name)[0]!.ifindex;
      expect(after).not.toBe(before);
      // The old pair is gone with its host end.
      expect(ipJson<{ ifname: string }[]>(node.host.name, 'link', 'show').map((l) => l.ifname)).not.toContain(
        'trl-orphan',
      );
      expect(nsPing(node.host.name, podAddr(add.json as AddResult, 4))).toBe(true);
      expect((await node.del(id, pod.path)).code).toBe(0);
    });

    it("a pod ifname someone else already took fails ADD with EEXIST's error and leaves nothing behind", async () => {
      const pod = node.podNs();
      const id = containerId();
      ip(pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0');
      const before = holdings(node);

      const add = await node.add(pod, id);
      expect(add.code).toBe(1);
      expect((add.json as { msg: string }).msg).toMatch(/exist/i);
      // No veth, no route of either family, no lease or reservation: all as before the ADD.
      expect(holdings(node)).toEqual(before);
      const line = await node.logLine((l) => l.verb === 'ADD' && l.containerId === id.slice(0, 12));
      expect(line?.outcome).toBe('error');
      ip(pod.name, 'link', 'del', 'eth0');
      const retry = await node.add(pod, id);
      expect(retry.code, retry.stdout).toBe(0);
      expect((await node.del(id, pod.path)).code).toBe(0);
    });
  },
);
