import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REMEMBERED_NODE_GRACE_MS } from '../../../pkg/agent/agent.ts';
import { delList, type PluginRun } from '../../support/cni-driver.ts';
import { ip, ipJson } from '../../support/netns.ts';
import { POD_NAMESPACE, Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import {
  allRoutes,
  BACKOFF,
  backgroundPing,
  errorLines,
  hasRoute,
  links,
  logsSince,
  monitorRoutes,
  nftTable,
  operatorCli,
  probe,
  sleep,
  within,
} from './support.ts';

/**
 * The agent SIGKILLed while the API server is unreachable, and started again before it comes back.
 * STYLE: "Nothing is deleted before the first full list". What must hold, read from the kernel:
 * a DEL while no agent runs is spooled and completed by the new agent at start; a DEL to the new
 * agent is served at once although it cannot reach the API; ADD is served with the pod CIDRs and
 * MTU the last run saved (state/node.json), and the new pod reaches the other node through the
 * routes the dead agent left; with that file damaged, ADD is refused (try again later) and leaves
 * nothing; no route, nftables rule or pod of the node is touched; pods keep talking across
 * nodes the whole time; the agent reports not ready (log, /readyz) until it can list Nodes, then
 * becomes ready; routes the dead agent left for a Node deleted meanwhile survive until the first full
 * list and go with it, and nothing else changes.
 */
const skip = testbedSkipReason();

/** CNI DEL of a pod through the node's config list, as a runtime stopping it; the pod's netns stays. */
async function del(tb: Testbed, pod: TestbedPod): Promise<PluginRun[]> {
  const node = tb.node(pod.node);
  return delList(
    tb.conflist(pod.node),
    {
      containerId: pod.containerId,
      netns: pod.netnsPath,
      ifname: 'eth0',
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${POD_NAMESPACE};K8S_POD_NAME=${pod.name}`,
      hostNetns: node.ns,
      path: join(node.dir, 'bin'),
    },
    pod.result,
  );
}

function hostVeths(tb: Testbed, node: string): string[] {
  return ipJson<{ ifname: string }[]>(tb.node(node).ns, 'link', 'show', 'type', 'veth')
    .map((l) => l.ifname)
    .filter((n) => n !== 'eth0');
}

function podHasEth0(pod: TestbedPod): boolean {
  return ipJson<{ ifname: string }[]>(pod.ns, 'link', 'show').some((l) => l.ifname === 'eth0');
}

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => !f.startsWith('.')) : [];
}

/** A node's pod CIDRs that no Node in the API has any more. */
const STALE = { v4: '10.244.199.0/24', v6: 'fd00:10:244:c7::/64' };

const title = 'faults: agent SIGKILLed while the API server is unreachable';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let keep: TestbedPod;
  let spooled: TestbedPod;
  let direct: TestbedPod;
  let remote: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    keep = await tb.addPod('node-1');
    spooled = await tb.addPod('node-1');
    direct = await tb.addPod('node-1');
    remote = await tb.addPod('node-2');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('serves DEL (spooled and direct), serves ADD from the remembered pod CIDRs (refuses it without them), deletes nothing and stays not ready until it can list Nodes', async () => {
    const n1 = tb.node('node-1');
    const ipamLeases = join(n1.dir, 'state', 'ipam', 'leases');
    expect(await probe(tb, 'node-1', '/readyz')).toBe(200);
    expect(await probe(tb, 'node-1', '/readyz', 6)).toBe(200);
    const routesBefore = allRoutes(tb, 'node-1');
    const nftBefore = nftTable(tb, 'node-1');
    const leasesBefore = files(ipamLeases);
    const vethsBefore = hostVeths(tb, 'node-1');
    const linksBefore = links(tb, 'node-1');
    expect(leasesBefore.length).toBe(3);
    const monitor = await monitorRoutes(n1.ns);
    const pings = [backgroundPing(remote, keep.v4, 20), backgroundPing(keep, remote.v6, 20)];
    await sleep(300);

    await tb.faults.outage('drop');
    await tb.killAgent('node-1');
    // Routes the dead agent left for a node that is no longer in the API (as if deleted meanwhile): the
    // new agent may remove them only once it has seen a full list of Nodes.
    const n2 = tb.node('node-2').plan;
    ip(n1.ns, 'route', 'add', STALE.v4, 'via', n2.v4, 'proto', '126');
    ip(n1.ns, '-6', 'route', 'add', STALE.v6, 'via', n2.v6, 'proto', '126');
    const hasStale = (): boolean => hasRoute(tb, 'node-1', STALE.v4) && hasRoute(tb, 'node-1', STALE.v6);
    expect(hasStale()).toBe(true);

    // No agent: the shim spools the DEL and answers success (the runtime must not retry forever).
    const spooledRuns = await del(tb, spooled);
    expect(spooledRuns.map((r) => r.code)).toEqual(spooledRuns.map(() => 0));
    expect(files(n1.agent!.spoolDir).length).toBe(1);

    // A new agent, while the API is still down, whose remembered node state is damaged: it cannot know
    // its pod CIDRs.
    const nodeFile = join(n1.dir, 'state', 'node.json');
    const remembered = readFileSync(nodeFile, 'utf8');
    expect(JSON.parse(remembered)).toMatchObject({ node: 'node-1', podCIDRs: n1.plan.podCIDRs });
    writeFileSync(nodeFile, remembered.slice(0, 20));
    const mark = n1.logs.length;
    await tb.startAgent('node-1', { waitReady: false });
    await within(10_000, 'node-1: CNI socket listening', () =>
      logsSince(tb, 'node-1', mark).some((l) => l.msg === 'CNI socket listening'),
    );
    // The spooled DEL was completed at start: its lease is gone, its veth too.
    expect(files(n1.agent!.spoolDir)).toEqual([]);
    const drained = logsSince(tb, 'node-1', mark).find((l) => l.msg === 'spooled DELs drained');
    expect(drained?.completed).toBe(1);
    expect(files(ipamLeases).length).toBe(2);
    await within(3000, 'spooled pod veth removed', () => !podHasEth0(spooled));

    // A DEL straight to the agent that cannot reach the API: served, veth and lease gone.
    const directRuns = await del(tb, direct);
    expect(directRuns.map((r) => r.code)).toEqual(directRuns.map(() => 0));
    expect(files(n1.agent!.spoolDir)).toEqual([]);
    expect(files(ipamLeases).length).toBe(1);
    await within(3000, 'direct pod veth removed', () => !podHasEth0(direct));
    expect(hostVeths(tb, 'node-1').length).toBe(1);

    // ADD: refused with "try again later" (11) while not ready, leaving no lease or veth behind.
    let addError = '';
    await tb.addPod('node-1').catch((err: unknown) => {
      addError = String(err);
    });
    expect(addError).toMatch(/"code":11/);
    expect(addError).toMatch(/not ready/);
    expect(files(ipamLeases).length).toBe(1);
    expect(hostVeths(tb, 'node-1').length).toBe(1);
    expect(
      logsSince(tb, 'node-1', mark).find((l) => String(l.msg).startsWith('remembered node state ignored')),
    ).toBeDefined();

    // Killed again and started with its remembered state intact: ADD is served from it while the
    // API is still down, with an address of the node's pod CIDRs, and the pod reaches the other node.
    await tb.killAgent('node-1');
    writeFileSync(nodeFile, remembered);
    const mark2 = n1.logs.length;
    await tb.startAgent('node-1', { waitReady: false });
    await within(10_000, 'node-1: serving ADD from memory', () =>
      logsSince(tb, 'node-1', mark2).some((l) =>
        String(l.msg).startsWith('serving ADD with the pod CIDRs remembered'),
      ),
    );
    const outage = await tb.addPod('node-1');
    expect(outage.v4.startsWith('10.244.1.')).toBe(true);
    expect(outage.v6.startsWith('fd00:10:244:1:')).toBe(true);
    expect(files(ipamLeases).length).toBe(2);
    expect((await tb.ping(outage.ns, remote.v4)).rttMs).toBeDefined();
    expect((await tb.ping(remote.ns, outage.v6)).rttMs).toBeDefined();
    const mtuOf = (ns: string, dev: string): number | undefined =>
      ipJson<{ ifname: string; mtu: number }[]>(ns, 'link', 'show', dev)[0]?.mtu;
    expect(mtuOf(outage.ns, 'eth0')).toBe(mtuOf(keep.ns, 'eth0'));
    // The default route as the last run's pods have it (auto mode: no route MTU of its own).
    const defaultRoute = (ns: string) =>
      ipJson<{ dst: string; metrics?: { mtu?: number }[] }[]>(ns, 'route', 'show', 'default')[0];
    expect(defaultRoute(outage.ns)).toBeDefined();
    expect(defaultRoute(outage.ns)?.metrics?.[0]?.mtu).toBe(defaultRoute(keep.ns)?.metrics?.[0]?.mtu);
    const outageVeth = hostVeths(tb, 'node-1').find((v) => !vethsBefore.includes(v));
    expect(outageVeth).toBeDefined();

    // Still down for a few seconds: not ready (log and /readyz), alive (/healthz), nothing deleted.
    await sleep(4000);
    const during = logsSince(tb, 'node-1', mark);
    expect(during.some((l) => l.msg === 'trellis agent ready')).toBe(false);
    expect(
      during.some(
        (l) =>
          l.msg === 'waiting before programming the node' &&
          l.reason === 'waiting for the first list of Nodes',
      ),
    ).toBe(true);
    expect(during.some((l) => l.msg === 'node list or watch failed; retrying with backoff')).toBe(true);
    expect(during.some((l) => l.msg === 'reconciled')).toBe(false);
    expect(await probe(tb, 'node-1', '/readyz')).toBe(503);
    expect(await probe(tb, 'node-1', '/healthz')).toBe(200);
    // status and doctor say what the agent last heard from the API server (no other check looks at it).
    const status = operatorCli(tb, 'node-1', 'status');
    expect(status.code).toBe(1);
    expect(status.stdout).toMatch(/^last API failure:\s+\S+Z: list nodes: /m);
    const doctor = operatorCli(tb, 'node-1', 'doctor');
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/the last list or watch of Nodes failed at \S+Z: list nodes: /);
    // What the two DELs took with them: the pods' host routes and their veths' link-local routes.
    // The pod added during the outage brought its own host routes and veth; nothing else may differ.
    const gonePods = [spooled, direct, outage].flatMap((p) => [p.v4, p.v6]);
    const goneVeths = [...vethsBefore.filter((v) => !hostVeths(tb, 'node-1').includes(v)), outageVeth!];
    expect(goneVeths.length).toBe(3);
    const withoutGone = (rs: string[]): string[] =>
      rs.filter((r) => ![...gonePods, ...goneVeths, STALE.v4, STALE.v6].some((a) => r.includes(`"${a}"`)));
    expect(hasStale(), 'stale routes deleted before the first list').toBe(true);
    expect(withoutGone(allRoutes(tb, 'node-1'))).toEqual(withoutGone(routesBefore));
    expect(nftTable(tb, 'node-1')).toBe(nftBefore);
    const linksWithoutGone = (ls: string[]): string[] =>
      ls.filter((l) => !goneVeths.some((v) => l.startsWith(`${v}#`)));
    expect(linksWithoutGone(links(tb, 'node-1'))).toEqual(linksWithoutGone(linksBefore));

    // The API answers again: ready within one backoff step, and still nothing moved.
    await tb.faults.restore();
    const restoredAt = Date.now();
    await within(BACKOFF.maxMs + 5000, 'node-1 ready', () =>
      logsSince(tb, 'node-1', mark).some((l) => l.msg === 'trellis agent ready'),
    );
    const readyMs = Date.now() - restoredAt;
    await tb.waitReady('node-1');
    expect(await probe(tb, 'node-1', '/readyz')).toBe(200);
    // The first full list: the stale routes go, nothing else changes.
    await within(
      3000,
      'stale routes removed after the first list',
      () => !hasRoute(tb, 'node-1', STALE.v4) && !hasRoute(tb, 'node-1', STALE.v6),
    );
    // The first list confirmed the remembered pod CIDRs: nothing released.
    expect(
      logsSince(tb, 'node-1', mark2).some((l) => String(l.msg).startsWith('pod CIDRs confirmed by the API')),
    ).toBe(true);
    const passes = logsSince(tb, 'node-1', mark).filter((l) => l.msg === 'reconciled');
    expect(passes.length).toBeGreaterThan(0);
    for (const p of passes) expect([p.added, p.replaced, p.removalsDeferred]).toEqual([0, 0, 0]);
    expect(passes.reduce((sum, p) => sum + Number(p.removed), 0)).toBe(2);
    expect(withoutGone(allRoutes(tb, 'node-1'))).toEqual(withoutGone(routesBefore));
    expect(nftTable(tb, 'node-1')).toBe(nftBefore);
    expect(linksWithoutGone(links(tb, 'node-1'))).toEqual(linksWithoutGone(linksBefore));
    expect(errorLines(logsSince(tb, 'node-1', mark))).toEqual([]);
    expect(n1.agent!.stderr()).toBe('');

    const results = await Promise.all(pings);
    await monitor.stop();
    // The only route changes on the node: the host routes of the two deleted pods and of the one added
    // during the outage, and the stale routes.
    const churn = monitor.lines.filter((l) => /10\.244\.|fd00:10:244:/.test(l));
    expect(
      churn.every((l) => [...gonePods, STALE.v4, STALE.v6].some((a) => l.includes(a))),
      churn.join('\n'),
    ).toBe(true);
    for (const r of results) {
      expect(r.transmitted, r.output).toBeGreaterThan(200);
      expect(r.transmitted - r.received, r.output).toBe(0);
    }
    console.log(
      `kill-while-api-down: ${JSON.stringify({ readyMs, pings: results.map((r) => `${r.received}/${r.transmitted}`), churn: churn.length })}`,
    );

    // And it works as before: a new pod gets an address and reaches the other node.
    const fresh = await tb.addPod('node-1');
    expect((await tb.ping(fresh.ns, remote.v4)).rttMs).toBeDefined();
    expect((await tb.ping(remote.ns, fresh.v6)).rttMs).toBeDefined();
    expect((await tb.ping(remote.ns, keep.v4)).rttMs).toBeDefined();
  }, 90_000);

  it('behind a partition (the list hangs rather than fails) serves ADD from memory after the grace period', async () => {
    const n1 = tb.node('node-1');
    await tb.waitReady('node-1');
    const mark = n1.logs.length;
    tb.partitionControlPlane(true);
    try {
      await tb.killAgent('node-1');
      const started = Date.now();
      await tb.startAgent('node-1', { waitReady: false });
      await within(REMEMBERED_NODE_GRACE_MS + 5000, 'node-1: serving ADD from memory', () =>
        logsSince(tb, 'node-1', mark).some((l) =>
          String(l.msg).startsWith('serving ADD with the pod CIDRs remembered'),
        ),
      );
      const line = logsSince(tb, 'node-1', mark).find((l) =>
        String(l.msg).startsWith('serving ADD with the pod CIDRs remembered'),
      );
      expect(line?.why).toBe(`no list of Nodes after ${REMEMBERED_NODE_GRACE_MS} ms`);
      expect(Date.now() - started).toBeGreaterThanOrEqual(REMEMBERED_NODE_GRACE_MS);
      const pod = await tb.addPod('node-1');
      expect((await tb.ping(pod.ns, remote.v4)).rttMs).toBeDefined();
      expect(await probe(tb, 'node-1', '/readyz')).toBe(503);
    } finally {
      tb.partitionControlPlane(false);
    }
    // The first list after the partition heals (a SYN retransmission away) makes it ready.
    await within(45_000, 'node-1 ready after the partition', () =>
      logsSince(tb, 'node-1', mark).some((l) => l.msg === 'trellis agent ready'),
    );
    await tb.waitReady('node-1');
  }, 90_000);
});
