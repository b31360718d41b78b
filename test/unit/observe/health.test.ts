import { networkInterfaces } from 'node:os';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentHealth } from '../../../pkg/observe/agent-health.ts';
import { isLocalConnection } from '../../../pkg/observe/connection-limits.ts';
import { LoopLag, readiness, WatchFreshness } from '../../../pkg/observe/health.ts';
import { type HttpListener, parseListenAddr, startMetricsServer } from '../../../pkg/observe/http-server.ts';
import { reconcileReport } from '../routes/report-fixture.ts';

describe('LoopLag', () => {
  it('is fine while the timer fires on time, fails on late or missing ticks', () => {
    const lag = new LoopLag(1000, 0);
    lag.tick(1000);
    lag.tick(2010);
    expect(lag.lagMs).toBe(10);
    expect(lag.problem(2500, 5000)).toBeUndefined();
    lag.tick(9010); // the loop was blocked for 6 s
    expect(lag.lagMs).toBe(6000);
    expect(lag.problem(9020, 5000)).toMatch(/event-loop lag 6000 ms exceeds 5000 ms/);
    lag.tick(10_010);
    expect(lag.problem(10_020, 5000)).toBeUndefined();
    // No tick for 7 s: the timer itself is starved.
    expect(lag.problem(17_020, 5000)).toMatch(/has not fired for 7010 ms/);
  });
});

describe('WatchFreshness', () => {
  const opts = { restartGapMs: 65_000, maxRestartingMs: 300_000 };
  const sample = (restarts: number, rv = '10') => ({ restarts, resourceVersion: rv, synced: true });

  it('a watch that never restarts is fresh', () => {
    const w = new WatchFreshness(opts);
    for (let t = 0; t <= 3_600_000; t += 10_000) expect(w.problem(t, sample(0))).toBeUndefined();
  });

  it('restarting every 30 s for more than 5 minutes is stuck; recovers once the restarts stop', () => {
    const w = new WatchFreshness(opts);
    let restarts = 0;
    let t = 0;
    for (; t <= 290_000; t += 10_000) {
      if (t % 30_000 === 0) restarts++;
      expect(w.problem(t, sample(restarts)), `t=${t}`).toBeUndefined();
    }
    for (; t <= 400_000; t += 10_000) {
      if (t % 30_000 === 0) restarts++;
      w.observe(t, sample(restarts));
    }
    expect(w.problem(t, sample(restarts))).toMatch(/failing and restarting for 4\d\d s/);
    // The API is back: no more restarts; after the gap the run is over.
    const stopped = t;
    for (; t <= stopped + 60_000; t += 10_000) w.observe(t, sample(restarts));
    expect(w.problem(stopped + 70_000, sample(restarts))).toBeUndefined();
  });

  it('restarts far apart (a flaky network, each recovering) never add up', () => {
    const w = new WatchFreshness(opts);
    for (let i = 1; i <= 20; i++) expect(w.problem(i * 120_000, sample(i))).toBeUndefined();
  });

  it('an API server that answers nothing for 5 minutes fails it, however far apart the restarts (each a timeout)', () => {
    const w = new WatchFreshness(opts);
    // Blackholed: every list times out after 60 s, then up to 30 s of backoff; the gaps outgrow restartGapMs.
    const silent = (t: number, restarts: number) => ({ ...sample(restarts), silentMs: t });
    for (let t = 0, r = 0; t <= 300_000; t += 90_000, r++) expect(w.problem(t, silent(t, r))).toBeUndefined();
    expect(w.problem(330_000, silent(330_000, 4))).toMatch(
      /the API server has not answered the Node list or watch for 330 s/,
    );
    // One answer (a list, a watch, a BOOKMARK) and it passes again.
    expect(w.problem(340_000, { ...sample(4), silentMs: 100 })).toBeUndefined();
  });

  it('a moving resourceVersion means the watch works between restarts', () => {
    const w = new WatchFreshness(opts);
    for (let i = 1; i <= 40; i++) expect(w.problem(i * 20_000, sample(i, String(100 + i)))).toBeUndefined();
  });
});

describe('readiness', () => {
  it('needs the agent ready and the last pass ok', () => {
    const ok = { kind: 'ok', at: 1, routeErrors: 0 } as const;
    expect(readiness({ notReadyReason: undefined, lastPass: ok, watch: undefined })).toEqual({
      ok: true,
      checks: { agent: 'ok', reconcile: 'ok', nodeWatch: 'ok (standalone: no watch)' },
    });
    const v1 = readiness({
      notReadyReason: 'pod CIDRs are not known yet',
      lastPass: { kind: 'none' },
      watch: undefined,
    });
    expect(v1.ok).toBe(false);
    expect(v1.checks.agent).toBe('pod CIDRs are not known yet');
    const v2 = readiness({
      notReadyReason: undefined,
      lastPass: { kind: 'error', at: 1, error: 'EPERM' },
      watch: undefined,
    });
    expect(v2.ok).toBe(false);
    expect(v2.checks.reconcile).toBe('the last reconcile pass failed: EPERM');
  });
});

