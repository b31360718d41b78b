import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ClusterNode, ClusterView } from '../../../pkg/agent/cluster.ts';
import {
  type ControllerDeps,
  FIRST_LIST_WAIT,
  masqOptions,
  NodeController,
  type PassOutcome,
  selfChanges,
} from '../../../pkg/agent/controller.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { type Lease, RangeChangeError } from '../../../pkg/ipam/index.ts';
import type { MasqOptions } from '../../../pkg/masq/render.ts';
import { AgentHealth } from '../../../pkg/observe/agent-health.ts';
import type { PeerStepOutcome, ReconcileInput, ReconcileReport } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode, Problem } from '../../../pkg/routes/types.ts';
import { reconcileReport } from '../routes/report-fixture.ts';

const silent = pino({ level: 'silent' });

const report = reconcileReport;

class FakeCluster implements ClusterView {
  nodes = new Map<string, ClusterNode>();
  synced = false;
  list(): ClusterNode[] {
    return [...this.nodes.values()];
  }
  get(name: string): ClusterNode | undefined {
    return this.nodes.get(name);
  }
  hasSynced(): boolean {
    return this.synced;
  }
}

/** A pino logger whose lines land in `lines` (level as a number, 30 info, 40 warn). */
function capturingLogger(): {
  log: pino.Logger;
  lines: { level: number; msg: string; reason?: string; why?: string[] }[];
} {
  const lines: { level: number; msg: string; reason?: string; why?: string[] }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

function setup(
  opts: {
    routeErrors?: number;
    log?: pino.Logger;
    storeFailures?: number;
    onRangesSet?: (ranges: readonly string[]) => Promise<void>;
    masq?: ControllerDeps['masq'];
    /** How many onLeasesInvalidated calls fail (the veth removal's listing, say). */
    removalFailures?: number;
    /** What each full pass reports it could not route. */
    passProblems?: () => Problem[];
    /** The pass's follow-up (publishing the config list, say) throws this, when set. */
    syncFailure?: () => Error | undefined;
    /** Each pass waits for it once it has recorded its input (a pass under way). */
    gate?: () => Promise<void>;
  } = {},
) {
  let removalFailures = opts.removalFailures ?? 0;
  let storeFailures = opts.storeFailures ?? 0;
  const cluster = new FakeCluster();
  let ranges: string[] = [];
  const invalidated: Lease[][] = [];
  const inputs: ReconcileInput[] = [];
  const synced: ClusterNode[] = [];
  const sleeps: number[] = [];
  const leases: Lease[] = [
    {
      containerId: 'c1',
      ifname: 'eth0',
      addresses: [{ family: 4, address: '10.244.1.5', range: '10.244.1.0/24' }],
      createdAt: '',
    },
  ];
  const controller = new NodeController({
    nodeName: 'n1',
    cluster,
    ipam: {
      ranges: () => ranges,
      setRanges: (cidrs) => {
        ranges = cidrs;
        const outside = leases.filter((l) => !cidrs.includes(l.addresses[0]!.range));
        if (storeFailures > 0 && outside.length > 1) {
          // The store fails on the last one: the others went, that one stays for a retry.
          storeFailures--;
          const gone = outside.slice(0, -1);
          leases.splice(0, leases.length, ...leases.filter((l) => !gone.includes(l)));
          throw new RangeChangeError(gone, new CniError(CniCode.IPAM_STORE_FAILED, 'EIO'));
        }
        leases.splice(0, leases.length, ...leases.filter((l) => !outside.includes(l)));
        return outside;
      },
      get: (k) => leases.find((l) => l.containerId === k.containerId && l.ifname === k.ifname),
    },
    routes: {
      reconcile: async (input) => {
        inputs.push(input);
        await opts.gate?.();
        const errors = Array.from({ length: opts.routeErrors ?? 0 }, () => ({
          op: 'add',
          route: { family: 4 as const, dst: '10.244.9.0/24' },
          error: new Error('ENETUNREACH'),
        }));
        return report({ errors, problems: opts.passProblems?.() ?? [] } as Partial<ReconcileReport>);
      },
    },
    masq: opts.masq,
    noMasqueradeCIDRs: [],
    tableRules: {
      masquerade: true,
      clampMssInto: ['trellis.v4', 'trellis.v6'],
      tunnels: ['trellis.v4', 'trellis.v6'],
      sourceCheck: true,
    },
    onLeasesInvalidated: async (l) => {
      invalidated.push(l);
      if (removalFailures-- > 0) throw new Error('RTM_GETLINK dump: EINTR');
    },
    onSynced: async (self) => {
      synced.push(self);
      const failure = opts.syncFailure?.();
      if (failure !== undefined) throw failure;
    },
    ...(opts.onRangesSet === undefined ? {} : { onRangesSet: opts.onRangesSet }),
    log: opts.log ?? silent,
    resyncMs: 60_000,
    backoff: { initialMs: 100, maxMs: 400 },
    sleep: async (ms) => {
      sleeps.push(ms);
      await new Promise((r) => setImmediate(r));
    },
  });
  return { cluster, controller, invalidated, inputs, synced, sleeps, leases, ranges: () => ranges };
}

describe('NodeController', () => {
  it('waits (and says why) until its own Node has pod CIDRs, then programs it', async () => {
    const t = setup();
    const waiting = await t.controller.runOnce();
    expect(waiting).toEqual({ kind: 'waiting', reason: 'waiting for the first list of Nodes' });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: [], internalIPs: ['10.0.0.1'] });
    const noCidr = (await t.controller.runOnce()) as Extract<PassOutcome, { kind: 'waiting' }>;
    expect(noCidr.reason).toContain('has no spec.podCIDRs');
    expect(t.inputs).toHaveLength(0);

    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    t.cluster.nodes.set('n2', { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['10.0.0.2'] });
    const ok = await t.controller.runOnce();
    expect(ok.kind).toBe('ok');
    expect(t.ranges()).toEqual(['10.244.1.0/24']);
    expect(t.inputs[0]).toMatchObject({ synced: true, self: { name: 'n1' } });
    expect(t.inputs[0]!.peers.map((p) => p.name).sort()).toEqual(['n1', 'n2']);
    expect(t.synced.map((s) => s.name)).toEqual(['n1']);
  });

  it("a pass whose follow-up fails (the config list cannot be written) logs one 'reconcile failed' line with its why, not 'reconciled' too; the routes' problems still said", async () => {
    const { log, lines } = capturingLogger();
    let failure: Error | undefined = new Error('writing /etc/cni/net.d/10-trellis.conflist: ENOSPC');
    const problem = { node: 'n3', problem: 'no InternalIP of the family of pod CIDR 10.244.3.0/24; skipped' };
    const t = setup({ log, syncFailure: () => failure, passProblems: () => [problem] });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    const failed = await t.controller.runOnce(['resync']);
    expect(failed).toMatchObject({ kind: 'error', error: expect.stringContaining('ENOSPC') });
    const passLines = () => lines.filter((l) => l.msg === 'reconciled' || l.msg === 'reconcile failed');
    expect(passLines()).toEqual([
      expect.objectContaining({
        level: 50,
        msg: 'reconcile failed',
        why: ['resync'],
        durationMs: expect.any(Number),
      }),
    ]);
    // What the routes came to is still said: the kernel has it whatever the follow-up did.
    expect(lines.filter((l) => l.msg === 'node skipped')).toHaveLength(1);
    failure = undefined;
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(passLines().map((l) => l.msg)).toEqual(['reconcile failed', 'reconciled']);
  });

  it("warns 'node skipped' once a problem, not at every pass; a problem that went and came back again", async () => {
    const { log, lines } = capturingLogger();
    const problem = { node: 'n3', problem: 'no InternalIP of the family of pod CIDR 10.244.3.0/24; skipped' };
    let problems = [problem];
    const t = setup({ log, passProblems: () => problems });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    for (let i = 0; i < 3; i++) expect((await t.controller.runOnce()).kind).toBe('ok');
    const skipped = () => lines.filter((l) => l.msg === 'node skipped');
    expect(skipped()).toHaveLength(1);
    problems = [];
    await t.controller.runOnce();
    problems = [problem];
    await t.controller.runOnce();
    expect(skipped()).toHaveLength(2);
  });

  it('a problem of a node routed all the same (an InternalIP two nodes claim) is a warning once, no skip and no error, and is said to be over', async () => {
    const { log, lines } = capturingLogger();
    const said = 'traffic to the pods of each goes to whichever machine holds that address';
    const shared = [
      { node: 'n1', problem: `InternalIP 10.0.0.1 is also node n2's: ${said}`, routed: true as const },
      { node: 'n2', problem: `InternalIP 10.0.0.1 is also this node's: ${said}`, routed: true as const },
    ];
    let problems: { node: string; problem: string; routed?: true }[] = shared;
    const t = setup({ log, passProblems: () => problems });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    await t.controller.runOnce();
    expect(lines.filter((l) => l.level >= 40).map((l) => [l.msg, (l as { peer?: string }).peer])).toEqual([
      ['node routed, with a problem (see problem)', 'n1'],
      ['node routed, with a problem (see problem)', 'n2'],
    ]);
    const passes = lines.filter((l) => l.msg === 'reconciled') as { skipped?: string[]; problems?: number }[];
    expect(passes.map((l) => [l.skipped, l.problems])).toEqual([
      [undefined, 2],
      [undefined, 2],
    ]);
    problems = [];
    await t.controller.runOnce();
    expect(
      lines.filter((l) => l.msg === 'node problem over').map((l) => (l as { peer?: string }).peer),
    ).toEqual(['n1', 'n2']);
    expect(lines.filter((l) => l.msg === 'node no longer skipped')).toEqual([]);
  });

  it('a node skipped for two reasons is not said to be routed when one of them ends', async () => {
    const { log, lines } = capturingLogger();
    const noIp = { node: 'n2', problem: 'has no IPv4 InternalIP' };
    const noMac = { node: 'n2', problem: 'has no IPv6 InternalIP' };
    let problems = [noIp, noMac];
    const t = setup({ log, passProblems: () => problems });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    problems = [noMac];
    await t.controller.runOnce();
    problems = [];
    await t.controller.runOnce();
    const ends = lines
      .filter((l) => (l as { peer?: string }).peer === 'n2' && l.level === 30)
      .map((l) => [l.msg, (l as { problem?: string }).problem, (l as { still?: string }).still]);
    expect(ends).toEqual([
      ['a problem of the node is over; it is still skipped (see still)', noIp.problem, noMac.problem],
      ['node no longer skipped', noMac.problem, undefined],
    ]);
  });

  it('a problem whose node goes from skipped to routed with the same text is said again as routed, and its end as such', async () => {
    const { log, lines } = capturingLogger();
    const text =
      "InternalIP 10.0.0.1 is also node n1's: traffic to the pods of each goes to whichever machine holds that address";
    let problems: { node: string; problem: string; routed?: true }[] = [{ node: 'n2', problem: text }];
    const t = setup({ log, passProblems: () => problems });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    // n2's route came (its VTEP MAC published, say): the same claim, now of a routed node.
    problems = [{ node: 'n2', problem: text, routed: true }];
    await t.controller.runOnce();
    problems = [];
    await t.controller.runOnce();
    const said = lines.filter((l) => (l as { peer?: string }).peer === 'n2').map((l) => l.msg);
    expect(said).toEqual([
      'node skipped',
      'node routed, with a problem (see problem)',
      'node no longer skipped',
      'node problem over',
    ]);
  });

  it("says when a skipped node is routed again; a peer's missing VTEP MAC is a start-up race at first (debug); this node's own problem is an error", async () => {
    const { log, lines } = capturingLogger();
    const vtep = { node: 'n2', problem: 'unreachable: VXLAN: the node has not published an IPv4 VTEP MAC' };
    const own = { node: 'n1', problem: "InternalIP 10.0.0.99 is not an address of this node's interfaces" };
    let problems = [vtep, own];
    const t = setup({ log, passProblems: () => problems });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    await t.controller.runOnce();
    const at = (level: number) => lines.filter((l) => l.level === level).map((l) => l.msg);
    expect(at(40)).toEqual([]); // the VTEP MAC race: not a warning yet
    expect(lines.filter((l) => l.msg === 'node skipped for now (its agent may be starting)')).toHaveLength(1);
    expect(at(50)).toEqual([
      "this node's own setup cuts its pods off from other nodes in a family (see problem)",
    ]);
    // The passes name who is cut off, every time.
    expect(
      lines.filter((l) => l.msg === 'reconciled').map((l) => (l as { skipped?: string[] }).skipped),
    ).toEqual([
      ['n2', 'n1'],
      ['n2', 'n1'],
    ]);
    problems = [own];
    await t.controller.runOnce();
    expect(lines.filter((l) => l.msg === 'node no longer skipped')).toHaveLength(0); // n2 was never said
    problems = [];
    await t.controller.runOnce();
    expect(
      lines.filter((l) => l.msg === 'node no longer skipped').map((l) => (l as { peer?: string }).peer),
    ).toEqual(['n1']);
  });

  it('logs the start-up wait for the first list at info, a wait an operator must act on at warn, each once; every pass waiting again at debug, with its why', async () => {
    const { log, lines } = capturingLogger();
    const t = setup({ log });
    await t.controller.runOnce();
    await t.controller.runOnce();
    t.cluster.synced = true;
    await t.controller.runOnce(); // synced, own Node missing
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: [], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    await t.controller.runOnce(['resync']);
    const waits = lines.filter((l) => l.msg === 'waiting before programming the node');
    const noCidr = 'Node n1 has no spec.podCIDRs yet (is the controller-manager allocating node CIDRs?)';
    expect(waits.map((l) => [l.level, l.reason])).toEqual([
      [30, FIRST_LIST_WAIT],
      [20, FIRST_LIST_WAIT],
      [40, "Node n1 is not in the API, or its object is unusable (see 'Node object skipped')"],
      [40, noCidr],
      [20, noCidr],
    ]);
    expect(waits.at(-1)).toMatchObject({ why: ['resync'], durationMs: expect.any(Number) });
  });

  it('says once that the kernel refused the MSS clamp, and once that it took it later', async () => {
    const { log, lines } = capturingLogger();
    let refused: string | undefined = 'Error: Could not process rule: No such file or directory';
    const t = setup({
      log,
      masq: {
        sync: async () => 'applied',
        invalidate: () => {},
        get clampRefused() {
          return refused;
        },
      },
    });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    await t.controller.runOnce();
    await t.controller.runOnce();
    refused = undefined;
    await t.controller.runOnce();
    await t.controller.runOnce();
    const said = lines.filter((l) => /MSS clamp/.test(l.msg));
    expect(said.map((l) => [l.level, l.msg.split(' (')[0]])).toEqual([
      [40, 'the kernel refused the TCP MSS clamp into the VXLAN devices'],
      [30, 'TCP MSS clamp applied'],
    ]);
  });

  it('tells the reconciler the cache is not synced yet, so nothing is removed before the first list', async () => {
    const t = setup();
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    await t.controller.runOnce();
    expect(t.inputs[0]!.synced).toBe(false);
  });

  it('a pod CIDR change hands the leases outside the new range to the caller', async () => {
    const t = setup();
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    await t.controller.runOnce();
    expect(t.invalidated).toHaveLength(0);
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.7.0/24'], internalIPs: [] });
    await t.controller.runOnce();
    expect(t.invalidated).toHaveLength(1);
    expect(t.invalidated[0]![0]!.containerId).toBe('c1');
  });

  it('a pod CIDR change that could not release every lease hands over those it did and retries the rest', async () => {
    const t = setup({ storeFailures: 1 });
    t.leases.push({
      containerId: 'c2',
      ifname: 'eth0',
      addresses: [{ family: 4, address: '10.244.1.6', range: '10.244.1.0/24' }],
      createdAt: '',
    });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    expect((await t.controller.runOnce()).kind).toBe('ok');
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.7.0/24'], internalIPs: [] });
    const failed = await t.controller.runOnce();
    expect(failed.kind).toBe('error');
    expect(t.invalidated.map((ls) => ls.map((l) => l.containerId))).toEqual([['c1']]);
    // Same CIDRs on the next pass: the change is tried again and the last lease goes.
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(t.invalidated.map((ls) => ls.map((l) => l.containerId))).toEqual([['c1'], ['c2']]);
    expect(t.leases).toEqual([]);
  });

  it('a failed veth removal after a range change is retried, and onRangesSet runs once it went', async () => {
    const calls: string[][] = [];
    const t = setup({ removalFailures: 1, onRangesSet: async (ranges) => void calls.push([...ranges]) });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.7.0/24'], internalIPs: [] });
    expect((await t.controller.runOnce()).kind).toBe('error');
    expect(calls).toEqual([]);
    // Same CIDRs: the released lease's veth is removed now, and the ranges' own work done.
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(t.invalidated.map((ls) => ls.map((l) => l.containerId))).toEqual([['c1'], ['c1']]);
    expect(calls).toEqual([['10.244.7.0/24']]);
    await t.controller.runOnce();
    expect(t.invalidated).toHaveLength(2);
  });

  it('a retried veth removal skips an attachment set up again meanwhile (a lease of its key)', async () => {
    const t = setup({ removalFailures: 1 });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.7.0/24'], internalIPs: [] });
    expect((await t.controller.runOnce()).kind).toBe('error');
    t.leases.push({
      containerId: 'c1',
      ifname: 'eth0',
      addresses: [{ family: 4, address: '10.244.7.2', range: '10.244.7.0/24' }],
      createdAt: '',
    });
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(t.invalidated.map((ls) => ls.map((l) => l.containerId))).toEqual([['c1']]);
  });

  it('a failed onRangesSet (forwarding not turned on) fails the pass and is called again on the next', async () => {
    const calls: string[][] = [];
    let failures = 1;
    const t = setup({
      onRangesSet: async (ranges) => {
        calls.push([...ranges]);
        if (failures-- > 0) throw new Error('net/ipv6/conf/all/forwarding: write "1": ENOENT');
      },
    });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['fd00:1::/64'], internalIPs: [] });
    expect((await t.controller.runOnce()).kind).toBe('error');
    expect(t.synced).toEqual([]);
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(calls).toEqual([['fd00:1::/64'], ['fd00:1::/64']]);
    // Done: later passes with the same CIDRs leave it alone.
    await t.controller.runOnce();
    expect(calls).toHaveLength(2);
  });

  it('remembered ranges: the first pass confirms them (running onRangesSet once) or changes them', async () => {
    const { log, lines } = capturingLogger();
    const calls: string[][] = [];
    const t = setup({ log, onRangesSet: async (ranges) => void calls.push([...ranges]) });
    t.controller.useRememberedRanges(['10.244.1.0/24']);
    expect(t.ranges()).toEqual(['10.244.1.0/24']);
    expect(calls).toEqual([]);
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    expect((await t.controller.runOnce()).kind).toBe('ok');
    expect(calls).toEqual([['10.244.1.0/24']]);
    expect(lines.some((l) => l.msg.startsWith('pod CIDRs confirmed by the API'))).toBe(true);
    await t.controller.runOnce();
    expect(calls).toHaveLength(1);
    expect(t.invalidated).toEqual([]);

    // The API says otherwise: the remembered range's leases go, as in any change.
    const u = setup({ onRangesSet: async () => {} });
    u.controller.useRememberedRanges(['10.244.1.0/24']);
    u.cluster.synced = true;
    u.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.7.0/24'], internalIPs: [] });
    expect((await u.controller.runOnce()).kind).toBe('ok');
    expect(u.ranges()).toEqual(['10.244.7.0/24']);
    expect(u.invalidated.map((ls) => ls.map((l) => l.containerId))).toEqual([['c1']]);
  });

  it('events only mark dirty: a burst of marks while a pass runs leads to one more pass, not one per mark', async () => {
    let open = false;
    let release = (): void => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const t = setup({ gate: () => (open ? Promise.resolve() : held) });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    const abort = new AbortController();
    t.controller.start(abort.signal);
    await until('the first pass under way', () => t.inputs.length === 1);
    for (let i = 0; i < 50; i++) t.controller.markDirty('test');
    expect(t.inputs).toHaveLength(1); // still held: the marks came while it ran
    open = true;
    release();
    await until('the pass the marks asked for', () => t.inputs.length === 2);
    await settle();
    abort.abort();
    await t.controller.done;
    expect(t.inputs).toHaveLength(2);
  });

  it('each full pass says why it ran: start, then the reasons gathered since the last one (five at most)', async () => {
    const { log, lines } = capturingLogger();
    const t = setup({ log });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    const abort = new AbortController();
    const passes = () => lines.filter((l) => l.msg === 'reconciled');
    t.controller.start(abort.signal);
    await until('the first pass', () => passes().length === 1);
    t.controller.markDirty('periodic resync');
    t.controller.markDirty('the list of Nodes was read');
    t.controller.markDirty('periodic resync'); // once, however often
    await until('the second pass', () => passes().length === 2);
    for (let i = 1; i <= 7; i++) t.controller.markDirty(`a foreign route on 10.244.${i}.0/24`);
    await until('the third pass', () => passes().length === 3);
    abort.abort();
    await t.controller.done;
    expect(passes().map((l) => l.why)).toEqual([
      ['start'],
      ['periodic resync', 'the list of Nodes was read'],
      [
        'a foreign route on 10.244.1.0/24',
        'a foreign route on 10.244.2.0/24',
        'a foreign route on 10.244.3.0/24',
        'a foreign route on 10.244.4.0/24',
        'a foreign route on 10.244.5.0/24',
        'and 2 more',
      ],
    ]);
  });

  it('a pass with failed routes is retried after a capped, growing backoff instead of in a hot loop', async () => {
    const t = setup({ routeErrors: 1 });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: [] });
    const abort = new AbortController();
    t.controller.start(abort.signal);
    while (t.sleeps.length < 5) await new Promise((r) => setTimeout(r, 1));
    abort.abort();
    await t.controller.done;
    expect(t.sleeps.slice(0, 5)).toEqual([100, 200, 400, 400, 400]);
  });

  it('masquerade covers every node pod CIDR as a no-masquerade destination, and only our CIDRs as sources', () => {
    const self = { name: 'n1', podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'], internalIPs: [] };
    const opts = masqOptions(
      self,
      [self, { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: [] }],
      ['192.168.0.0/16'],
    );
    expect(opts.podCIDRs).toEqual({ v4: ['10.244.1.0/24'], v6: ['fd00:1::/64'] });
    // In the cache's order, ours again at the end (the node list may not hold us yet); the planner merges.
    expect(opts.clusterCIDRs).toEqual([
      '10.244.1.0/24',
      'fd00:1::/64',
      '10.244.2.0/24',
      '10.244.1.0/24',
      'fd00:1::/64',
    ]);
    expect(opts.noMasqueradeCIDRs).toEqual(['192.168.0.0/16']);
  });

  it('leaves out of the no-masquerade destinations the pod CIDRs the pass refused to route', async () => {
    const synced: MasqOptions[] = [];
    const t = setup({
      masq: {
        sync: async (o) => {
          synced.push(o);
          return 'applied';
        },
        invalidate: () => {},
      },
      // A Node given a /8 by mistake: routed, it would hold the others' /24s; exempt, every node's
      // pods would reach the rest of 10/8 with their own addresses, which cannot answer them.
      passProblems: () => [
        {
          node: 'wide',
          problem: 'pod CIDR 10.0.0.0/8 contains 10.244.2.0/24 of node n2; skipped',
          refusedCidr: '10.0.0.0/8',
        },
      ],
    });
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    t.cluster.nodes.set('n2', { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['10.0.0.2'] });
    t.cluster.nodes.set('wide', {
      name: 'wide',
      podCIDRs: ['10.0.0.0/8', 'fd00:9::/64'],
      internalIPs: ['10.0.0.9'],
    });
    await t.controller.runOnce();
    expect(synced[0]!.clusterCIDRs).toEqual([
      '10.244.1.0/24',
      '10.244.2.0/24',
      'fd00:9::/64',
      '10.244.1.0/24',
    ]);
  });
});

