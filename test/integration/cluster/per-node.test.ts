import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, nftSetHas, nsSysctl } from '../../support/netns.ts';
import { INTERNET, Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { monitorRoutes } from '../../support/testbed/observe.ts';
import { hasRoute, phantomNode, sleep, within } from '../faults/support.ts';

/**
 * Per-node reconciliation with real agents: a Node watch event changes only that peer's routes, without
 * a full pass, and falls back to a full pass where one node's change reaches other nodes (overlapping pod
 * CIDRs) or meets a route trellis does not own. "Without a full pass" is read from the agents' log lines
 * ('reconciled node' is a per-node step, 'reconciled' a full pass); the routes from `ip -j route`. The
 * periodic resync is pushed out of the way so that every full pass seen has a cause in the test.
 */
const skip = testbedSkipReason();
const AGENTS = ['node-1', 'node-2'];

type Line = Record<string, unknown>;

const title = 'cluster: per-node reconcile (real agents, test API server)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }], agentArgs: ['--resync-seconds', '3600'] });
    // Ready comes before the agents' own start-up writes (VTEP annotation, Node condition) come back as
    // events of their Nodes; the full pass one of them runs must not fall into the first test's window.
    const quietSince = async (ms: number): Promise<void> => {
      let last = AGENTS.map((n) => tb.node(n).logs.length).join();
      let at = Date.now();
      while (Date.now() - at < ms) {
        await sleep(50);
        const now = AGENTS.map((n) => tb.node(n).logs.length).join();
        if (now !== last) {
          last = now;
          at = Date.now();
        }
      }
    };
    await quietSince(1000);
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  const marks = (): Record<string, number> =>
    Object.fromEntries(AGENTS.map((n) => [n, tb.node(n).logs.length]));
  const since = (mark: Record<string, number>, node: string): Line[] => tb.node(node).logs.slice(mark[node]);
  const fullPasses = (lines: Line[]): Line[] => lines.filter((l) => l.msg === 'reconciled');
  const stepsFor = (lines: Line[], name: string): Line[] =>
    lines.filter((l) => l.msg === 'reconciled node' && l.peer === name);
  /** Whether agent n's masquerade table keeps pod addresses going to `cidr` (its network address). */
  const keptFromMasq = (n: string, cidr: string): boolean =>
    nftSetHas(tb.node(n).ns, cidr.includes(':') ? 'nomasq_v6' : 'nomasq_v4', cidr.split('/')[0]!);
  /** The masquerade sync after per-node steps: set elements changed in place, never taken for tampering. */
  const expectMasqInPlace = (lines: Line[]): void => {
    const syncs = lines.filter((l) => l.msg === 'masquerade set updated after a node change');
    expect(syncs.map((l) => l.masq)).toContain('updated');
    expect(syncs.map((l) => l.masq)).not.toContain('applied');
    expect(lines.filter((l) => String(l.msg).includes('changed by someone else'))).toEqual([]);
  };
  const patch = (name: string, body: unknown) =>
    tb.api.call('PATCH', `/api/v1/nodes/${name}`, body, 'application/merge-patch+json');

  const p = phantomNode(101);

  it('a node added: its routes appear through a per-node step, no full pass', async () => {
    const mark = marks();
    await tb.api.createNode(p.object);
    for (const n of AGENTS) {
      await within(
        5000,
        `${n}: routes to ${p.name}`,
        () => hasRoute(tb, n, p.cidrs[0], p.v4) && hasRoute(tb, n, p.cidrs[1], p.v6),
      );
      await within(2000, `${n}: per-node log line`, () => stepsFor(since(mark, n), p.name).length > 0);
      await within(2000, `${n}: ${p.name}'s pods kept from masquerade`, () =>
        p.cidrs.every((c) => keptFromMasq(n, c)),
      );
      await sleep(300);
      const lines = since(mark, n);
      expect(stepsFor(lines, p.name)[0]).toMatchObject({ changed: ['added'], added: 2, removed: 0 });
      expect(fullPasses(lines)).toEqual([]);
      expectMasqInPlace(lines);
    }
  });

  it('a MODIFIED event that changes only a label: nothing reconciled, no route change', async () => {
    const mark = marks();
    const monitors = await Promise.all(AGENTS.map((n) => monitorRoutes(tb.node(n).ns)));
    try {
      await patch(p.name, { metadata: { labels: { 'example.com/rack': 'r7' } } });
      for (const n of AGENTS) {
        await within(5000, `${n}: ${p.name} seen unchanged`, () =>
          since(mark, n).some((l) => l.msg === 'node unchanged' && l.peer === p.name),
        );
      }
      await sleep(300);
    } finally {
      await Promise.all(monitors.map((m) => m.stop()));
    }
    for (const [i, n] of AGENTS.entries()) {
      const lines = since(mark, n);
      expect(stepsFor(lines, p.name)).toEqual([]);
      expect(fullPasses(lines)).toEqual([]);
      expect(monitors[i]!.lines.filter((l) => /10\.244\.|fd00:10:244:/.test(l))).toEqual([]);
    }
  });

  it("a node's pod CIDRs changed: old routes gone, new ones present, no full pass", async () => {
    const mark = marks();
    const next = ['10.244.121.0/24', 'fd00:10:244:79::/64'];
    await patch(p.name, { spec: { podCIDR: next[0], podCIDRs: next } });
    for (const n of AGENTS) {
      await within(
        5000,
        `${n}: routes of ${p.name} moved`,
        () =>
          hasRoute(tb, n, next[0]!, p.v4) &&
          hasRoute(tb, n, next[1]!, p.v6) &&
          !hasRoute(tb, n, p.cidrs[0]) &&
          !hasRoute(tb, n, p.cidrs[1]),
      );
      await within(2000, `${n}: per-node log line`, () => stepsFor(since(mark, n), p.name).length > 0);
      await within(
        2000,
        `${n}: masquerade set moved with the pod CIDRs`,
        () => next.every((c) => keptFromMasq(n, c)) && !p.cidrs.some((c) => keptFromMasq(n, c)),
      );
      // Our own deletions come back as route notifications; they must not look like tampering.
      await sleep(300);
      const lines = since(mark, n);
      expect(stepsFor(lines, p.name)[0]).toMatchObject({ changed: ['podCIDRs'], added: 2, removed: 2 });
      expect(fullPasses(lines)).toEqual([]);
      expectMasqInPlace(lines);
    }
  });

  /**
   * Deletes the Node; on every agent its routes go (`gone`) through one per-node step, no full pass,
   * and its pod CIDRs (`cidrs`) leave the masquerade set.
   */
  async function deleteThroughStep(
    name: string,
    gone: (agent: string) => boolean,
    cidrs: readonly string[],
  ): Promise<void> {
    const mark = marks();
    await tb.api.deleteNode(name);
    for (const n of AGENTS) {
      await within(5000, `${n}: routes to ${name} removed`, () => gone(n));
      await within(2000, `${n}: per-node log line`, () => stepsFor(since(mark, n), name).length > 0);
      await within(2000, `${n}: ${name}'s pod CIDRs out of the masquerade set`, () =>
        cidrs.every((c) => !keptFromMasq(n, c)),
      );
      // Our own deletions come back as route notifications; they must not look like tampering.
      await sleep(300);
      const lines = since(mark, n);
      expect(stepsFor(lines, name)[0]).toMatchObject({ changed: ['deleted'], added: 0, removed: 2 });
      expect(fullPasses(lines)).toEqual([]);
      expectMasqInPlace(lines);
    }
  }

  it('a node deleted: its routes go through a per-node step, no full pass', async () => {
    await deleteThroughStep(
      p.name,
      (n) =>
        tb.routes(n, 4).every((r) => r.gateway !== p.v4) && tb.routes(n, 6).every((r) => r.gateway !== p.v6),
      ['10.244.121.0/24', 'fd00:10:244:79::/64'], // its pod CIDRs since the test before
    );
  });

  it('with nexthop_compat_mode=0 a node deleted still goes through a per-node step, no full pass', async () => {
    // The kernel then announces the deleted routes without their gateways (only the nexthop object's
    // id): the agents must still know those deletions for their own.
    const q = phantomNode(102);
    const added = marks();
    await tb.api.createNode(q.object);
    for (const n of AGENTS) {
      await within(5000, `${n}: routes to ${q.name}`, () => stepsFor(since(added, n), q.name).length > 0);
      expect(hasRoute(tb, n, q.cidrs[0], q.v4) && hasRoute(tb, n, q.cidrs[1], q.v6)).toBe(true);
      // Its pod CIDRs in the masquerade set too (coalesced 50 ms after the step): a deletion sooner
      // would net out with the addition in one sync, and there would be no change to see.
      await within(2000, `${n}: ${q.name}'s pod CIDRs in the masquerade set`, () =>
        q.cidrs.every((c) => keptFromMasq(n, c)),
      );
    }
    for (const n of AGENTS) nsSysctl(tb.node(n).ns, 'net.ipv4.nexthop_compat_mode', '0');
    try {
      // Without gateways in `ip route` now: by prefix.
      await deleteThroughStep(
        q.name,
        (n) => !hasRoute(tb, n, q.cidrs[0]) && !hasRoute(tb, n, q.cidrs[1]),
        q.cidrs,
      );
    } finally {
      for (const n of AGENTS) nsSysctl(tb.node(n).ns, 'net.ipv4.nexthop_compat_mode', '1');
    }
  });

  it("a foreign route holding a new node's CIDR is not overwritten; the full pass reports the conflict", async () => {
    const q = phantomNode(102);
    const n1 = tb.node('node-1');
    const router = '10.100.0.1';
    ip(n1.ns, 'route', 'add', q.cidrs[0], 'via', router, 'proto', 'static');
    let foreign = true;
    try {
      const mark = marks();
      await tb.api.createNode(q.object);
      // node-2 has no such route: the per-node step adds it there.
      await within(5000, `node-2: route to ${q.name}`, () => hasRoute(tb, 'node-2', q.cidrs[0], q.v4));
      // The pass logs the conflict, then its `reconciled` line: both looked for, not one then the other.
      await within(
        5000,
        'node-1: the conflict reported by a full pass',
        () =>
          since(mark, 'node-1').some(
            (l) =>
              l.msg === 'route not programmed: its prefix is held by a route trellis does not own' &&
              l.route === q.cidrs[0],
          ) && fullPasses(since(mark, 'node-1')).some((l) => l.conflicts === 1),
      );
      const lines = since(mark, 'node-1');
      expect(lines.some((l) => l.msg === 'node change needs a full pass' && l.peer === q.name)).toBe(true);
      // The IPv6 route had nothing in its way.
      expect(hasRoute(tb, 'node-1', q.cidrs[1], q.v6)).toBe(true);
      const held = tb.routes('node-1', 4).filter((r) => r.dst === q.cidrs[0]);
      expect(held).toEqual([]); // tb.routes lists proto 126 only: none of ours there
      expect(ip(n1.ns, 'route', 'show', q.cidrs[0])).toContain(`via ${router}`);
      expect(ip(n1.ns, 'route', 'show', q.cidrs[0])).toContain('proto static');
      // The step's log line reaches us through the agent's stdout, which may trail the kernel's routes.
      await within(
        5000,
        `node-2: the step's line for ${q.name}`,
        () => stepsFor(since(mark, 'node-2'), q.name).length > 0,
      );
      expect(stepsFor(since(mark, 'node-2'), q.name)[0]).toMatchObject({ changed: ['added'], added: 2 });
      // The foreign route gone, ours takes the prefix at once: the watch asks for a full pass.
      ip(n1.ns, 'route', 'del', q.cidrs[0], 'via', router, 'proto', 'static');
      foreign = false;
      await within(2500, `node-1: route to ${q.name} once the foreign one is gone`, () =>
        hasRoute(tb, 'node-1', q.cidrs[0], q.v4),
      );
    } finally {
      if (foreign) ip(n1.ns, 'route', 'del', q.cidrs[0], 'via', router, 'proto', 'static');
      await tb.api.deleteNode(q.name);
    }
    // Settled before the next test looks at full passes.
    for (const n of AGENTS) await within(5000, `${n}: ${q.name} gone`, () => !hasRoute(tb, n, q.cidrs[0]));
  });

  it('overlapping pod CIDRs fall back to a full pass, which drops the one that holds the other', async () => {
    const a = phantomNode(104);
    const b = phantomNode(105);
    const wide = '10.244.104.0/23'; // holds a's 10.244.104.0/24
    await tb.api.createNode(a.object);
    for (const n of AGENTS)
      await within(5000, `${n}: route to ${a.name}`, () => hasRoute(tb, n, a.cidrs[0], a.v4));
    const mark = marks();
    const obj = b.object as { spec: Record<string, unknown> };
    await tb.api.createNode({ ...obj, spec: { podCIDR: wide, podCIDRs: [wide, b.cidrs[1]] } });
    for (const n of AGENTS) {
      await within(
        5000,
        `${n}: the wide CIDR dropped, the one it holds kept`,
        () =>
          hasRoute(tb, n, a.cidrs[0], a.v4) && !hasRoute(tb, n, wide) && hasRoute(tb, n, b.cidrs[1], b.v6),
      );
      // The routes change before the pass logs its line and problems: wait for the log too.
      const skipped = (): unknown[] =>
        since(mark, n)
          .filter((l) => l.msg === 'node skipped')
          .map((l) => l.peer);
      await within(2000, `${n}: the wide node reported skipped`, () => skipped().includes(b.name));
      expect(skipped()).not.toContain(a.name);
      // Not routed, not the cluster's either: its other half stays masqueraded (the pass's whole sync).
      expect(nftSetHas(tb.node(n).ns, 'nomasq_v4', '10.244.105.7')).toBe(false);
      expect(nftSetHas(tb.node(n).ns, 'nomasq_v4', '10.244.104.7')).toBe(true);
      const lines = since(mark, n);
      expect(lines.some((l) => l.msg === 'node change needs a full pass' && l.peer === b.name)).toBe(true);
      expect(stepsFor(lines, b.name)).toEqual([]);
      // Exactly one: the notifications of the routes that pass removed itself do not start another.
      await sleep(300);
      expect(fullPasses(since(mark, n))).toHaveLength(1);
    }
    // Deleting the wide one: its OLD CIDR overlapped a's, so a full pass again; a's route stays.
    await tb.api.deleteNode(b.name);
    for (const n of AGENTS) {
      await within(5000, `${n}: route to ${a.name} kept`, () => hasRoute(tb, n, a.cidrs[0], a.v4));
    }
    await tb.api.deleteNode(a.name);
  });

  it("a Node whose pod CIDR holds its own InternalIP (a bad object): skipped, and pods' traffic there is still masqueraded", async () => {
    // The "internet" host's own address and range: routed or kept from masquerade, the pods' traffic
    // to it would leave with pod addresses, which it has no way back to.
    const rogue = {
      metadata: { name: 'rogue' },
      spec: { podCIDR: '203.0.113.0/24', podCIDRs: ['203.0.113.0/24', 'fd00:10:244:88::/64'] },
      status: { addresses: [{ type: 'InternalIP', address: INTERNET.v4 }] },
    };
    const pod = await tb.addPod('node-1');
    const echo = await tb.startEcho(tb.internetNs);
    const mark = marks();
    try {
      await tb.api.createNode(rogue);
      for (const n of AGENTS) {
        // Its IPv6 CIDR is no bad claim (only unroutable, with no IPv6 InternalIP): kept from masquerade,
        // which also says the step's masquerade change is done.
        await within(5000, `${n}: rogue's IPv6 pod CIDR kept from masquerade`, () =>
          keptFromMasq(n, 'fd00:10:244:88::/64'),
        );
        expect(keptFromMasq(n, '203.0.113.0/24')).toBe(false);
        // The log line comes through the agent's stdout pipe, which can lag the kernel's change.
        await within(5000, `${n}: rogue skipped, logged`, () =>
          since(mark, n).some((l) => l.msg === 'node skipped' && l.peer === 'rogue'),
        );
        const lines = since(mark, n);
        expect(lines.find((l) => l.msg === 'node skipped' && l.peer === 'rogue')).toMatchObject({
          problem: `pod CIDR 203.0.113.0/24 contains the node's own InternalIP ${INTERNET.v4}; skipped`,
        });
        expect(fullPasses(lines)).toEqual([]);
      }
      expect(await tb.askEcho(pod.ns, INTERNET.v4)).toMatchObject({ from: tb.node('node-1').plan.v4 });
    } finally {
      await echo.stop();
      await tb.api.deleteNode('rogue');
    }
  });
});