describe('AgentHealth with an injected clock', () => {
  it('liveness follows only the loop ticks; readiness the passes and the watch', () => {
    let now = 0;
    let reason: string | undefined = 'waiting for the first reconcile';
    let restarts = 0;
    const h = new AgentHealth({
      now: () => now,
      source: {
        notReadyReason: () => reason,
        watch: () => ({ restarts, resourceVersion: '5', synced: true }),
      },
    });
    for (; now <= 10_000; now += 1000) h.tick();
    expect(h.liveness()).toEqual({ ok: true, checks: { eventLoop: 'ok' } });
    expect(h.readiness().ok).toBe(false);
    reason = undefined;
    h.onPass({
      kind: 'ok',
      durationMs: 1,
      report: reconcileReport({ durationMs: 1 }),
    });
    expect(h.readiness()).toEqual({ ok: true, checks: { agent: 'ok', reconcile: 'ok', nodeWatch: 'ok' } });
    // The API goes away: a restart every 20 s for 6 minutes. Not ready, but alive: a restart cannot
    // bring the API back, and a restarted agent could not serve ADDs until it did.
    for (let i = 1; i <= 360; i++) {
      now += 1000;
      if (i % 20 === 0) restarts++;
      h.tick();
    }
    const v = h.readiness();
    expect(v.ok).toBe(false);
    expect(v.checks.nodeWatch).toMatch(/restarting/);
    expect(h.liveness()).toEqual({ ok: true, checks: { eventLoop: 'ok' } });
    h.onPass({ kind: 'error', error: 'netlink: EBUSY', durationMs: 1 });
    expect(h.readiness().checks.reconcile).toMatch(/EBUSY/);
    // Nobody ticks for 8 s: the loop is blocked.
    now += 8000;
    expect(h.liveness().checks.eventLoop).toMatch(/has not fired/);
  });

  it('a per-node step that went well does not make ready again while a failed full pass stands; the next good full pass does', () => {
    const h = new AgentHealth({
      now: () => 0,
      source: { notReadyReason: () => undefined, watch: () => undefined },
    });
    const step = () =>
      h.onPass({ kind: 'ok', scope: 'node', durationMs: 1, report: reconcileReport({ durationMs: 1 }) });
    h.onPass({ kind: 'ok', scope: 'full', durationMs: 1, report: reconcileReport({ durationMs: 1 }) });
    step();
    expect(h.readiness().ok).toBe(true);
    h.onPass({ kind: 'error', scope: 'full', error: 'writing 10-trellis.conflist: ENOSPC', durationMs: 1 });
    step();
    expect(h.readiness()).toMatchObject({ ok: false, checks: { reconcile: /ENOSPC/ } });
    h.onPass({ kind: 'waiting', reason: 'Node n1 has no pod CIDR' });
    step();
    expect(h.readiness().checks.reconcile).toMatch(/waiting: Node n1 has no pod CIDR/);
    // A step that failed stands too, until a full pass (which it escalates to) goes well.
    h.onPass({ kind: 'ok', durationMs: 1, report: reconcileReport({ durationMs: 1 }) });
    h.onPass({ kind: 'error', scope: 'node', error: 'RTM_NEWROUTE: EBUSY', durationMs: 1 });
    step();
    expect(h.readiness().checks.reconcile).toMatch(/EBUSY/);
    h.onPass({ kind: 'ok', scope: 'full', durationMs: 1, report: reconcileReport({ durationMs: 1 }) });
    expect(h.readiness().ok).toBe(true);
  });

  it('logs one warn when the event-loop check turns failing and one info when it recovers, not one per probe', () => {
    let now = 0;
    const lines: Record<string, unknown>[] = [];
    const h = new AgentHealth({
      now: () => now,
      source: { notReadyReason: () => undefined, watch: () => undefined },
      log: pino(
        { base: undefined, timestamp: false },
        { write: (t: string) => void lines.push(JSON.parse(t)) },
      ),
    });
    for (now = 1000; now <= 5000; now += 1000) h.tick();
    expect(h.liveness().ok).toBe(true);
    expect(lines).toEqual([]);

    // A 7 s stall: the next tick is 6 s late; every probe until the loop catches up fails.
    now += 6000;
    h.tick();
    for (let i = 0; i < 5; i++)
      expect(h.liveness().checks.eventLoop).toBe('event-loop lag 6000 ms exceeds 5000 ms');
    expect(lines).toEqual([
      {
        level: 40,
        problem: 'event-loop lag 6000 ms exceeds 5000 ms',
        lagMs: 6000,
        maxLagMs: 5000,
        msg: 'event loop stalled: /healthz fails (the kubelet restarts the agent if this lasts)',
      },
    ]);

    // On time again.
    now += 1000;
    h.tick();
    expect(h.liveness().ok).toBe(true);
    expect(h.liveness().ok).toBe(true);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toEqual({
      level: 30,
      failedMs: 1000,
      was: 'event-loop lag 6000 ms exceeds 5000 ms',
      msg: 'event loop responsive again: /healthz passes',
    });

    // A timer that stops firing is seen by the probe: one warn, however many probes.
    now += 8000;
    for (let i = 0; i < 3; i++) expect(h.liveness().checks.eventLoop).toMatch(/has not fired for 8000 ms/);
    expect(lines.map((l) => l.level)).toEqual([40, 30, 40]);
  });

  it('standalone (no watch) is always fresh', () => {
    let now = 0;
    const h = new AgentHealth({
      now: () => now,
      source: { notReadyReason: () => undefined, watch: () => undefined },
    });
    now = 500;
    h.tick();
    expect(h.readiness().checks.nodeWatch).toMatch(/standalone/);
  });
});

