import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import {
  allRoutes,
  backgroundPing,
  errorLines,
  hasRoute,
  LONG_FAULTS,
  links,
  logsSince,
  monitorRoutes,
  nftTable,
  phantomNode,
  podRouteChurn,
  probe,
  sleep,
  watchRestarts,
  within,
} from './support.ts';

/**
 * The other way the API server becomes unreachable: a network partition. The control plane's port
 * on the fabric goes down, so nothing answers at all: open watches stall (no reset, no FIN) and new
 * connections time out. The agents can only notice through their own timeouts. Same invariants as
 * the outage test (api-outage.test.ts): no route moves, pods keep talking, no crash, and after the
 * partition heals every node converges on a Node added meanwhile. 10 s by default, 60 s with
 * TRELLIS_LONG_FAULTS=1.
 */
const skip = testbedSkipReason();
const PARTITION_S = LONG_FAULTS ? 60 : 10;
const NODES = ['node-1', 'node-2', 'node-3'];
/** The watch's 90 s inactivity timeout (WATCH_IDLE_MS), one capped backoff step and a TCP retransmission or two. */
const CONVERGE_LIMIT_MS = 130_000;

const title = `faults: control plane partitioned away for ${PARTITION_S} s (${LONG_FAULTS ? 'TRELLIS_LONG_FAULTS=1' : 'short run; TRELLIS_LONG_FAULTS=1 for the full minute'})`;
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  const pods: TestbedPod[] = [];

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 3 }] });
    for (const n of NODES) pods.push(await tb.addPod(n));
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it(
    'routes and pod traffic hold, nobody crashes, every node converges once the partition heals',
    async () => {
      const [p1, p2, p3] = pods as [TestbedPod, TestbedPod, TestbedPod];
      const phantom = phantomNode(160);
      const before = new Map(NODES.map((n) => [n, allRoutes(tb, n)]));
      const devices = new Map(NODES.map((n) => [n, links(tb, n)]));
      const nft = new Map(NODES.map((n) => [n, nftTable(tb, n)]));
      const pids = new Map(NODES.map((n) => [n, tb.node(n).agent?.child.pid]));
      const marks = new Map(NODES.map((n) => [n, tb.node(n).logs.length]));
      const monitors = await Promise.all(NODES.map((n) => monitorRoutes(tb.node(n).ns)));
      const pings = [
        backgroundPing(p1, p2.v4, PARTITION_S + 2),
        backgroundPing(p2, p3.v6, PARTITION_S + 2),
        backgroundPing(p3, p1.v4, PARTITION_S + 2),
      ];
      await sleep(500);

      tb.partitionControlPlane(true);
      const startedAt = Date.now();
      let changed = false;
      while (Date.now() - startedAt < PARTITION_S * 1000) {
        for (const n of NODES) {
          expect(allRoutes(tb, n), `${n}: main table changed during the partition`).toEqual(before.get(n));
          expect(tb.node(n).agent?.child.exitCode, `${n}: agent exited`).toBeNull();
          expect(links(tb, n), `${n}: links changed during the partition`).toEqual(devices.get(n));
          expect(nftTable(tb, n), `${n}: nftables changed during the partition`).toBe(nft.get(n));
        }
        if (!changed && Date.now() - startedAt > (PARTITION_S * 1000) / 2) {
          await tb.api.createNode(phantom.object);
          changed = true;
        }
        await sleep(500);
      }
      expect(changed).toBe(true);
      for (const n of NODES) {
        expect(hasRoute(tb, n, phantom.cidrs[0]), `${n} saw the API`).toBe(false);
        expect(await probe(tb, n, '/healthz'), `${n} /healthz`).toBe(200);
      }
      tb.partitionControlPlane(false);
      const healedAt = Date.now();

      const convergeMs: Record<string, number> = {};
      for (const n of NODES) {
        convergeMs[n] = await within(
          CONVERGE_LIMIT_MS,
          `${n}: routes to the Node added during the partition`,
          () => phantom.cidrs.every((c) => hasRoute(tb, n, c, c.includes(':') ? phantom.v6 : phantom.v4)),
        );
      }
      const results = await Promise.all(pings);
      for (const m of monitors) await m.stop();

      for (const r of results) {
        expect(r.transmitted, r.output).toBeGreaterThan(PARTITION_S * 15);
        expect(r.transmitted - r.received, r.output).toBe(0);
      }
      for (const m of monitors) expect(podRouteChurn(m.lines, phantom.cidrs)).toEqual([]);
      const summary: Record<string, unknown> = {
        partitionS: PARTITION_S,
        convergeMs,
        sinceHealMs: Date.now() - healedAt,
        pings: results.map((r) => `${r.received}/${r.transmitted}`),
      };
      for (const n of NODES) {
        const agent = tb.node(n).agent!;
        expect(agent.child.pid).toBe(pids.get(n));
        expect(agent.stderr()).toBe('');
        const lines = logsSince(tb, n, marks.get(n)!);
        expect(errorLines(lines)).toEqual([]);
        summary[n] = watchRestarts(lines).map((r) => `${r.restartInMs}ms: ${r.error.slice(0, 60)}`);
        const extra = allRoutes(tb, n).filter((r) => !before.get(n)!.includes(r));
        expect(
          extra.every((r) => phantom.cidrs.some((c) => r.includes(c))),
          `${n}: ${extra.join('\n')}`,
        ).toBe(true);
      }
      console.log(`api-partition: ${JSON.stringify(summary)}`);
    },
    (PARTITION_S + 200) * 1000,
  );
});
