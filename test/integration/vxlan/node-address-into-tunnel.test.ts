import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nsExec, strictRpFilter } from '../../support/netns.ts';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';

/**
 * The node itself reaching a pod on a VXLAN peer from its InternalIP (a hostNetwork process's socket
 * bound to it; a ClusterIP kube-proxy did not masquerade), under strict reverse-path filtering
 * (rp_filter=1, RHEL's default) on both nodes, real agents, --mode vxlan. The packet goes into
 * trellis.v4 with node-1's InternalIP as source, but node-2 routes that address back through eth0:
 * strict filtering drops it unless node-1 masquerades it to its VTEP address, which routes back
 * through the tunnel (what a socket that is not bound gets anyway).
 */
const skip = testbedSkipReason();

/** ping from `src` (ping -I binds the socket to that address); retried, the first may meet ARP or a pass. */
function pingFrom(ns: string, src: string, dst: string, tries = 3): boolean {
  for (let i = 0; i < tries; i++) {
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', '1', '-I', src, dst], {
        stdio: 'ignore',
      });
      return true;
    } catch {
      // No answer: try again.
    }
  }
  return false;
}

/** Packets the rule with `comment` counted, per family, in the node's table. */
function counted(ns: string, comment: string): { v4: number; v6: number } {
  const out = { v4: 0, v6: 0 };
  for (const line of nsExec(ns, 'nft', ['list', 'chain', 'inet', 'trellis', 'postrouting']).split('\n')) {
    if (!line.includes(`comment "${comment}"`)) continue;
    const packets = Number(/counter packets (\d+)/.exec(line)?.[1] ?? 0);
    if (/\bip6 saddr/.test(line)) out.v6 += packets;
    else out.v4 += packets;
  }
  return out;
}

const title =
  "cluster: the node reaches a VXLAN peer's pods from its InternalIP under strict rp_filter (real agents)";
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let p2: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }], mode: 'vxlan' });
    p2 = await tb.addPod('node-2');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('from the InternalIP, both families, masqueraded to the VTEP address at the tunnel', async () => {
    const n1 = tb.node('node-1');
    const n2 = tb.node('node-2');
    for (const n of [n1, n2]) strictRpFilter(n.ns, ['all', 'default', 'eth0', 'trellis.v4']);
    // The tunnel carries node-2's pods (vxlan mode), and an unbound socket already leaves from the VTEP address.
    expect(nsExec(n1.ns, 'ip', ['route', 'get', p2.v4])).toMatch(
      new RegExp(`dev trellis\\.v4 src ${n1.plan.podCIDRs[0].split('/')[0]!.replaceAll('.', '\\.')} `),
    );
    expect((await tb.ping(n1.ns, p2.v4, 3)).rttMs).toBeDefined();

    const rule = 'trellis: the node into the tunnels, from its VTEP address';
    const before = counted(n1.ns, rule);
    expect(pingFrom(n1.ns, n1.plan.v4, p2.v4), `node-1 ${n1.plan.v4} -> ${p2.v4}`).toBe(true);
    expect(pingFrom(n1.ns, n1.plan.v6, p2.v6), `node-1 ${n1.plan.v6} -> ${p2.v6}`).toBe(true);
    const after = counted(n1.ns, rule);
    expect(after.v4).toBeGreaterThan(before.v4);
    expect(after.v6).toBeGreaterThan(before.v6);

    // node-2 itself to its own pod from its InternalIP: not into a tunnel, not rewritten, still works.
    expect(pingFrom(n2.ns, n2.plan.v4, p2.v4)).toBe(true);
    expect(counted(n2.ns, rule)).toEqual({ v4: 0, v6: 0 });
  }, 60_000);
});
