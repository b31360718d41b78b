import { describe, expect, it } from 'vitest';
import type { PassOutcome } from '../../../pkg/agent/controller.ts';
import type { NetlinkHandle, RouteInfo } from '../../../pkg/datapath/ports.ts';
import { AgentMetrics, CNI_BUCKETS } from '../../../pkg/observe/metrics.ts';
import { peerRouteStates } from '../../../pkg/ops/peer-coverage.ts';
import { applyRouteDiff } from '../../../pkg/routes/apply.ts';
import type { ReconcileReport } from '../../../pkg/routes/reconciler.ts';
import { reconcileReport } from '../routes/report-fixture.ts';
import { parseExposition } from './prom-text.ts';

const report = (over: Partial<ReconcileReport> = {}): ReconcileReport =>
  reconcileReport({ durationMs: 1, ...over });

const via = (dst: string, gateway: string): RouteInfo => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  gateway,
  ifindex: 2,
  protocol: 126,
  type: 'unicast',
});

function direct(node: string, family: 4 | 6, podCIDRs: string[]) {
  return {
    node,
    family,
    path: 'direct' as const,
    nodeIP: '192.168.1.2',
    ifindex: 2,
    linkName: 'eth0',
    podCIDRs,
  };
}

async function scrape(m: AgentMetrics) {
  return parseExposition(await m.render());
}