/** A controller whose reconciler supports per-node steps; the full pass can be held open with `gate`. */
function perNodeSetup(
  answer: (name: string) => PeerStepOutcome['kind'] = () => 'applied',
  opts: {
    /** What each step reports it could not route. */
    problems?: () => Problem[];
    /** Whether each step says the node's pod CIDRs changed (default: yes). */
    cidrsChanged?: () => boolean;
    log?: pino.Logger;
    changeCluster?: (removed: readonly string[], added: readonly string[]) => 'updated' | 'unsupported';
    /** The devices a step names (a peer routed through a device the last report did not name). */
    routeDevices?: (name: string) => readonly number[] | undefined;
    ownAnnotations?: ControllerDeps['ownAnnotations'];
    /** This node's fields as the first pass reads them, beside its name, pod CIDR and InternalIP. */
    self?: Partial<ClusterNode>;
    /** Whether each nft apply fails (a full pass with a failed one is partial: retried after a backoff). */
    masqFails?: () => boolean;
    /** The backoff's wait (default: a real timer). */
    sleep?: (ms: number) => Promise<void>;
    /** Awaited inside every whole masquerade sync (a slow nft apply). */
    masqGate?: () => Promise<void> | undefined;
  } = {},
) {
  const followed: (readonly number[])[] = [];
  const cluster = new FakeCluster();
  cluster.synced = true;
  cluster.nodes.set('n1', {
    name: 'n1',
    podCIDRs: ['10.244.1.0/24'],
    internalIPs: ['10.0.0.1'],
    ...opts.self,
  });
  cluster.nodes.set('n2', { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['10.0.0.2'] });
  const full: ReconcileInput[] = [];
  const steps: { name: string; peer: PeerNode | undefined }[] = [];
  const masq: MasqOptions[] = [];
  const deltas: { removed: string[]; added: string[] }[] = [];
  const passes: PassOutcome[] = [];
  const peerChanges: { node: string | undefined; accepted: readonly string[] }[] = [];
  // The routes the fake steps leave programmed (one per node, keyed by its name), n2's from the full pass.
  const programmed = new Set(['n2']);
  let gate: Promise<void> | undefined;
  const controller = new NodeController({
    nodeName: 'n1',
    cluster,
    ipam: { ranges: () => ['10.244.1.0/24'], setRanges: () => [], get: () => undefined },
    routes: {
      reconcile: async (input) => {
        full.push(input);
        await gate;
        return report();
      },
      reconcilePeer: async (name, peer) => {
        steps.push({ name, peer });
        const kind = answer(name);
        if (kind === 'full') return { kind, reason: 'test says so' };
        if (kind === 'unchanged') return { kind };
        const added = peer === undefined ? 0 : 1;
        if (peer === undefined) programmed.delete(name);
        else programmed.add(name);
        return {
          kind: 'applied',
          node: name,
          changed: [peer === undefined ? 'deleted' : 'added'],
          cidrsChanged: opts.cidrsChanged?.() ?? true,
          result: { added, replaced: 0, removed: 1 - added, neighbours: 0, fdb: 0 },
          routeKeys: peer === undefined ? { written: [], removed: [name] } : { written: [name], removed: [] },
          problems: opts.problems?.() ?? [],
          report: () => report({ unchanged: programmed.size }),
          ...(opts.routeDevices?.(name) === undefined ? {} : { routeDevices: opts.routeDevices(name)! }),
        };
      },
    },
    masq: {
      sync: async (masqOpts) => {
        masq.push(masqOpts);
        await opts.masqGate?.();
        if (opts.masqFails?.() === true) throw new Error('nft: Could not process rule: No such file');
        return 'applied';
      },
      ...(opts.changeCluster === undefined
        ? {}
        : {
            changeCluster: async (removed: readonly string[], added: readonly string[]) => {
              deltas.push({ removed: [...removed], added: [...added] });
              return opts.changeCluster!(removed, added);
            },
          }),
      invalidate: () => {},
    },
    noMasqueradeCIDRs: [],
    onLeasesInvalidated: async () => {},
    onSynced: async () => {},
    onPass: (o) => passes.push(o),
    onRouteDevices: (d) => followed.push(d),
    onPeerChanged: (node, accepted) => peerChanges.push({ node: node?.name, accepted }),
    ...(opts.ownAnnotations === undefined ? {} : { ownAnnotations: opts.ownAnnotations }),
    log: opts.log ?? silent,
    resyncMs: 60_000,
    ...(opts.sleep === undefined ? {} : { sleep: opts.sleep }),
  });
  const abort = new AbortController();
  controller.start(abort.signal);
  const hold = (): (() => void) => {
    let release = (): void => {};
    gate = new Promise<void>((r) => {
      release = r;
    });
    return () => {
      gate = undefined;
      release();
    };
  };
  const stop = async (): Promise<void> => {
    abort.abort();
    await controller.done;
  };
  return { cluster, controller, full, steps, masq, deltas, passes, followed, peerChanges, hold, stop };
}

