import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent, AgentSnapshot } from '../../../pkg/agent/agent.ts';
import { AgentObserver } from '../../../pkg/observe/observer.ts';
import { adminGet } from '../../../pkg/ops/admin-client.ts';
import { AGENT_ANNOTATION, type AgentReport, decodeReport } from '../../../pkg/ops/node-report.ts';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { reconcileReport } from '../routes/report-fixture.ts';
import { parseExposition } from './prom-text.ts';

/** The part of the Agent the observer reads, with state the test changes. */
function fakeAgent(state: {
  reason: string | undefined;
  work?: { what: string; forMs: number } | undefined;
}): Agent {
  const snapshot = (): AgentSnapshot => ({
    node: 'n1',
    standalone: false,
    mode: 'auto',
    mtu: 1450,
    podCIDRs: ['10.244.1.0/24'],
    internalIPs: [],
    ready: state.reason === undefined,
    notReadyReason: state.reason,
    socket: '/run/trellis/cni.sock',
    stateDir: '/var/lib/trellis',
    cniConfDir: '/etc/cni/net.d',
    cniBinDir: '/opt/cni/bin',
    leases: [],
    ipamUsage: [{ family: 4, range: '10.244.1.0/24', capacity: 253, used: 4 }],
    watch: { restarts: 1, relists: 1, resourceVersion: '7', synced: true },
    mssClamp: [],
    masquerade: { enabled: true, noMasqueradeCIDRs: [] },
  });
  return {
    notReadyReason: () => state.reason,
    reconcileWork: () => state.work,
    servesAdd: () => state.reason === undefined,
    netnsAlive: () => true,
    nodeUid: () => 'uid-1',
    snapshot,
    watchSample: () => snapshot().watch,
    ipamUsage: () => snapshot().ipamUsage,
    forwardFirewallBlocks: () => [
      {
        family: 4,
        podCIDR: '10.244.1.0/24',
        direction: 'to-pods',
        chain: 'ip filter FORWARD',
        by: 'policy drop',
      },
    ],
    cniConfigShadowedBy: () => ['05-other.conflist'],
    routeState: async () => undefined,
  } as unknown as Agent;
}

/** An observer whose Node annotation writes are kept: `last()` decodes the latest (after a tick). */
function annotatingObserver(): {
  obs: AgentObserver;
  writes: Record<string, string | null>[];
  last: () => Promise<AgentReport>;
} {
  const writes: Record<string, string | null>[] = [];
  const obs = new AgentObserver({
    nodeName: 'n1',
    version: '9.9.9',
    metricsAddr: '',
    adminSocket: '',
    kube: {
      annotateNode: async (_name, ann) => {
        writes.push(ann);
      },
    },
    log: pino({ level: 'silent' }),
  });
  const last = async (): Promise<AgentReport> => {
    await new Promise((r) => setTimeout(r, 10));
    const d = decodeReport(writes.at(-1)![AGENT_ANNOTATION]!);
    if (!d.ok) throw new Error(d.problem);
    return d.report;
  };
  return { obs, writes, last };
}

