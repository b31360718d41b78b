import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipJson, nsExec } from '../../support/netns.ts';
import { nodeObject, Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import { errorLines, hasRoute, logsSince, within } from './support.ts';

/**
 * A Node deleted and created again with a NEW pod CIDR while its agent is down (a node rebuilt under
 * the same name, or the controller-manager reallocating CIDRs). The other nodes must drop the old
 * route and add the new one on their own; the node's agent, when it comes back, must adopt the new
 * CIDR: its leases in the old one are invalidated and their veths removed, new pods get addresses
 * from the new one and reach the other nodes, and nothing of the old CIDR is left in any node's
 * kernel (routes, blackholes, veths, nftables sets).
 */
const skip = testbedSkipReason();
const OLD = { v4: '10.244.3.0/24', v6: 'fd00:10:244:3::/64' };
const NEW = { v4: '10.244.103.0/24', v6: 'fd00:10:244:67::/64' };
/** How the old CIDRs' addresses start, as `ip` and `nft` print them. */
const OLD_TEXT = ['10.244.3.', 'fd00:10:244:3:'];

/** Everything of a node's kernel state trellis could hold on to: every route table, links, nftables. */
function kernelText(tb: Testbed, node: string): string {
  const ns = tb.node(node).ns;
  const routes = [4, 6].map((f) => nsExec(ns, 'ip', [`-${f}`, 'route', 'show', 'table', 'all'])).join('\n');
  const addrs = nsExec(ns, 'ip', ['addr', 'show']);
  // Exits 0 with empty output where no table exists; a failure must fail the test, not hide the sets.
  const nft = nsExec(ns, 'nft', ['list', 'ruleset']);
  return `${routes}\n${addrs}\n${nft}`;
}

function leftoversOfOld(text: string): string[] {
  return text.split('\n').filter((l) => OLD_TEXT.some((t) => l.includes(t)));
}

function hostVeths(tb: Testbed, node: string): string[] {
  // eth0 (the node's leg on the fabric) is a veth too.
  return ipJson<{ ifname: string }[]>(tb.node(node).ns, 'link', 'show', 'type', 'veth')
    .map((l) => l.ifname)
    .filter((name) => name !== 'eth0');
}

/** The addresses held by lease files in the node's IPAM directory. */
function leasedAddresses(tb: Testbed, node: string): string[] {
  const dir = join(tb.node(node).dir, 'state', 'ipam', 'leases');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .flatMap((f) => {
      const lease = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { addresses?: { address: string }[] };
      return (lease.addresses ?? []).map((a) => a.address.split('/')[0]!);
    });
}

function podHasEth0(pod: TestbedPod): boolean {
  try {
    execFileSync('ip', ['-n', pod.ns, 'link', 'show', 'eth0'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const title = 'faults: a Node deleted and re-added with a new pod CIDR while its agent is down';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let a: TestbedPod;
  let b: TestbedPod;
  let old1: TestbedPod;
  let old2: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 3 }] });
    a = await tb.addPod('node-1');
    b = await tb.addPod('node-2');
    old1 = await tb.addPod('node-3');
    old2 = await tb.addPod('node-3');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('the other nodes follow the API without the agent: old route removed, new route added', async () => {
    expect((await tb.ping(a.ns, old1.v4)).rttMs).toBeDefined();
    const n3 = tb.node('node-3');
    await tb.killAgent('node-3');
    await tb.api.deleteNode('node-3');
    const timings: Record<string, number> = {};
    for (const n of ['node-1', 'node-2']) {
      timings[`${n}RemovedMs`] = await within(3000, `${n}: old routes to node-3 removed`, () =>
        [OLD.v4, OLD.v6].every((c) => !hasRoute(tb, n, c)),
      );
    }
    const obj = nodeObject(n3.plan) as { spec: Record<string, unknown> };
    await tb.api.createNode({ ...obj, spec: { podCIDR: NEW.v4, podCIDRs: [NEW.v4, NEW.v6] } });
    for (const n of ['node-1', 'node-2']) {
      timings[`${n}AddedMs`] = await within(
        3000,
        `${n}: new routes to node-3`,
        () => hasRoute(tb, n, NEW.v4, n3.plan.v4) && hasRoute(tb, n, NEW.v6, n3.plan.v6),
      );
      // The routes move first; the masquerade set follows right after them (per-node steps update it
      // beside the next steps), so it gets a moment.
      await within(
        3000,
        `${n}: nothing of the old CIDR left`,
        () => leftoversOfOld(kernelText(tb, n)).length === 0,
      );
      expect(leftoversOfOld(kernelText(tb, n))).toEqual([]);
    }
    console.log(`node-readded peers: ${JSON.stringify(timings)}`);
    // Node-3 itself still holds the old state: no agent has touched it.
    expect(hasRoute(tb, 'node-3', OLD.v4)).toBe(true);
    expect(podHasEth0(old1)).toBe(true);
  });

  it('the agent comes back, adopts the new CIDR and drops everything of the old one', async () => {
    const mark = tb.node('node-3').logs.length;
    const vethsBefore = hostVeths(tb, 'node-3');
    expect(vethsBefore.length).toBe(2);
    await tb.startAgent('node-3');
    const lines = logsSince(tb, 'node-3', mark);
    const cidrLine = lines.find((l) => l.msg === 'pod CIDRs known' || l.msg === 'pod CIDRs changed');
    expect(cidrLine?.to).toEqual([NEW.v4, NEW.v6]);
    expect(cidrLine?.invalidatedLeases).toBe(2);
    expect(errorLines(lines)).toEqual([]);

    // The invalidated pods' veths go (the pod side with them), and their leases.
    await within(5000, 'node-3: veths of the old CIDR removed', () => hostVeths(tb, 'node-3').length === 0);
    expect(podHasEth0(old1)).toBe(false);
    expect(podHasEth0(old2)).toBe(false);
    expect(leasedAddresses(tb, 'node-3')).toEqual([]);
    // The new blackholes are there, nothing of the old CIDR is, on any node.
    await within(
      3000,
      'node-3: blackholes for the new CIDRs',
      () =>
        tb.routes('node-3', 4).some((r) => r.type === 'blackhole' && r.dst === NEW.v4) &&
        tb.routes('node-3', 6).some((r) => r.type === 'blackhole' && r.dst === NEW.v6),
    );
    for (const n of ['node-1', 'node-2', 'node-3']) {
      await within(
        3000,
        `${n}: nothing of the old CIDR`,
        () => leftoversOfOld(kernelText(tb, n)).length === 0,
      );
    }
    const logged = lines.filter((l) => JSON.stringify(l).includes(old1.containerId.slice(0, 12)));
    expect(logged.length, 'the invalidated attachment is named in the log').toBeGreaterThan(0);
  });

  it('new pods on the node get addresses from the new CIDR and reach the other nodes', async () => {
    const c = await tb.addPod('node-3');
    expect(c.v4.startsWith('10.244.103.')).toBe(true);
    expect(c.v6.startsWith('fd00:10:244:67:')).toBe(true);
    const matrix = await tb.connectivityMatrix({ pods: [a, b, c] });
    expect(matrix.failures).toEqual([]);
    expect(leasedAddresses(tb, 'node-3').sort()).toEqual([c.v4, c.v6].sort());
  });
});
