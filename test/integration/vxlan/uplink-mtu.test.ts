import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, ipJson } from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { logsSince, within } from '../faults/support.ts';

/**
 * The MTU of a node's uplink changes while its agent runs (jumbo frames turned on, or a lower MTU on a
 * new fabric), auto mode, real agents: the agent follows at once, not at the next resync (60 s). The
 * kernel's link notifications are filtered to the uplink, so pod veths coming and going never wake it.
 * Read from the kernel and the CNI config.
 */
const skip = testbedSkipReason();

type Link = { ifname: string; mtu: number };

const title = "cluster: a node's uplink MTU changes under a running agent (auto mode, real agents)";
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const mtus = (node: string) => {
    const { ns } = tb.node(node);
    const mtu = (dev: string) => ipJson<Link[]>(ns, 'link', 'show', 'dev', dev)[0]!.mtu;
    return { conf: tb.conflist(node).plugins[0]?.mtu, v4: mtu('trellis.v4'), v6: mtu('trellis.v6') };
  };

  it('lowered to 1400: the VXLAN devices and the config for new pods follow within seconds; back to 1500 likewise', async () => {
    const n1 = tb.node('node-1');
    expect(mtus('node-1')).toEqual({ conf: 1500, v4: 1450, v6: 1430 });
    // A pod added and deleted is no MTU change: nothing is logged for it.
    const mark = n1.logs.length;
    const veths = () =>
      ipJson<{ ifname: string }[]>(n1.ns, 'link', 'show').filter((l) => l.ifname.startsWith('trl')).length;
    const before = veths();
    const pod = await tb.addPod('node-1');
    await tb.removePod(pod);
    // The pair goes after DEL answered: wait for it, and for what its deletion could set off.
    for (let i = 0; veths() !== before; i++) {
      expect(i, 'the veth pair deleted').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(logsSince(tb, 'node-1', mark).filter((l) => String(l.msg).startsWith('MTU of the link'))).toEqual(
      [],
    );

    for (const [uplink, want] of [
      [1400, { conf: 1400, v4: 1350, v6: 1330 }],
      [1500, { conf: 1500, v4: 1450, v6: 1430 }],
    ] as const) {
      const since = n1.logs.length;
      ip(n1.ns, 'link', 'set', 'dev', 'eth0', 'mtu', String(uplink));
      // Well before the 60 s resync.
      await within(10_000, `node-1 follows eth0's MTU ${uplink}`, () => {
        const m = mtus('node-1');
        return m.conf === want.conf && m.v4 === want.v4 && m.v6 === want.v6;
      });
      // The agent's log is written asynchronously (pino's buffered destination), and read here from a
      // pipe: the line may come after the config it preceded.
      const said = (): boolean =>
        logsSince(tb, 'node-1', since).some(
          (l) =>
            l.msg === 'MTU of the link the pod MTU comes from changed; reconciling now' &&
            l.link === 'eth0' &&
            l.mtu === uplink,
        );
      await within(5_000, `node-1 says eth0's MTU changed to ${uplink}`, said);
    }
  }, 60_000);
});