describe('metrics server', () => {
  let l: HttpListener | undefined;
  afterEach(async () => {
    await l?.close();
    l = undefined;
  });

  it('parses listen addresses', () => {
    expect(parseListenAddr('0.0.0.0:9743')).toEqual({ host: '0.0.0.0', port: 9743 });
    expect(parseListenAddr('[::]:9743')).toEqual({ host: '::', port: 9743 });
    expect(parseListenAddr(':80')).toEqual({ host: undefined, port: 80 });
    expect(() => parseListenAddr('9743')).toThrow(/--metrics-addr/);
    expect(() => parseListenAddr('h:70000')).toThrow(/--metrics-addr/);
  });

  it('serves /metrics, and 200/503 with a JSON reason on /healthz and /readyz', async () => {
    let live = true;
    l = await startMetricsServer({
      addr: '127.0.0.1:0',
      metrics: { render: async () => 'trellis_x 1\n', contentType: 'text/plain; version=0.0.4' },
      liveness: () => ({ ok: live, checks: { eventLoop: live ? 'ok' : 'blocked' } }),
      readiness: () => ({ ok: false, checks: { agent: 'pod CIDRs are not known yet' } }),
    });
    const base = `http://${l.address}`;
    const m = await fetch(`${base}/metrics`);
    expect(m.status).toBe(200);
    expect(m.headers.get('content-type')).toContain('version=0.0.4');
    expect(await m.text()).toBe('trellis_x 1\n');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    live = false;
    const h = await fetch(`${base}/healthz`);
    expect(h.status).toBe(503);
    expect(await h.json()).toEqual({ status: 'failing', checks: { eventLoop: 'blocked' } });
    const r = await fetch(`${base}/readyz`);
    expect(r.status).toBe(503);
    expect(((await r.json()) as { checks: { agent: string } }).checks.agent).toBe(
      'pod CIDRs are not known yet',
    );
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  // A host (or container) without IPv6 has no ::1 to ask; the listener then falls back to IPv4 alone.
  const hasIpv6Loopback = Object.values(networkInterfaces()).some((addrs) =>
    addrs?.some((a) => a.family === 'IPv6' && a.address === '::1'),
  );
  it.skipIf(!hasIpv6Loopback)(
    ':PORT answers on IPv4 and IPv6 loopback alike (one dual-stack socket)',
    async () => {
      l = await startMetricsServer({
        addr: ':0',
        metrics: { render: async () => 'trellis_x 1\n', contentType: 'text/plain' },
        liveness: () => ({ ok: true, checks: {} }),
        readiness: () => ({ ok: true, checks: {} }),
      });
      expect(l.address).toMatch(/^\[::\]:\d+$/);
      const port = l.address.split(':').pop();
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      expect((await fetch(`http://[::1]:${port}/healthz`)).status).toBe(200);
    },
  );

  it('fails to start on a taken port, naming the error', async () => {
    l = await startMetricsServer({
      addr: '127.0.0.1:0',
      metrics: { render: async () => '', contentType: 'text/plain' },
      liveness: () => ({ ok: true, checks: {} }),
      readiness: () => ({ ok: true, checks: {} }),
    });
    await expect(
      startMetricsServer({
        addr: l.address,
        metrics: { render: async () => '', contentType: 'text/plain' },
        liveness: () => ({ ok: true, checks: {} }),
        readiness: () => ({ ok: true, checks: {} }),
      }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});

describe('isLocalConnection (the metrics port never turns the node itself away)', () => {
  it('loopback and connections from the address they reached are local; others are not', () => {
    expect(isLocalConnection('127.0.0.1', '127.0.0.1')).toBe(true);
    expect(isLocalConnection('::ffff:127.0.0.1', '::ffff:127.0.0.1')).toBe(true);
    expect(isLocalConnection('::1', '::1')).toBe(true);
    expect(isLocalConnection('::ffff:10.0.0.5', '::ffff:10.0.0.5')).toBe(true);
    expect(isLocalConnection('10.0.0.5', '::ffff:10.0.0.5')).toBe(true);
    expect(isLocalConnection('::ffff:10.244.1.7', '::ffff:10.0.0.5')).toBe(false);
    expect(isLocalConnection('fd00:10:244:1::7', 'fd00::5')).toBe(false);
    expect(isLocalConnection(undefined, '10.0.0.5')).toBe(false);
  });
});