async function until(what: string, pred: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!pred()) throw new Error(`never: ${what}`);
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe('NodeController loop', () => {
  it('outlives a hook that throws (a bug around the passes): logs it, backs off, and runs the next full pass', async () => {
    const { log, lines } = capturingLogger();
    const cluster = new FakeCluster();
    cluster.synced = true; // but no own Node yet: the pass waits, and its outcome reaches the hook
    let passes = 0;
    let throws = 1;
    const sleeps: number[] = [];
    const controller = new NodeController({
      nodeName: 'n1',
      cluster,
      ipam: { ranges: () => ['10.244.1.0/24'], setRanges: () => [], get: () => undefined },
      routes: {
        reconcile: async () => {
          passes++;
          return report({});
        },
      },
      masq: undefined,
      noMasqueradeCIDRs: [],
      onLeasesInvalidated: async () => {},
      onSynced: async () => {},
      onPass: () => {
        if (throws-- > 0) throw new TypeError('a metrics bug');
      },
      log,
      resyncMs: 60_000,
      backoff: { initialMs: 100, maxMs: 400 },
      sleep: async (ms) => {
        sleeps.push(ms);
        await new Promise((r) => setImmediate(r));
      },
    });
    const abort = new AbortController();
    controller.start(abort.signal);
    controller.markDirty('test');
    await until('the throw logged', () =>
      lines.some((l) => l.msg.startsWith('reconcile loop failed unexpectedly')),
    );
    cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    controller.markDirty('test');
    await until('a pass after the throw', () => passes >= 1);
    expect(sleeps).toEqual([100]);
    controller.markDirty('test');
    await until('another pass', () => passes >= 2);
    abort.abort();
    await controller.done;
  });
  it("a pass that hangs (a CNI binary's VERSION probe that never ends) is the loop's job until it ends, and /readyz fails while it lasts", async () => {
    const { log, lines } = capturingLogger();
    let release: (() => void) | undefined;
    const t = setup({ log });
    // The follow-up (publishing the config list) of the second pass hangs until released.
    let passes = 0;
    const deps = (t.controller as unknown as { deps: ControllerDeps }).deps;
    deps.onSynced = async () => {
      if (++passes === 2) await new Promise<void>((r) => (release = r));
    };
    t.cluster.synced = true;
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    const health = new AgentHealth({
      source: { notReadyReason: () => undefined, watch: () => undefined, work: () => t.controller.work() },
      maxBusyMs: 30,
      log,
    });
    deps.onPass = health.onPass;
    const abort = new AbortController();
    t.controller.start(abort.signal);
    await until('first pass', () => passes === 1 && t.controller.work() === undefined);
    expect(health.readiness().ok).toBe(true);
    t.controller.markDirty('periodic resync');
    await until('second pass hangs', () => release !== undefined);
    expect(t.controller.work()).toMatchObject({ what: 'a full pass' });
    await new Promise((r) => setTimeout(r, 50));
    health.tick();
    health.tick();
    expect(health.readiness()).toMatchObject({
      ok: false,
      checks: { reconcile: expect.stringMatching(/^the reconcile loop has been in a full pass for \d+ s/) },
    });
    expect(lines.filter((l) => l.msg.startsWith('reconcile loop stuck'))).toHaveLength(1);
    release!();
    await until('the pass ends', () => t.controller.work() === undefined && passes === 2);
    health.tick();
    expect(health.readiness().ok).toBe(true);
    expect(lines.filter((l) => l.msg === 'reconcile loop moving again')).toHaveLength(1);
    abort.abort();
    await t.controller.done;
  });
});