describe('AgentObserver', () => {
  let dir: string | undefined;
  let obs: AgentObserver | undefined;
  afterEach(async () => {
    await obs?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("a failed or waiting pass keeps the last good pass's missing peers in the annotation and says so", async () => {
    const annotated = annotatingObserver();
    obs = annotated.obs;
    const { last } = annotated;
    const hooks = obs.hooks();
    obs.attach(fakeAgent({ reason: undefined }));
    const n2 = (path: 'direct' | 'unreachable') => ({
      node: 'n2',
      family: 4 as const,
      nodeIP: '10.9.0.2',
      podCIDRs: ['10.244.2.0/24'],
      ...(path === 'direct'
        ? { path, ifindex: 2, linkName: 'eth0' }
        : { path, reason: 'not on a connected subnet' }),
    });
    hooks.onPass?.({
      kind: 'ok',
      durationMs: 1,
      report: reconcileReport({ decisions: [n2('unreachable')] }),
    });
    expect(await last()).toMatchObject({ ready: true, peersMissing: 1, missing: ['n2/v4'] });
    expect((await last()).lastPass).toBeUndefined();

    hooks.onPass?.({ kind: 'error', error: 'listing routes: EBUSY', durationMs: 1 });
    expect(await last()).toMatchObject({
      ready: true,
      peersMissing: 1,
      missing: ['n2/v4'],
      lastPass: 'failed: listing routes: EBUSY',
    });
    hooks.onPass?.({ kind: 'waiting', reason: 'Node n1 does not exist in the API' });
    expect(await last()).toMatchObject({
      missing: ['n2/v4'],
      lastPass: 'waiting: Node n1 does not exist in the API',
    });

    // A per-node step that went well does not clear a failed full pass from the annotation.
    hooks.onPass?.({ kind: 'error', error: 'writing 10-trellis.conflist: ENOSPC', durationMs: 1 });
    hooks.onPass?.({
      kind: 'ok',
      scope: 'node',
      durationMs: 1,
      report: reconcileReport({ decisions: [n2('unreachable')] }),
    });
    expect(await last()).toMatchObject({ lastPass: 'failed: writing 10-trellis.conflist: ENOSPC' });

    hooks.onPass?.({ kind: 'ok', durationMs: 1, report: reconcileReport({ decisions: [n2('direct')] }) });
    const good = await last();
    expect(good).toMatchObject({ peersMissing: 0, missing: [] });
    expect(good.lastPass).toBeUndefined();
  });

  it('a reconcile job stuck past the readiness limit is in the annotation (its heartbeat no longer reads as all well), and gone once the job ends', async () => {
    const annotated = annotatingObserver();
    obs = annotated.obs;
    const { writes, last } = annotated;
    const state: { reason: undefined; work?: { what: string; forMs: number } } = { reason: undefined };
    const hooks = obs.hooks();
    obs.attach(fakeAgent(state));
    hooks.onPass?.({ kind: 'ok', durationMs: 1, report: reconcileReport({ decisions: [] }) });
    expect((await last()).lastPass).toBeUndefined();
    // Under the limit: nothing said.
    state.work = { what: 'a full pass', forMs: 60_000 };
    obs.health.tick();
    const count = writes.length;
    await new Promise((r) => setTimeout(r, 10));
    expect(writes).toHaveLength(count);
    state.work = { what: 'a full pass', forMs: 180_000 };
    obs.health.tick();
    const stuck = await last();
    expect(stuck.ready).toBe(true);
    expect(stuck.lastPass).toMatch(/^stuck: a full pass under way since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(obs.health.readiness().ok).toBe(false);
    state.work = undefined;
    obs.health.tick();
    expect((await last()).lastPass).toBeUndefined();
  });

  it('listen() opens only the metrics and health listener (before the agent starts); start() the admin socket', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-observer-'));
    const adminSocket = join(dir, 'admin.sock');
    obs = new AgentObserver({
      nodeName: 'n1',
      version: '9.9.9',
      metricsAddr: '127.0.0.1:0',
      adminSocket,
      kube: undefined,
      log: pino({ level: 'silent' }),
    });
    obs.attach(fakeAgent({ reason: 'the CNI socket is not listening yet' }));
    await obs.listen();
    const [metricsAddr] = obs.addresses() as [string];
    expect(obs.addresses()).toHaveLength(1);
    expect(existsSync(adminSocket)).toBe(false);
    expect((await fetch(`http://${metricsAddr}/healthz`)).status).toBe(200);
    const ready = await fetch(`http://${metricsAddr}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { checks: { agent: string } }).checks.agent).toBe(
      'the CNI socket is not listening yet',
    );
    await obs.start();
    expect(obs.addresses()).toEqual([metricsAddr, adminSocket]);
  });

  it('a metrics address that cannot be bound fails listen()', async () => {
    obs = new AgentObserver({
      nodeName: 'n1',
      version: '9.9.9',
      metricsAddr: '203.0.113.77:0',
      adminSocket: '',
      kube: undefined,
      log: pino({ level: 'silent' }),
    });
    obs.attach(fakeAgent({ reason: undefined }));
    await expect(obs.listen()).rejects.toThrow(/EADDRNOTAVAIL/);
  });

  it('feeds metrics, health and the Node annotation from the agent hooks, and serves them', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-observer-'));
    const writes: Record<string, string | null>[] = [];
    const state: { reason: string | undefined } = { reason: 'waiting for the first reconcile' };
    obs = new AgentObserver({
      nodeName: 'n1',
      version: '9.9.9',
      metricsAddr: '127.0.0.1:0',
      adminSocket: join(dir, 'admin.sock'),
      kube: {
        annotateNode: async (_name, ann) => {
          writes.push(ann);
        },
      },
      log: pino({ level: 'silent' }),
    });
    const hooks = obs.hooks();
    obs.attach(fakeAgent(state));
    await obs.start();
    const [metricsAddr, adminSocket] = obs.addresses() as [string, string];

    expect((await fetch(`http://${metricsAddr}/readyz`)).status).toBe(503);
    hooks.onPass?.({ kind: 'waiting', reason: 'Node n1 has no spec.podCIDRs yet' });
    state.reason = undefined;
    hooks.onPass?.({
      kind: 'ok',
      durationMs: 3,
      report: reconcileReport({
        added: 1,
        durationMs: 3,
        decisions: [
          {
            node: 'n2',
            family: 4,
            path: 'unreachable',
            nodeIP: '10.9.0.2',
            podCIDRs: ['10.244.2.0/24'],
            reason: 'x',
          },
        ],
      }),
    });
    hooks.onCniCall?.({ verb: 'GC', outcome: 'ok', code: undefined, durationMs: 2, released: 2 });
    hooks.onLeasesReclaimed?.('startup-sweep', 1);
    await new Promise((r) => setTimeout(r, 10));

    expect((await fetch(`http://${metricsAddr}/readyz`)).status).toBe(200);
    expect((await fetch(`http://${metricsAddr}/healthz`)).status).toBe(200);
    const m = parseExposition(await (await fetch(`http://${metricsAddr}/metrics`)).text());
    expect(m.get('trellis_ipam_leases_reclaimed_total', { reason: 'cni-gc' })).toBe(2);
    expect(m.get('trellis_ipam_leases_reclaimed_total', { reason: 'startup-sweep' })).toBe(1);
    expect(m.get('trellis_cni_config_shadowed')).toBe(1);
    expect(m.get('trellis_cni_calls_total', { verb: 'GC', outcome: 'ok' })).toBe(1);
    expect(m.get('trellis_ipam_used', { family: '4' })).toBe(4);
    expect(m.get('trellis_node_watch_restarts_total')).toBe(1);
    expect(
      m.get('trellis_host_firewall_drops', { family: '4', direction: 'to-pods', chain: 'ip filter FORWARD' }),
    ).toBe(1);
    expect(m.get('trellis_peer_route_broken', { peer: 'n2', path: 'unreachable' })).toBe(1);
    expect(m.get('trellis_peers', { path: 'unreachable', state: 'broken' })).toBe(1);

    const reports = writes.map((w) => decodeReport(w[AGENT_ANNOTATION]!));
    expect(reports.map((r) => r.ok && [r.report.ready, r.report.missing])).toEqual([
      [false, []],
      [true, ['n2/v4']],
    ]);

    const status = await adminGet<StatusView>(adminSocket, '/status');
    expect(status).toMatchObject({ node: 'n1', version: '9.9.9', ready: true, mtu: 1450 });
    await expect(adminGet(adminSocket, '/routes')).rejects.toThrow(
      /HTTP 500.*not started its route reconciler/,
    );
  });
});
