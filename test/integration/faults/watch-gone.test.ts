import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import {
  allRoutes,
  backgroundPing,
  errorLines,
  hasRoute,
  logsSince,
  monitorRoutes,
  phantomNode,
  podRouteChurn,
  sleep,
  within,
} from './support.ts';

/**
 * The agents' Node watches broken while the cluster changes, and the history they would resume from
 * compacted away: their next watch gets 410 Gone and they must relist. Deterministic order: the
 * agents' requests are answered 500 (fault-admin.ts 'error500') and their watches reset; meanwhile a
 * Node is added, one deleted and one changed; the history is compacted; then the API answers again.
 * What must hold: every agent relists (the API's request log shows a full list from each agent's
 * address after the outage), every node converges on the three changes, and no route of an
 * unchanged node moves (`ip monitor route` on every node through the whole sequence).
 */
const skip = testbedSkipReason();
const NODES = ['node-1', 'node-2', 'node-3'];

function addressesPatch(v4: string, v6: string, name: string): Record<string, unknown> {
  return {
    status: {
      addresses: [
        { type: 'InternalIP', address: v4 },
        { type: 'InternalIP', address: v6 },
        { type: 'Hostname', address: name },
      ],
    },
  };
}

const title = 'faults: Node watches get 410 Gone (history compacted) while Nodes change';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  const pods: TestbedPod[] = [];
  const deleted = phantomNode(151);
  const added = phantomNode(152);
  const changed = phantomNode(153);
  const moved = { v4: '10.100.0.203', v6: 'fd00:100::203' };

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 3 }] });
    for (const n of NODES) pods.push(await tb.addPod(n));
    await tb.api.createNode(deleted.object);
    await tb.api.createNode(changed.object);
    for (const n of NODES) {
      await within(
        3000,
        `${n}: routes to the phantom nodes`,
        () => hasRoute(tb, n, deleted.cidrs[0], deleted.v4) && hasRoute(tb, n, changed.cidrs[1], changed.v6),
      );
    }
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('every agent relists and converges; unchanged nodes see no route churn', async () => {
    const [p1, p2, p3] = pods as [TestbedPod, TestbedPod, TestbedPod];
    const phantomCidrs = [...deleted.cidrs, ...added.cidrs, ...changed.cidrs];
    const unchanged = (n: string): string[] =>
      allRoutes(tb, n).filter((r) => !phantomCidrs.some((c) => r.includes(`"${c}"`)));
    const before = new Map(NODES.map((n) => [n, unchanged(n)]));
    const marks = new Map(NODES.map((n) => [n, tb.node(n).logs.length]));
    const pids = new Map(NODES.map((n) => [n, tb.node(n).agent?.child.pid]));
    const monitors = await Promise.all(NODES.map((n) => monitorRoutes(tb.node(n).ns)));
    const pings = [backgroundPing(p1, p2.v4, 8), backgroundPing(p2, p3.v6, 8), backgroundPing(p3, p1.v4, 8)];

    const rvBefore = (await tb.faults.compactHistory()).resourceVersion;
    await tb.faults.outage('error500');
    await tb.api.deleteNode(deleted.name);
    await tb.api.createNode(added.object);
    await tb.api.call(
      'PATCH',
      `/api/v1/nodes/${changed.name}/status`,
      addressesPatch(moved.v4, moved.v6, changed.name),
      'application/merge-patch+json',
    );
    const { resourceVersion: compactedAt } = await tb.faults.compactHistory();
    expect(compactedAt).toBeGreaterThan(rvBefore);
    // Held off for a couple of backoff steps, so each agent's watch is behind the compaction.
    await sleep(1500);
    for (const n of NODES) expect(hasRoute(tb, n, added.cidrs[0]), `${n} saw the API`).toBe(false);
    await tb.faults.clearRequests();
    await tb.faults.restore();

    const convergeMs: Record<string, number> = {};
    for (const n of NODES) {
      convergeMs[n] = await within(
        10_000,
        `${n}: converged on the three changes`,
        () =>
          deleted.cidrs.every((c) => !hasRoute(tb, n, c)) &&
          hasRoute(tb, n, added.cidrs[0], added.v4) &&
          hasRoute(tb, n, added.cidrs[1], added.v6) &&
          hasRoute(tb, n, changed.cidrs[0], moved.v4) &&
          hasRoute(tb, n, changed.cidrs[1], moved.v6),
      );
    }
    const results = await Promise.all(pings);
    await sleep(300);
    for (const m of monitors) await m.stop();

    // Each agent relisted: a full (non-watch) list of Nodes from its own address after the outage, and
    // its first watch after the outage (from its old resourceVersion) was answered with 410 Gone.
    const log = await tb.faults.requests();
    const relists: Record<string, number> = {};
    for (const n of NODES) {
      const addr = tb.node(n).plan.v4;
      const mine = log.filter((r) => r.remoteAddress === addr && r.path === '/api/v1/nodes');
      relists[n] = mine.filter((r) => !r.watch).length;
      expect(relists[n], `${n}: relist after 410`).toBeGreaterThanOrEqual(1);
      const firstWatch = mine.find((r) => r.watch);
      expect(firstWatch, `${n}: a watch after the outage`).toBeDefined();
      const rv = Number(new URLSearchParams(firstWatch!.query).get('resourceVersion'));
      const firstList = mine.findIndex((r) => !r.watch);
      expect(firstList).toBeGreaterThanOrEqual(0);
      // This server answers a watch from a compacted resourceVersion with a 410 ERROR event (in a 200
      // response): a watch from before the compaction, then a list, is the relist after 410.
      expect(rv, `${n}: resumed from before the compaction`).toBeGreaterThan(0);
      expect(rv, `${n}: resumed from before the compaction`).toBeLessThan(compactedAt);
      expect(mine.indexOf(firstWatch!), `${n}: watched (and got 410) before relisting`).toBeLessThan(
        firstList,
      );
    }

    // No churn: unchanged nodes' routes never moved (monitor) and are as they were (table).
    for (const m of monitors) expect(podRouteChurn(m.lines, phantomCidrs)).toEqual([]);
    for (const n of NODES) {
      expect(unchanged(n), n).toEqual(before.get(n));
      expect(tb.node(n).agent?.child.pid).toBe(pids.get(n));
      expect(errorLines(logsSince(tb, n, marks.get(n)!))).toEqual([]);
    }
    for (const r of results) expect(r.transmitted - r.received, r.output).toBe(0);
    console.log(
      `watch-gone: ${JSON.stringify({ convergeMs, relists, pings: results.map((r) => `${r.received}/${r.transmitted}`) })}`,
    );
  }, 60_000);
});