describe('NodeController per-node steps', () => {
  it("a step of a node named 'full' says that node's problems only, never the others' as gone", async () => {
    const { log, lines } = capturingLogger();
    let problems: Problem[] = [];
    const t = perNodeSetup(undefined, { log, problems: () => problems });
    await until('first full pass', () => t.full.length === 1);
    problems = [{ node: 'n3', problem: 'no InternalIP of the family of pod CIDR 10.244.3.0/24; skipped' }];
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: [] });
    t.controller.enqueue('n3');
    await until('n3 said', () => lines.some((l) => l.msg === 'node skipped'));
    problems = [];
    t.cluster.nodes.set('full', { name: 'full', podCIDRs: ['10.244.4.0/24'], internalIPs: ['10.0.0.4'] });
    t.controller.enqueue('full');
    await until('the step', () => t.steps.some((s) => s.name === 'full'));
    await settle();
    expect(lines.filter((l) => l.msg === 'node no longer skipped')).toEqual([]);
    await t.stop();
  });

  it("hands the masquerade syncer only what the changed nodes added and took, and syncs whole when it can't", async () => {
    let answer: 'updated' | 'unsupported' = 'updated';
    const t = perNodeSetup(undefined, { changeCluster: () => answer });
    await until('first full pass', () => t.full.length === 1 && t.masq.length === 1);
    const setN3 = async (podCIDRs: string[], deltas: number): Promise<void> => {
      t.cluster.nodes.set('n3', { name: 'n3', podCIDRs, internalIPs: ['10.0.0.3'] });
      t.controller.enqueue('n3');
      await until('delta', () => t.deltas.length === deltas);
    };
    await setN3(['10.244.3.0/24', 'fd00:3::/64'], 1);
    expect(t.deltas[0]).toEqual({ removed: [], added: ['10.244.3.0/24', 'fd00:3::/64'] });
    // Other pod CIDRs, then deleted.
    await setN3(['10.244.4.0/24', 'fd00:3::/64'], 2);
    expect(t.deltas[1]).toEqual({ removed: ['10.244.3.0/24'], added: ['10.244.4.0/24'] });
    t.cluster.nodes.delete('n3');
    t.controller.enqueue('n3');
    await until('delta', () => t.deltas.length === 3);
    expect(t.deltas[2]).toEqual({ removed: ['10.244.4.0/24', 'fd00:3::/64'], added: [] });
    expect(t.masq).toHaveLength(1);
    // The syncer cannot (its change was refused): the whole cluster, from the cache.
    answer = 'unsupported';
    t.cluster.nodes.set('n5', { name: 'n5', podCIDRs: ['10.244.5.0/24'], internalIPs: ['10.0.0.5'] });
    t.controller.enqueue('n5');
    await until('whole sync', () => t.masq.length === 2);
    expect(t.masq[1]!.clusterCIDRs).toContain('10.244.5.0/24');
    // And from there on deltas again, against what that sync gave.
    answer = 'updated';
    t.cluster.nodes.delete('n5');
    t.controller.enqueue('n5');
    await until('delta', () => t.deltas.length === 5);
    expect(t.deltas[4]).toEqual({ removed: ['10.244.5.0/24'], added: [] });
    expect(t.full).toHaveLength(1);
    await t.stop();
  });

  it("a step's refused pod CIDR stays out of the masquerade sets, and joins once a step routes it", async () => {
    let problems: Problem[] = [
      {
        node: 'wide',
        problem: 'pod CIDR 10.0.0.0/8 contains 10.244.2.0/24 of node n2; skipped',
        refusedCidr: '10.0.0.0/8',
      },
    ];
    const t = perNodeSetup(undefined, { changeCluster: () => 'updated', problems: () => problems });
    await until('first full pass', () => t.full.length === 1 && t.masq.length === 1);
    t.cluster.nodes.set('wide', {
      name: 'wide',
      podCIDRs: ['10.0.0.0/8', 'fd00:9::/64'],
      internalIPs: ['10.0.0.9'],
    });
    t.controller.enqueue('wide');
    await until('delta', () => t.deltas.length === 1);
    expect(t.deltas[0]).toEqual({ removed: [], added: ['fd00:9::/64'] });
    // Routed now (say the /24 inside it went away): the next step hands the /8 over.
    problems = [];
    t.cluster.nodes.set('wide', { name: 'wide', podCIDRs: ['10.0.0.0/8'], internalIPs: ['10.0.0.9'] });
    t.controller.enqueue('wide');
    await until('delta', () => t.deltas.length === 2);
    expect(t.deltas[1]).toEqual({ removed: ['fd00:9::/64'], added: ['10.0.0.0/8'] });
    await t.stop();
  });

  it("the pod CIDRs the planner accepted (the firewall's cover): none before a full pass, then every node's less refusals; each step hands its peer's", async () => {
    let problems: Problem[] = [];
    const t = perNodeSetup(undefined, { problems: () => problems });
    const before = t.controller.acceptedPodCidrs();
    await until('first full pass', () => t.full.length === 1 && t.masq.length === 1);
    expect(before).toBeUndefined();
    expect(t.controller.acceptedPodCidrs()).toEqual(['10.244.1.0/24', '10.244.2.0/24']);
    problems = [{ node: 'wide', problem: 'holds an InternalIP; skipped', refusedCidr: '10.0.0.0/8' }];
    t.cluster.nodes.set('wide', {
      name: 'wide',
      podCIDRs: ['10.0.0.0/8', 'fd00:9::/64'],
      internalIPs: ['10.0.0.9'],
    });
    t.controller.enqueue('wide');
    await until('the step', () => t.peerChanges.length === 1);
    expect(t.peerChanges[0]).toEqual({ node: 'wide', accepted: ['fd00:9::/64'] });
    expect(t.controller.acceptedPodCidrs()).toEqual(['10.244.1.0/24', '10.244.2.0/24', 'fd00:9::/64']);
    t.cluster.nodes.delete('wide');
    problems = [];
    t.controller.enqueue('wide');
    await until('the step', () => t.peerChanges.length === 2);
    expect(t.peerChanges[1]).toEqual({ node: undefined, accepted: [] });
    await t.stop();
  });

  it('a refusal that comes and goes with the pod CIDRs unchanged (an InternalIP moved into them) changes the sets too', async () => {
    const refusal = {
      node: 'wide',
      problem: "pod CIDR 10.0.0.0/8 contains the node's own InternalIP 10.0.0.9; skipped",
      refusedCidr: '10.0.0.0/8',
    };
    let problems: Problem[] = [];
    let cidrsChanged = true;
    const t = perNodeSetup(undefined, {
      changeCluster: () => 'updated',
      problems: () => problems,
      cidrsChanged: () => cidrsChanged,
    });
    await until('first full pass', () => t.full.length === 1 && t.masq.length === 1);
    const step = async (internalIP: string, deltas: number): Promise<void> => {
      t.cluster.nodes.set('wide', { name: 'wide', podCIDRs: ['10.0.0.0/8'], internalIPs: [internalIP] });
      t.controller.enqueue('wide');
      await until('delta', () => t.deltas.length === deltas);
    };
    await step('192.168.0.9', 1);
    expect(t.deltas[0]).toEqual({ removed: [], added: ['10.0.0.0/8'] });
    cidrsChanged = false;
    problems = [refusal];
    await step('10.0.0.9', 2);
    expect(t.deltas[1]).toEqual({ removed: ['10.0.0.0/8'], added: [] });
    problems = [];
    await step('192.168.0.9', 3);
    expect(t.deltas[2]).toEqual({ removed: [], added: ['10.0.0.0/8'] });
    // Neither the CIDRs nor the refusal changed: the sets are left alone (past the 50 ms coalescing).
    const steps = t.steps.length;
    t.cluster.nodes.set('wide', { name: 'wide', podCIDRs: ['10.0.0.0/8'], internalIPs: ['192.168.0.10'] });
    t.controller.enqueue('wide');
    await until('the step', () => t.steps.length === steps + 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(t.deltas).toHaveLength(3);
    await t.stop();
  });

  it('a refusal lifted while a whole masquerade sync runs reaches the sets once it is done', async () => {
    const refusal = {
      node: 'wide',
      problem: "pod CIDR 10.0.0.0/8 contains the node's own InternalIP 10.0.0.9; skipped",
      refusedCidr: '10.0.0.0/8',
    };
    let problems: Problem[] = [refusal];
    let cidrsChanged = true;
    let answer: 'updated' | 'unsupported' = 'updated';
    let gate: Promise<void> | undefined;
    const t = perNodeSetup(undefined, {
      changeCluster: () => answer,
      problems: () => problems,
      cidrsChanged: () => cidrsChanged,
      masqGate: () => gate,
    });
    await until('first full pass', () => t.full.length === 1 && t.masq.length === 1);
    const step = (name: string, internalIP: string, podCIDRs = ['10.0.0.0/8']): void => {
      t.cluster.nodes.set(name, { name, podCIDRs, internalIPs: [internalIP] });
      t.controller.enqueue(name);
    };
    step('wide', '10.0.0.9'); // refused: nothing of it in the sets
    await until('delta', () => t.deltas.length === 1);
    // A whole sync (the syncer cannot change in place), held in the kernel...
    answer = 'unsupported';
    let release = (): void => {};
    gate = new Promise<void>((r) => {
      release = r;
    });
    problems = [];
    step('n5', '10.0.0.5', ['10.244.5.0/24']);
    await until('the whole sync', () => t.masq.length === 2);
    expect(t.masq[1]!.clusterCIDRs).not.toContain('10.0.0.0/8');
    // ...while a step lifts wide's refusal, its CIDRs unchanged (its InternalIP moved out of them).
    cidrsChanged = false;
    answer = 'updated';
    step('wide', '192.168.0.9');
    await until('the step', () => t.steps.filter((s) => s.name === 'wide').length === 2);
    gate = undefined;
    release();
    // The sync gave the kernel the refusal of when it started: the /8 is added after it.
    await until('the /8 in the sets', () => t.deltas.some((d) => d.added.includes('10.0.0.0/8')));
    await t.stop();
  });

  it('says at once, at warn, why a node the step could not route was skipped', async () => {
    const { log, lines } = capturingLogger();
    const problem = 'no InternalIP of the family of pod CIDR 10.244.3.0/24; skipped';
    const t = perNodeSetup(undefined, { log, problems: () => [{ node: 'n3', problem }] });
    await until('first full pass', () => t.full.length === 1);
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: [] });
    t.controller.enqueue('n3');
    await until('step', () => t.steps.length === 1);
    await until('warning', () => lines.some((l) => l.msg === 'node skipped'));
    expect(lines.filter((l) => l.msg === 'node skipped')).toEqual([
      expect.objectContaining({ level: 40, peer: 'n3', problem }),
    ]);
    expect(t.full).toHaveLength(1);
    await t.stop();
  });

  it('hands the devices a step names to the carrier watch at once, and nothing for a step that names none', async () => {
    const t = perNodeSetup(undefined, { routeDevices: (name) => (name === 'n3' ? [2, 3] : undefined) });
    await until('first full pass', () => t.full.length === 1);
    t.cluster.nodes.set('n4', { name: 'n4', podCIDRs: ['10.244.4.0/24'], internalIPs: ['10.0.0.4'] });
    t.controller.enqueue('n4');
    await until('step', () => t.steps.length === 1);
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: ['10.1.0.3'] });
    t.controller.enqueue('n3');
    await until('step', () => t.steps.length === 2);
    await settle();
    expect(t.followed).toEqual([[2, 3]]);
    await t.stop();
  });

  it("reconciles one node by name from the cache's current state, without a full pass", async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: ['10.0.0.3'] });
    t.controller.enqueue('n3');
    await until('step', () => t.steps.length === 1);
    await settle();
    expect(t.steps[0]).toEqual({
      name: 'n3',
      peer: {
        name: 'n3',
        podCIDRs: ['10.244.3.0/24'],
        internalIPs: ['10.0.0.3'],
        vtepMacs: {},
        directSubnets: {},
      },
    });
    expect(t.full).toHaveLength(1);
    // The new CIDR leaves the masquerade set (after the route, coalesced), and metrics see a per-node pass.
    await until('masquerade update', () => t.masq.some((m) => m.clusterCIDRs.includes('10.244.3.0/24')));
    await until('per-node outcome', () => t.passes.some((p) => p.kind === 'ok' && p.scope === 'node'));
    expect(t.passes.at(-1)).toMatchObject({ kind: 'ok', scope: 'node', report: { added: 1 } });
    // Deleted: the step is asked with no node.
    t.cluster.nodes.delete('n3');
    t.controller.enqueue('n3');
    await until('second step', () => t.steps.length === 2);
    expect(t.steps[1]).toEqual({ name: 'n3', peer: undefined });
    await t.stop();
  });

  it('hands a burst of per-node steps to the metrics hook once, with each step counted', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    const before = t.passes.length;
    for (const n of ['n3', 'n4', 'n5']) {
      t.cluster.nodes.set(n, { name: n, podCIDRs: [], internalIPs: [] });
      t.controller.enqueue(n);
    }
    await until('three steps', () => t.steps.length === 3);
    await until('per-node outcome', () => t.passes.length > before);
    await settle();
    const node = t.passes.slice(before);
    expect(node).toHaveLength(1);
    expect(node[0]).toMatchObject({ kind: 'ok', scope: 'node', report: { added: 3 } });
    expect(node[0]?.kind === 'ok' ? node[0].stepsMs : undefined).toHaveLength(3);
    await t.stop();
  });

  it("a metrics hook that throws on the steps' outcome (handed over off the loop, from a timer) is logged, not the process's end", async () => {
    const { log, lines } = capturingLogger();
    const t = perNodeSetup(undefined, { log });
    await until('first full pass', () => t.full.length === 1);
    const deps = (t.controller as unknown as { deps: ControllerDeps }).deps;
    deps.onPass = (o) => {
      if (o.kind === 'ok' && o.scope === 'node') throw new TypeError('a metrics bug');
    };
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: [], internalIPs: [] });
    t.controller.enqueue('n3');
    await until('the throw logged', () =>
      lines.some((l) => l.msg === "reporting the per-node steps' outcome failed unexpectedly"),
    );
    // The loop goes on: the next step is taken.
    t.cluster.nodes.set('n4', { name: 'n4', podCIDRs: [], internalIPs: [] });
    t.controller.enqueue('n4');
    await until('the next step', () => t.steps.length === 2);
    await t.stop();
  });

  it('counts as unchanged only the routes no step wrote, also when a later step removed what one added', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    const before = t.passes.length;
    // n3 and n4 added, then deleted again, in one burst: only n2's route is programmed, and untouched.
    for (const [i, n] of ['n3', 'n4'].entries()) {
      t.cluster.nodes.set(n, { name: n, podCIDRs: [], internalIPs: [] });
      t.controller.enqueue(n);
      await until('step', () => t.steps.length === i + 1);
    }
    for (const [i, n] of ['n3', 'n4'].entries()) {
      t.cluster.nodes.delete(n);
      t.controller.enqueue(n);
      await until('deletion step', () => t.steps.length === i + 3);
    }
    await until('per-node outcome', () => t.passes.length > before);
    await settle();
    const node = t.passes.slice(before);
    expect(node).toHaveLength(1);
    expect(node[0]).toMatchObject({
      kind: 'ok',
      scope: 'node',
      programmed: 1,
      report: { added: 2, removed: 2, replaced: 0, unchanged: 1 },
    });
    await t.stop();
  });

  it('under a steady stream of steps, still hands them to the metrics hook within about 2 s', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    const before = t.passes.length;
    // A step every 40 ms never leaves the 150 ms of quiet the hook waits for; the cap must flush anyway.
    for (let i = 0; i < 75 && t.passes.length === before; i++) {
      t.cluster.nodes.set(`s${i}`, { name: `s${i}`, podCIDRs: [], internalIPs: [] });
      t.controller.enqueue(`s${i}`);
      await new Promise((r) => setTimeout(r, 40));
    }
    const flushed = t.passes.slice(before);
    expect(flushed.length).toBeGreaterThan(0);
    expect(flushed[0]).toMatchObject({ kind: 'ok', scope: 'node' });
    // Flushed mid-stream, not at its end: fewer steps than were sent.
    expect(t.steps.length).toBeLessThan(75);
    await t.stop();
  });

  it('falls back to a full pass when the step cannot decide', async () => {
    const t = perNodeSetup(() => 'full');
    await until('first full pass', () => t.full.length === 1);
    t.controller.enqueue('n2');
    await until('fallback full pass', () => t.full.length === 2);
    expect(t.steps.map((s) => s.name)).toEqual(['n2']);
    await t.stop();
  });

  it('this node: unchanged heartbeats and labels do nothing; a pod CIDR change runs a full pass', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    t.cluster.nodes.set('n1', {
      ...t.cluster.nodes.get('n1')!,
      annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
    });
    t.controller.enqueue('n1');
    await settle();
    expect(t.full).toHaveLength(1);
    expect(t.steps).toHaveLength(0);
    t.cluster.nodes.set('n1', { name: 'n1', podCIDRs: ['10.244.9.0/24'], internalIPs: ['10.0.0.1'] });
    t.controller.enqueue('n1');
    await until('full pass for own change', () => t.full.length === 2);
    expect(t.steps).toHaveLength(0);
    await t.stop();
  });

  it('this node: its own annotations coming back as the last pass wanted them run no pass; other values do', async () => {
    const vtep = 'trellis.dev/vtep-mac-v4';
    const direct = 'trellis.dev/direct-subnets-v4';
    const wanted = { [vtep]: '02:00:00:00:00:01', [direct]: undefined };
    const t = perNodeSetup(undefined, { ownAnnotations: () => wanted });
    t.cluster.nodes.set('n1', { ...t.cluster.nodes.get('n1')!, annotations: { [direct]: '10.0.0.0/24' } });
    await until('first full pass', () => t.full.length === 1);
    // The planner never sees this node's own annotations: only peers read them.
    expect(t.full[0]!.self).toEqual({ name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.1'] });
    const self = t.cluster.nodes.get('n1')!;
    // The pass published the MAC and took the subnets away: the Node comes back so.
    t.cluster.nodes.set('n1', { ...self, annotations: { [vtep]: '02:00:00:00:00:01' } });
    t.controller.enqueue('n1');
    await settle();
    expect([t.full.length, t.steps.length]).toEqual([1, 0]);
    // Someone else's value is a change the pass puts right.
    t.cluster.nodes.set('n1', { ...self, annotations: { [vtep]: '02:00:00:00:00:99' } });
    t.controller.enqueue('n1');
    await until('a pass for a foreign MAC', () => t.full.length === 2);
    t.cluster.nodes.set('n1', {
      ...self,
      annotations: { [vtep]: '02:00:00:00:00:01', [direct]: '10.9.0.0/16' },
    });
    t.controller.enqueue('n1');
    await until('a pass for subnets the pass had taken away', () => t.full.length === 3);
    await t.stop();
  });

  it('this node: registered with NetworkUnavailable=True, our False back, then True again: a pass (which puts it back)', async () => {
    // As a cloud's kubelet or route controller registers a node.
    const t = perNodeSetup(undefined, { self: { networkUnavailable: 'NoRouteCreated' } });
    await until('first full pass', () => t.full.length === 1);
    const self = t.cluster.nodes.get('n1')!;
    t.cluster.nodes.set('n1', { ...self, networkUnavailable: undefined }); // our False, back through the watch
    t.controller.enqueue('n1');
    await settle();
    expect(t.full).toHaveLength(1);
    t.cluster.nodes.set('n1', { ...self }); // set True again
    t.controller.enqueue('n1');
    await until('a pass for NetworkUnavailable set True again', () => t.full.length === 2);
    await t.stop();
  });

  it('this node: pod CIDRs taken away and given back as they were run a pass each time (not ready meanwhile)', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.passes.some((p) => p.kind === 'ok'));
    const self = t.cluster.nodes.get('n1')!;
    t.cluster.nodes.set('n1', { ...self, podCIDRs: [] });
    t.controller.enqueue('n1');
    await until('a waiting pass', () => t.passes.at(-1)?.kind === 'waiting');
    expect(t.controller.waitReason).toContain('has no spec.podCIDRs');
    const passes = t.passes.length;
    t.cluster.nodes.set('n1', { ...self });
    t.controller.enqueue('n1');
    await until('a pass after the CIDRs came back', () => t.passes.length > passes);
    expect(t.passes.at(-1)?.kind).toBe('ok');
    expect(t.controller.waitReason).toBeUndefined();
    await t.stop();
  });

  it('this node missing: no step runs, for a relist nor for a watch event; the pass that ends the wait covers both', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    const self = t.cluster.nodes.get('n1')!;
    t.cluster.nodes.delete('n1');
    t.controller.enqueue('n1');
    await until('a waiting pass', () => t.passes.at(-1)?.kind === 'waiting');
    // A relist (onSync) brings a deletion and an addition without naming them; a resync finds them too.
    t.cluster.nodes.delete('n2');
    t.cluster.nodes.set('m2', { name: 'm2', podCIDRs: ['10.244.12.0/24'], internalIPs: ['10.0.0.12'] });
    t.controller.markDirty('test');
    const waited = t.passes.length;
    await until('another waiting pass', () => t.passes.length > waited);
    // A watch event then: held back like the relist's changes, not applied on its own.
    t.cluster.nodes.set('m3', { name: 'm3', podCIDRs: ['10.244.13.0/24'], internalIPs: ['10.0.0.13'] });
    t.controller.enqueue('m3');
    await settle();
    expect(t.steps).toEqual([]);
    t.controller.markDirty('test'); // the periodic resync: still waiting
    await until('a third waiting pass', () => t.passes.length > waited + 1);
    await settle();
    expect(t.steps).toEqual([]);
    expect(t.full).toHaveLength(1);
    t.cluster.nodes.set('n1', self);
    t.controller.enqueue('n1');
    await until('the pass that ends the wait', () => t.full.length === 2);
    expect(t.full[1]!.peers.map((p) => p.name).sort()).toEqual(['m2', 'm3', 'n1']);
    await settle();
    expect(t.steps).toEqual([]); // covered by that pass
    expect(t.controller.waitReason).toBeUndefined();
    // And steps run again after it.
    t.cluster.nodes.set('m4', { name: 'm4', podCIDRs: ['10.244.14.0/24'], internalIPs: ['10.0.0.14'] });
    t.controller.enqueue('m4');
    await until('a step', () => t.steps.length === 1);
    expect(t.steps[0]!.name).toBe('m4');
    await t.stop();
  });

  it('this node without pod CIDRs: a peer step asked for directly is left to the pass that ends the wait', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    const self = t.cluster.nodes.get('n1')!;
    t.cluster.nodes.set('n1', { ...self, podCIDRs: [] });
    t.controller.enqueue('n1');
    await until('a waiting pass', () => t.passes.at(-1)?.kind === 'waiting');
    t.cluster.nodes.set('m3', { name: 'm3', podCIDRs: ['10.244.13.0/24'], internalIPs: ['10.0.0.13'] });
    await t.controller.runNode('m3');
    await settle();
    expect(t.steps).toEqual([]);
    t.cluster.nodes.set('n1', self);
    t.controller.enqueue('n1');
    await until('the pass that ends the wait', () => t.full.length === 2);
    expect(t.full[1]!.peers.map((p) => p.name)).toContain('m3');
    await t.stop();
  });

  it("runs per-node steps while a partial pass's retry waits out its backoff; their own escalations wait for the retry", async () => {
    const sleeps: number[] = [];
    const t = perNodeSetup(() => 'applied', {
      masqFails: () => true,
      sleep: (ms) => {
        sleeps.push(ms);
        return new Promise<void>(() => {}); // a backoff that outlasts the test
      },
    });
    await until('the partial pass and its backoff', () => t.full.length === 1 && sleeps.length === 1);
    t.cluster.nodes.set('n3', { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: ['10.0.0.3'] });
    t.controller.enqueue('n3');
    await until('the step for n3', () => t.steps.some((s) => s.name === 'n3'));
    // The step's masquerade change failed too and asked for a full pass: that waits for the retry.
    await until('the masquerade change tried', () => t.masq.length >= 2 || t.deltas.length >= 1);
    await settle();
    expect(t.full).toHaveLength(1);
    await t.stop();
  });

  it('a remedy (a link back up, this node changed) ends the backoff of a failed pass at once; other requests wait', async () => {
    let failing = true;
    const t = perNodeSetup(() => 'applied', {
      masqFails: () => failing,
      sleep: () => new Promise<void>(() => {}),
    });
    await until('the partial pass', () => t.full.length === 1);
    t.controller.markDirty('periodic resync');
    await settle();
    expect(t.full).toHaveLength(1);
    failing = false;
    t.controller.markDirty('a link routes to peers leave by changed', true);
    await until('the retry, at once', () => t.full.length === 2);
    // It covered the request that waited, and, clean, leaves nothing to retry.
    await settle();
    expect(t.full).toHaveLength(2);
    await t.stop();
  });

  it('a full pass drops the names queued before it started; names queued during it run after it', async () => {
    const t = perNodeSetup();
    await until('first full pass', () => t.full.length === 1);
    t.controller.enqueue('n2');
    t.controller.markDirty('test');
    await until('second full pass', () => t.full.length === 2);
    await settle();
    expect(t.steps).toHaveLength(0);

    const release = t.hold();
    t.controller.markDirty('test');
    await until('third full pass running', () => t.full.length === 3);
    t.controller.enqueue('n2');
    await settle();
    expect(t.steps).toHaveLength(0); // waits: passes and steps never overlap
    release();
    await until('step after the pass', () => t.steps.length === 1);
    expect(t.full).toHaveLength(3);
    await t.stop();
  });
});

