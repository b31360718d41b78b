import { existsSync, rmSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pluginConfig, runPlugin, SHIM_BINARY } from '../../support/cni-driver.ts';
import { nsExec } from '../../support/netns.ts';
import {
  backgroundPing,
  monitorRoutes,
  Testbed,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';

/**
 * An agent crash (SIGKILL) and restart on the same state must be invisible to the datapath: the
 * kernel keeps forwarding while no agent runs, and the new agent adopts what it finds rather than
 * rebuilding it. Watched from outside: `ip monitor route` in the node namespace and pings that run
 * through the whole kill-and-restart.
 */
const skip = testbedSkipReason();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The agent's nftables table without counters (`nft -s`): what a restart must leave as it was. */
function nftSnapshot(tb: Testbed, node: string): string {
  return nsExec(tb.node(node).ns, 'nft', ['-s', 'list', 'table', 'inet', 'trellis']);
}

function routeSnapshot(tb: Testbed, node: string): string {
  const sorted = (f: 4 | 6): string[] =>
    tb
      .routes(node, f)
      .map((r) => JSON.stringify(r))
      .sort();
  return JSON.stringify([sorted(4), sorted(6)]);
}

const title = 'cluster: agent crash and restart (real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let local: TestbedPod;
  let remote: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    local = await tb.addPod('node-1');
    remote = await tb.addPod('node-2');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('SIGKILL + restart: no route churn, and pings across nodes keep flowing', async () => {
    const before = routeSnapshot(tb, 'node-1');
    const nftBefore = nftSnapshot(tb, 'node-1');
    expect(nftBefore).toContain('masquerade');
    const monitor = await monitorRoutes(tb.node('node-1').ns);
    const ping4 = backgroundPing(remote, local.v4, 5);
    const ping6 = backgroundPing(local, remote.v6, 5);
    await sleep(500);
    const oldPid = tb.node('node-1').agent?.child.pid;
    await tb.restartAgent('node-1', { signal: 'SIGKILL' });
    expect(tb.node('node-1').agent?.child.pid).not.toBe(oldPid);
    const [r4, r6] = await Promise.all([ping4, ping6]);
    await monitor.stop();

    expect(routeSnapshot(tb, 'node-1')).toBe(before);
    expect(nftSnapshot(tb, 'node-1')).toBe(nftBefore);
    // trellis's routes are the pod CIDRs (10.244/16, fd00:10:244::/48) and the pod host routes.
    expect(monitor.lines.filter((l) => /10\.244\.|fd00:10:244:/.test(l))).toEqual([]);
    expect(r4.transmitted).toBeGreaterThan(50);
    expect(r6.transmitted).toBeGreaterThan(50);
    expect(r4.transmitted - r4.received, r4.output).toBeLessThanOrEqual(1);
    expect(r6.transmitted - r6.received, r6.output).toBeLessThanOrEqual(1);
    // The restarted agent logged readiness again (from its state dir, not from scratch).
    const readyLines = tb.node('node-1').logs.filter((l) => l.msg === 'trellis agent ready');
    expect(readyLines.length).toBe(2);
  });

  it('after the restart the agent still owns its leases: a new pod gets a fresh address and connects', async () => {
    const again = await tb.addPod('node-1');
    expect(again.v4).not.toBe(local.v4);
    expect(again.v6).not.toBe(local.v6);
    expect((await tb.ping(again.ns, remote.v4)).rttMs).toBeDefined();
    expect((await tb.ping(remote.ns, again.v6)).rttMs).toBeDefined();
    expect((await tb.ping(remote.ns, local.v4)).rttMs).toBeDefined();
  });

  it('SIGTERM + restart: the same, with the graceful path', async () => {
    const before = routeSnapshot(tb, 'node-2');
    const nftBefore = nftSnapshot(tb, 'node-2');
    expect(nftBefore).toContain('masquerade');
    const monitor = await monitorRoutes(tb.node('node-2').ns);
    const ping = backgroundPing(local, remote.v4, 3);
    await sleep(300);
    await tb.restartAgent('node-2', { signal: 'SIGTERM' });
    const r = await ping;
    await monitor.stop();
    expect(routeSnapshot(tb, 'node-2')).toBe(before);
    expect(nftSnapshot(tb, 'node-2')).toBe(nftBefore);
    expect(monitor.lines.filter((l) => /10\.244\.|fd00:10:244:/.test(l))).toEqual([]);
    expect(r.transmitted).toBeGreaterThan(30);
    expect(r.transmitted - r.received, r.output).toBeLessThanOrEqual(1);
  });

  it('while no agent listens, CNI STATUS still answers ready through the ready marker; without one it fails', async () => {
    const list = tb.conflist('node-2');
    const plugin = list.plugins.find((p) => p.type === 'trellis')!;
    const stdin = pluginConfig({ ...list, cniVersion: '1.1.0' }, plugin);
    const marker = `${String(plugin.socket)}.ready`;
    // The ready agent keeps it fresh (every 5 s, and at once when it became ready).
    expect(Date.now() - statSync(marker).mtimeMs).toBeLessThan(15_000);
    expect((await runPlugin(SHIM_BINARY, { command: 'STATUS' }, stdin)).code).toBe(0);
    await tb.stopAgent('node-2');
    try {
      // An upgrade's gap: the socket is closed, the node's network works on. The runtime asks STATUS
      // every ~5 s and would report the node's network not ready (the node NotReady) on a failure.
      const gap = await runPlugin(SHIM_BINARY, { command: 'STATUS' }, stdin);
      expect(gap.code, gap.stdout).toBe(0);
      expect(gap.stderr).toContain('so STATUS answers ready while it restarts');
      // A node that never had a ready agent since boot (/run is a tmpfs): no marker, not ready.
      rmSync(marker);
      const cold = await runPlugin(SHIM_BINARY, { command: 'STATUS' }, stdin);
      expect(cold.code).toBe(1);
      expect(cold.json).toMatchObject({ code: 50 });
    } finally {
      await tb.startAgent('node-2');
    }
    // Written once the agent is ready, which is a moment after it published its config list.
    for (let i = 0; !existsSync(marker); i++) {
      expect(i, 'the ready marker is back').toBeLessThan(250);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await runPlugin(SHIM_BINARY, { command: 'STATUS' }, stdin)).code).toBe(0);
  });

  it('every line of every run, start to stop, names its component once (operators filter on it)', () => {
    for (const name of ['node-1', 'node-2']) {
      const node = tb.node(name);
      expect(node.unnamed, name).toEqual([]);
      const components = new Set(node.logs.map((l) => l.component));
      for (const c of ['agent', 'cni', 'routes', 'observe']) expect(components, name).toContain(c);
      // The lifecycle lines operators look for first (node-2's agent was also stopped with SIGTERM).
      const said = (msg: string) => node.logs.find((l) => l.msg === msg)?.component;
      const lifecycle = ['starting', 'trellis agent ready', 'CNI socket listening'];
      if (name === 'node-2') lifecycle.push('trellis agent stopped');
      expect(lifecycle.map(said)).toEqual(lifecycle.map(() => 'agent'));
    }
  });
});
