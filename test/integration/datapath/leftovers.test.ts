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

    // The pod already has an interface of that name, not trellis's: its own lo, or an eth0 another
    // plugin made. The runtime's CNI_IFNAME is at fault (4), and the message says which interface in
    // which namespace, not the kernel's "RTM_NEWLINK ... EEXIST".
    for (const ifname of ['eth0', 'lo']) {
      it(`a pod ifname already taken (${ifname}) fails ADD with 4 naming it and the netns, and leaves nothing behind`, async () => {
        const pod = node.podNs();
        const id = containerId();
        if (ifname !== 'lo') ip(pod.name, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'other0');
        const podLinks = (): unknown[] =>
          ipJson<{ ifname: string; ifindex: number; flags: string[] }[]>(pod.name, 'link', 'show').map(
            (l) => [l.ifindex, l.ifname, l.flags],
          );
        const linksBefore = podLinks();
        const before = holdings(node);

        const add = await node.add(pod, id, undefined, ifname);
        expect(add.code).toBe(1);
        expect(add.json).toMatchObject({
          code: 4,
          msg: `interface ${ifname} already exists in ${pod.path}: CNI_IFNAME must name an interface the pod does not have yet`,
        });
        // No veth, no route of either family, no lease or reservation: all as before the ADD.
        await node.waitForVeths(before.veths.length);
        expect(holdings(node)).toEqual(before);
        // The pod's own interfaces are untouched.
        expect(podLinks()).toEqual(linksBefore);
        const mine = (l: Record<string, unknown>): boolean =>
          l.verb === 'ADD' && l.containerId === id.slice(0, 12);
        expect(await node.logLine(mine)).toMatchObject({ outcome: 'error', code: 4, level: 'warn' });
        expect(node.agent.logs.filter(mine)).toHaveLength(1);
        if (ifname === 'lo') return;
        ip(pod.name, 'link', 'del', ifname);
        const retry = await node.add(pod, id, undefined, ifname);
        expect(retry.code, retry.stdout).toBe(0);
        expect((await node.call({ command: 'DEL', containerId: id, netns: pod.path, ifname })).code).toBe(0);
      });
    }
  },
);