/** Whether selfChanges finds anything: a full pass runs. */
function selfChanged(...args: Parameters<typeof selfChanges>): boolean {
  return selfChanges(...args).length > 0;
}

describe('selfChanges', () => {
  const base = {
    name: 'n1',
    podCIDRs: ['10.244.1.0/24'],
    internalIPs: ['10.0.0.1'],
    annotations: { 'trellis.dev/vtep-mac-v4': '02:00:00:00:00:01', other: 'a' },
  };
  it('sees what a full pass reads from this node, and nothing else', () => {
    expect(selfChanged(base, { ...base, annotations: { ...base.annotations, other: 'b' } })).toBe(false);
    expect(selfChanged(base, { ...base, podCIDRs: ['10.244.2.0/24'] })).toBe(true);
    expect(selfChanged(base, { ...base, internalIPs: ['10.0.0.2'] })).toBe(true);
    expect(selfChanged(base, { ...base, annotations: { other: 'a' } })).toBe(true);
  });

  it('names what changed', () => {
    expect(selfChanges(base, { ...base, podCIDRs: ['10.244.2.0/24'], internalIPs: ['10.0.0.2'] })).toEqual([
      'podCIDRs',
      'internalIPs',
    ]);
    // The Node deleted and made again with the same fields (its two events read as one).
    expect(selfChanges({ ...base, uid: 'u1' }, { ...base, uid: 'u2' })).toEqual(['uid']);
    expect(selfChanges({ ...base, uid: 'u1' }, { ...base, uid: 'u1' })).toEqual([]);
    expect(selfChanges(base, { ...base, annotations: { other: 'a' } })).toEqual(['trellis.dev/vtep-mac-v4']);
  });

  it('takes an annotation that reads as this agent published it for its own write, not a change', () => {
    const own = {
      'trellis.dev/vtep-mac-v4': '02:00:00:00:00:02',
      'trellis.dev/direct-subnets-v4': undefined,
    };
    const back = { ...base, annotations: { other: 'a', 'trellis.dev/vtep-mac-v4': '02:00:00:00:00:02' } };
    expect(selfChanged(base, back, own)).toBe(false);
    expect(selfChanges(base, back)).toEqual(['trellis.dev/vtep-mac-v4']);
    expect(
      selfChanges(base, { ...back, annotations: { 'trellis.dev/vtep-mac-v4': '02:00:00:00:00:03' } }, own),
    ).toEqual(['trellis.dev/vtep-mac-v4']);
    const withSubnets = {
      ...base,
      annotations: { ...base.annotations, 'trellis.dev/direct-subnets-v4': '10.0.0.0/24' },
    };
    expect(selfChanges(withSubnets, base)).toEqual(['trellis.dev/direct-subnets-v4']);
    expect(selfChanges(withSubnets, base, own)).toEqual([]);
    expect(selfChanges(withSubnets, back, own)).toEqual([]);
  });

  it('sees NetworkUnavailable set True by someone else, not our own False coming back', () => {
    const unavailable = { ...base, networkUnavailable: 'NoRouteCreated' };
    expect(selfChanged(base, unavailable)).toBe(true);
    expect(selfChanged(unavailable, base)).toBe(false);
    expect(selfChanged(unavailable, { ...unavailable })).toBe(false);
  });
});