describe('AgentMetrics', () => {
  it('counts CNI calls by verb and outcome, with a latency histogram in seconds', async () => {
    const m = new AgentMetrics({ version: '1.2.3', nodeName: 'n1', runtimeVersion: 'v24.0.0' });
    for (const ms of [2, 4, 30]) m.onCniCall({ verb: 'ADD', outcome: 'ok', code: undefined, durationMs: ms });
    m.onCniCall({ verb: 'ADD', outcome: 'error', code: 11, durationMs: 0.5 });
    m.onCniCall({ verb: 'DEL', outcome: 'ok', code: undefined, durationMs: 20 });
    const e = await scrape(m);
    expect(e.get('trellis_cni_calls_total', { verb: 'ADD', outcome: 'ok' })).toBe(3);
    expect(e.get('trellis_cni_calls_total', { verb: 'ADD', outcome: 'error' })).toBe(1);
    expect(e.get('trellis_cni_calls_total', { verb: 'DEL', outcome: 'ok' })).toBe(1);
    expect(e.get('trellis_cni_errors_total', { verb: 'ADD', code: '11' })).toBe(1);
    expect(e.types.trellis_cni_call_duration_seconds).toBe('histogram');
    expect(e.get('trellis_cni_call_duration_seconds_count', { verb: 'ADD' })).toBe(4);
    expect(e.get('trellis_cni_call_duration_seconds_sum', { verb: 'ADD' })).toBeCloseTo(0.0365, 6);
    // 0.5 ms and 2 ms fall in le=0.0025; 4 ms in le=0.005; 30 ms in le=0.035.
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '0.001' })).toBe(1);
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '0.0025' })).toBe(2);
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '0.005' })).toBe(3);
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '0.02' })).toBe(3);
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '0.035' })).toBe(4);
    expect(e.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '+Inf' })).toBe(4);
    expect(CNI_BUCKETS.filter((b) => b >= 0.001 && b <= 0.1).length).toBeGreaterThanOrEqual(8);
    expect(e.get('trellis_build_info', { version: '1.2.3', node_version: 'v24.0.0' })).toBe(1);
  });

  it('labels a call whose verb is not one CNI defines (a refused request, say) as unknown', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    m.onCniCall({ verb: 'ADD;rm -rf', outcome: 'error', code: 4, durationMs: 1 });
    m.onCniCall({ verb: '', outcome: 'error', code: 106, durationMs: 1 });
    const e = await scrape(m);
    expect(e.get('trellis_cni_calls_total', { verb: 'unknown', outcome: 'error' })).toBe(2);
    expect(e.get('trellis_cni_errors_total', { verb: 'unknown', code: '106' })).toBe(1);
  });

  it('reads IPAM use, watch restarts and readiness from the agent at scrape time', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    let used = 3;
    let restarts: number | undefined = 2;
    m.bind({
      ipamUsage: () => [
        { family: 4, range: '10.244.1.0/24', capacity: 253, used },
        { family: 6, range: 'fd00::/64', capacity: 2n ** 64n - 2n, used: 1 },
      ],
      watchRestarts: () => restarts,
      ready: () => used > 3,
    });
    let e = await scrape(m);
    expect(e.get('trellis_ipam_capacity', { family: '4' })).toBe(253);
    expect(e.get('trellis_ipam_used', { family: '4', range: '10.244.1.0/24' })).toBe(3);
    expect(e.get('trellis_ipam_capacity', { family: '6' })).toBeCloseTo(2 ** 64, -5);
    expect(e.get('trellis_node_watch_restarts_total')).toBe(2);
    expect(e.get('trellis_agent_ready')).toBe(0);
    used = 7;
    restarts = undefined;
    e = await scrape(m);
    expect(e.get('trellis_ipam_used', { family: '4' })).toBe(7);
    // A counter: what the informer no longer says (restarted, standalone) never makes it go down.
    expect(e.get('trellis_node_watch_restarts_total')).toBe(2);
    expect(e.get('trellis_agent_ready')).toBe(1);
  });

  it('counts the config files that sort before trellis’s, 0 when it is first or nothing is bound', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    expect((await scrape(m)).get('trellis_cni_config_shadowed')).toBe(0);
    let shadowedBy = ['05-cilium.conflist', '10-kindnet.conflist'];
    m.bind({
      ipamUsage: () => [],
      watchRestarts: () => undefined,
      ready: () => true,
      cniConfigShadowedBy: () => shadowedBy,
    });
    expect((await scrape(m)).get('trellis_cni_config_shadowed')).toBe(2);
    shadowedBy = [];
    expect((await scrape(m)).get('trellis_cni_config_shadowed')).toBe(0);
  });

  it('says which encoding the API server last answered Nodes in, and nothing before it did', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    let encoding: 'protobuf' | 'json' | undefined;
    m.bind({ ipamUsage: () => [], watchRestarts: () => 0, ready: () => true, nodesEncoding: () => encoding });
    expect((await scrape(m)).all('trellis_node_watch_encoding')).toEqual([]);
    encoding = 'protobuf';
    expect((await scrape(m)).all('trellis_node_watch_encoding')).toEqual([
      { name: 'trellis_node_watch_encoding', labels: { encoding: 'protobuf' }, value: 1 },
    ]);
    // A fallback replaces the series, not adds one beside it.
    encoding = 'json';
    expect((await scrape(m)).all('trellis_node_watch_encoding')).toEqual([
      { name: 'trellis_node_watch_encoding', labels: { encoding: 'json' }, value: 1 },
    ]);
  });

  it('counts reclaimed leases by reason, GC calls included', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    m.onLeasesReclaimed('startup-sweep', 2);
    m.onLeasesReclaimed('api-gc', 0);
    m.onLeasesReclaimed('api-gc', 3);
    const e = await scrape(m);
    expect(e.get('trellis_ipam_leases_reclaimed_total', { reason: 'startup-sweep' })).toBe(2);
    expect(e.get('trellis_ipam_leases_reclaimed_total', { reason: 'api-gc' })).toBe(3);
  });

  it('counts prepared veth pairs by what became of them', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    for (const o of ['used', 'used', 'expired', 'skipped'] as const) m.onPreparedPair(o);
    const e = await scrape(m);
    expect(e.get('trellis_prepared_veth_pairs_total', { outcome: 'used' })).toBe(2);
    expect(e.get('trellis_prepared_veth_pairs_total', { outcome: 'expired' })).toBe(1);
    expect(e.get('trellis_prepared_veth_pairs_total', { outcome: 'skipped' })).toBe(1);
  });

  it('records passes, route counts and per-peer route state; a peer that left disappears', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    // As the reconciler builds its report: added counts the writes that succeeded, errors the others.
    const applied = await applyRouteDiff(
      {
        replaceRoute: async (r: RouteInfo) => {
          if (r.dst === '10.244.3.0/24') throw new Error('ENETUNREACH');
        },
      } as unknown as NetlinkHandle,
      {
        add: [
          via('10.244.2.0/24', '192.168.1.2'),
          via('fd00:2::/64', 'fd00::2'),
          via('10.244.3.0/24', '192.168.1.3'),
        ],
        replace: [],
        remove: [],
      },
    );
    expect(applied.added).toBe(2);
    const first: PassOutcome = {
      kind: 'ok',
      durationMs: 40,
      report: report({
        added: applied.added,
        unchanged: 1,
        errors: applied.errors,
        conflicts: [
          {
            desired: via('10.244.4.0/24', '192.168.1.4'),
            existing: { ...via('10.244.4.0/24', '1.1.1.1'), protocol: 4 },
          },
        ],
        decisions: [
          direct('n2', 4, ['10.244.2.0/24']),
          direct('n2', 6, ['fd00:2::/64']),
          direct('n3', 4, ['10.244.3.0/24']),
          direct('n4', 4, ['10.244.4.0/24']),
          {
            node: 'n5',
            family: 4,
            path: 'unreachable',
            nodeIP: '10.9.9.9',
            podCIDRs: ['10.244.5.0/24'],
            reason: 'not on a connected subnet',
          },
        ],
        problems: [
          { node: 'n6', problem: 'no valid pod CIDR; skipped' },
          { node: 'n1', problem: 'ignored: own' },
        ],
      }),
    };
    m.onPass(first, () => 1_700_000_000_000);
    m.onPass({ kind: 'waiting', reason: 'no pod CIDR' });
    m.onPass({ kind: 'error', error: 'boom', durationMs: 200 });
    let e = await scrape(m);
    expect(e.get('trellis_reconcile_total', { outcome: 'ok' })).toBe(1);
    expect(e.get('trellis_reconcile_total', { outcome: 'waiting' })).toBe(1);
    expect(e.get('trellis_reconcile_total', { outcome: 'error' })).toBe(1);
    expect(e.get('trellis_reconcile_duration_seconds_count')).toBe(2);
    expect(e.get('trellis_reconcile_duration_seconds_sum')).toBeCloseTo(0.24, 6);
    // 3 adds (1 failed), 1 unchanged, 1 conflict: 5 desired, 3 in the kernel as desired.
    expect(e.get('trellis_routes', { state: 'desired' })).toBe(5);
    expect(e.get('trellis_routes', { state: 'programmed' })).toBe(3);
    expect(e.get('trellis_routes', { state: 'failed' })).toBe(1);
    expect(e.get('trellis_routes', { state: 'conflict' })).toBe(1);
    expect(e.get('trellis_route_changes_total', { op: 'add' })).toBe(2);
    expect(e.get('trellis_route_changes_total', { op: 'error' })).toBe(1);
    expect(e.get('trellis_reconcile_last_success_timestamp_seconds')).toBe(1_700_000_000);
    // Fully routed peers have no per-peer series; the counts cover everyone.
    expect(e.all('trellis_peer_route_broken', { peer: 'n2' })).toEqual([]);
    expect(e.get('trellis_peer_route_broken', { peer: 'n3', family: '4', path: 'direct' })).toBe(1);
    expect(e.get('trellis_peer_route_broken', { peer: 'n4', family: '4', path: 'direct' })).toBe(1);
    expect(e.get('trellis_peer_route_broken', { peer: 'n5', family: '4', path: 'unreachable' })).toBe(1);
    expect(e.get('trellis_peer_route_broken', { peer: 'n6', family: '', path: 'skipped' })).toBe(1);
    expect(e.all('trellis_peer_route_broken', { peer: 'n1' })).toEqual([]);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'ok' })).toBe(1);
    expect(e.get('trellis_peers', { family: '6', path: 'direct', state: 'ok' })).toBe(1);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'broken' })).toBe(2);
    expect(e.get('trellis_peers', { family: '4', path: 'unreachable', state: 'broken' })).toBe(1);
    expect(e.get('trellis_peers', { family: '', path: 'skipped', state: 'broken' })).toBe(1);

    m.onPass({
      kind: 'ok',
      durationMs: 1,
      report: report({ unchanged: 2, decisions: [direct('n2', 4, ['10.244.2.0/24'])] }),
    });
    e = await scrape(m);
    expect(e.all('trellis_peer_route_broken')).toEqual([]);
    expect(
      e.all('trellis_peers').map((x) => [x.labels.family, x.labels.path, x.labels.state, x.value]),
    ).toEqual([['4', 'direct', 'ok', 1]]);
    expect(e.get('trellis_routes', { state: 'failed' })).toBe(0);
  });

  it('a failed replace is desired but not programmed; a failed remove is neither', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    const fail = new Set(['10.244.2.0/24', '10.244.9.0/24']);
    const applied = await applyRouteDiff(
      {
        replaceRoute: async (r: RouteInfo) => {
          if (fail.has(r.dst)) throw new Error('EPERM');
        },
        deleteRoute: async (r: RouteInfo) => {
          if (fail.has(r.dst)) throw new Error('EPERM');
        },
      } as unknown as NetlinkHandle,
      {
        add: [],
        replace: [via('10.244.2.0/24', '192.168.1.2'), via('10.244.3.0/24', '192.168.1.3')],
        remove: [via('10.244.9.0/24', '192.168.1.9')],
      },
    );
    m.onPass({
      kind: 'ok',
      durationMs: 1,
      report: report({
        replaced: applied.replaced,
        removed: applied.removed,
        unchanged: 2,
        errors: applied.errors,
      }),
    });
    const e = await scrape(m);
    expect(e.get('trellis_routes', { state: 'desired' })).toBe(4);
    expect(e.get('trellis_routes', { state: 'programmed' })).toBe(3);
    expect(e.get('trellis_routes', { state: 'failed' })).toBe(2);
  });

  it('counts full passes that could not write the nftables table, from 0', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    m.onPass({ kind: 'ok', scope: 'full', durationMs: 100, report: report({ unchanged: 1 }) });
    expect((await scrape(m)).get('trellis_masquerade_failures_total')).toBe(0);
    m.onPass({ kind: 'ok', scope: 'full', durationMs: 100, report: report({}), masqueradeApplied: false });
    m.onPass({ kind: 'ok', scope: 'full', durationMs: 100, report: report({}), masqueradeApplied: true });
    expect((await scrape(m)).get('trellis_masquerade_failures_total')).toBe(1);
  });

  it('passes by outcome and route changes by op are there from 0, before any pass: increase() sees the first error', async () => {
    const e = await scrape(new AgentMetrics({ version: '1', nodeName: 'n1' }));
    for (const outcome of ['ok', 'error', 'waiting'])
      expect(e.get('trellis_reconcile_total', { outcome }), outcome).toBe(0);
    for (const op of ['add', 'replace', 'remove', 'error'])
      expect(e.get('trellis_route_changes_total', { op }), op).toBe(0);
  });

  it('per-node steps count separately from full passes; their folded-in report updates the peer series', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    m.onPass({ kind: 'ok', scope: 'full', durationMs: 100, report: report({ unchanged: 1 }) });
    m.onPass({
      kind: 'ok',
      scope: 'node',
      durationMs: 2,
      report: report({ added: 1, unchanged: 1, decisions: [direct('n2', 4, ['10.244.2.0/24'])] }),
    });
    const e = await scrape(m);
    expect(e.get('trellis_reconcile_total', { outcome: 'ok' })).toBe(1);
    expect(e.get('trellis_reconcile_node_total')).toBe(1);
    expect(e.get('trellis_reconcile_node_duration_seconds_count')).toBe(1);
    expect(e.get('trellis_reconcile_duration_seconds_count')).toBe(1);
    expect(e.get('trellis_route_changes_total', { op: 'add' })).toBe(1);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'ok' })).toBe(1);
    expect(e.all('trellis_peer_route_broken')).toEqual([]);
  });

  it('the last-success timestamp does not move with per-node steps while a failed full pass stands', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    const step = (at: number) =>
      m.onPass({ kind: 'ok', scope: 'node', durationMs: 2, report: report({ added: 1 }) }, () => at);
    m.onPass(
      { kind: 'ok', scope: 'full', durationMs: 100, report: report({ unchanged: 1 }) },
      () => 1_000_000,
    );
    step(2_000_000);
    expect((await scrape(m)).get('trellis_reconcile_last_success_timestamp_seconds')).toBe(2_000);
    m.onPass({ kind: 'error', scope: 'full', error: 'writing the config list: ENOSPC', durationMs: 5 });
    step(3_000_000);
    m.onPass({ kind: 'waiting', reason: 'no pod CIDR' });
    step(4_000_000);
    expect((await scrape(m)).get('trellis_reconcile_last_success_timestamp_seconds')).toBe(2_000);
    m.onPass(
      { kind: 'ok', scope: 'full', durationMs: 100, report: report({ unchanged: 1 }) },
      () => 5_000_000,
    );
    expect((await scrape(m)).get('trellis_reconcile_last_success_timestamp_seconds')).toBe(5_000);
  });

  it("a full pass's refused route counts as an error once, not again with every per-node step that carries it", async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    const refused = {
      op: 'add' as const,
      route: { family: 4 as const, dst: '10.244.9.0/24' },
      error: new Error('EINVAL'),
    };
    m.onPass({ kind: 'ok', scope: 'full', durationMs: 100, report: report({ errors: [refused] }) });
    for (let i = 0; i < 3; i++) {
      m.onPass({ kind: 'ok', scope: 'node', durationMs: 2, report: report({ added: 1, errors: [refused] }) });
    }
    const e = await scrape(m);
    expect(e.get('trellis_route_changes_total', { op: 'error' })).toBe(1);
    expect(e.get('trellis_route_changes_total', { op: 'add' })).toBe(3);
    expect(e.get('trellis_routes', { state: 'failed' })).toBe(1);
  });

  it("per-node steps' routes gauge is what they left programmed, not the sum of their writes", async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    // A peer added and deleted again: one add and one remove, and the one route of before still there.
    m.onPass({
      kind: 'ok',
      scope: 'node',
      durationMs: 2,
      programmed: 1,
      report: report({ added: 1, removed: 1, unchanged: 1 }),
    });
    const e = await scrape(m);
    expect(e.get('trellis_routes', { state: 'programmed' })).toBe(1);
    expect(e.get('trellis_routes', { state: 'desired' })).toBe(1);
    expect(e.get('trellis_route_changes_total', { op: 'add' })).toBe(1);
    expect(e.get('trellis_route_changes_total', { op: 'remove' })).toBe(1);
  });

  it('per-peer series follow every state change, also across passes that change nothing', async () => {
    const m = new AgentMetrics({ version: '1', nodeName: 'n1' });
    const pass = (over: Partial<ReconcileReport>): PassOutcome => ({
      kind: 'ok',
      durationMs: 1,
      report: report({
        decisions: [direct('n2', 4, ['10.244.2.0/24']), direct('n3', 4, ['10.244.3.0/24'])],
        ...over,
      }),
    });
    m.onPass(pass({}));
    m.onPass(pass({})); // unchanged: the series stay as they are
    let e = await scrape(m);
    expect(e.all('trellis_peer_route_broken')).toEqual([]);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'ok' })).toBe(2);
    const failed = via('10.244.3.0/24', '192.168.1.3');
    m.onPass(pass({ errors: [{ op: 'add', route: failed, error: new Error('EHOSTUNREACH') }] }));
    e = await scrape(m);
    expect(e.all('trellis_peer_route_broken').map((x) => x.labels.peer)).toEqual(['n3']);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'ok' })).toBe(1);
    expect(e.get('trellis_peers', { family: '4', path: 'direct', state: 'broken' })).toBe(1);
    m.onPass(pass({}));
    e = await scrape(m);
    expect(e.all('trellis_peer_route_broken')).toEqual([]);
    expect(e.all('trellis_peers', { state: 'broken' })).toEqual([]);
  });

  it('peer series and counts equal a from-scratch computation over 200 random passes (kept and new decision objects)', async () => {
    // The reconciler keeps an unchanged peer's decision objects between passes and makes new ones for a
    // re-planned peer; the metrics compare states by identity first. Whatever the mix, what a scrape
    // shows must be exactly what peerRouteStates computes from the report alone.
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    // A cap below the broken peers of many steps: the series are the first ones by name.
    const cap = 4;
    const m = new AgentMetrics({ version: '1', nodeName: 'n0', maxBrokenPeerSeries: cap });
    const decisions = new Map<string, ReconcileReport['decisions'][number]>();
    const plan = (node: string, family: 4 | 6): ReconcileReport['decisions'][number] => {
      const cidr = family === 4 ? `10.${node.slice(1)}.0.0/24` : `fd00:${node.slice(1)}::/64`;
      return rand(4) === 0
        ? { node, family, path: 'unreachable', nodeIP: '10.9.9.9', podCIDRs: [cidr], reason: 'no path' }
        : direct(node, family, [cidr]);
    };
    for (let step = 0; step < 200; step++) {
      for (let k = rand(4); k >= 0; k--) {
        const key = `n${1 + rand(30)}/${rand(2) === 0 ? 4 : 6}`;
        const [node, fam] = key.split('/') as [string, string];
        if (decisions.has(key) && rand(3) === 0) decisions.delete(key);
        else decisions.set(key, plan(node, Number(fam) as 4 | 6)); // a new object, maybe the same content
      }
      const list = [...decisions.values()];
      const broken = list.filter((d) => d.path === 'direct' && rand(10) === 0);
      const r = report({
        decisions: list,
        errors: broken.map((d) => ({
          op: 'add' as const,
          route: via(d.podCIDRs[0]!, '192.168.1.2'),
          error: new Error('EHOSTUNREACH'),
        })),
        problems: rand(5) === 0 ? [{ node: `n${31 + rand(3)}`, problem: 'no valid pod CIDR; skipped' }] : [],
      });
      m.onPass({ kind: 'ok', scope: rand(2) === 0 ? 'node' : 'full', durationMs: 1, report: r });
      const e = await scrape(m);
      const states = peerRouteStates(r, 'n0');
      const shown = e
        .all('trellis_peer_route_broken')
        .map((x) => `${x.labels.peer} ${x.labels.family} ${x.labels.path} ${x.value}`)
        .sort();
      const expected = states
        .filter((x) => !x.ok)
        .slice(0, cap)
        .map((x) => `${x.peer} ${x.family} ${x.path} 1`)
        .sort();
      expect(shown, `step ${step}`).toEqual(expected);
      const counted = e
        .all('trellis_peers')
        .map((x) => `${x.labels.family} ${x.labels.path} ${x.labels.state} ${x.value}`)
        .sort();
      const counts = new Map<string, number>();
      for (const x of states) {
        const k = `${x.family} ${x.path} ${x.ok ? 'ok' : 'broken'}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      expect(counted, `step ${step}`).toEqual([...counts].map(([k, n]) => `${k} ${n}`).sort());
    }
  });

  it('two instances never share series (own registry, not the global one)', async () => {
    const a = new AgentMetrics({ version: '1', nodeName: 'a' });
    const b = new AgentMetrics({ version: '2', nodeName: 'b' });
    a.onCniCall({ verb: 'ADD', outcome: 'ok', code: undefined, durationMs: 1 });
    expect((await scrape(a)).get('trellis_cni_calls_total', { verb: 'ADD', outcome: 'ok' })).toBe(1);
    expect((await scrape(b)).get('trellis_cni_calls_total', { verb: 'ADD', outcome: 'ok' })).toBe(0);
    expect((await scrape(b)).get('trellis_build_info', { version: '2' })).toBe(1);
  });
});
