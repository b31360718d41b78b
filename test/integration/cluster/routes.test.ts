import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, nsExec, nsSysctl } from '../../support/netns.ts';
import { Testbed, type TestbedNode, testbedSkipReason } from '../../support/testbed/index.ts';

/**
 * Node lifecycle as the agents see it through the API server: Node objects added and deleted at
 * runtime, and routes tampered with by hand. Assertions read `ip -j route show proto 126` in the
 * node namespaces; times are measured from the API call (or the manual deletion).
 */
const skip = testbedSkipReason();

type Route = { dst: string; gateway?: string; dev?: string; type?: string };

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until `pred` holds; returns the elapsed ms, or throws with the last value after `timeoutMs`. */
async function within(timeoutMs: number, what: string, pred: () => boolean): Promise<number> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await sleep(20);
  }
  return Date.now() - start;
}

function routeTo(peer: TestbedNode, family: 4 | 6): Route {
  return {
    dst: peer.plan.podCIDRs[family === 4 ? 0 : 1],
    gateway: family === 4 ? peer.plan.v4 : peer.plan.v6,
    dev: 'eth0',
  };
}

function hasRoute(routes: Route[], want: Route): boolean {
  return routes.some((r) => r.dst === want.dst && r.gateway === want.gateway && r.dev === want.dev);
}

const title = 'cluster: routes follow the Node objects (real agents, test API server)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }] });
    await tb.addPod('node-1');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('a node added to the cluster gets routes on every other node, and its pods are reachable', async () => {
    const before = tb.nodes();
    // A route trellis does not own, pointing into the pod range: it must survive every reconcile.
    ip(before[0]!.ns, 'route', 'add', '10.244.200.0/24', 'via', before[1]!.plan.v4, 'proto', 'static');
    const added = await tb.addNode();
    for (const node of before) {
      for (const family of [4, 6] as const) {
        await within(10_000, `${node.name}: route to ${added.name} IPv${family}`, () =>
          hasRoute(tb.routes(node.name, family), routeTo(added, family)),
        );
      }
    }
    const [peerRoutes4, peerRoutes6] = [tb.routes(added.name, 4), tb.routes(added.name, 6)];
    for (const node of before) {
      expect(hasRoute(peerRoutes4, routeTo(node, 4))).toBe(true);
      expect(hasRoute(peerRoutes6, routeTo(node, 6))).toBe(true);
    }
    const newPod = await tb.addPod(added.name);
    const oldPod = tb.pods().find((p) => p.node === 'node-1')!;
    expect((await tb.ping(newPod.ns, oldPod.v4)).rttMs).toBeDefined();
    expect((await tb.ping(oldPod.ns, newPod.v6)).rttMs).toBeDefined();
    const foreign = ip(before[0]!.ns, 'route', 'show', '10.244.200.0/24');
    expect(foreign).toContain('proto static');
    ip(before[0]!.ns, 'route', 'del', '10.244.200.0/24', 'proto', 'static');
  });

  it('a node deleted from the cluster loses its routes on every other node; the rest stay', async () => {
    const gone = tb.nodes().at(-1)!;
    const survivors = tb.nodes().filter((n) => n !== gone);
    const keep = survivors.flatMap((n) =>
      ([4, 6] as const).map(
        (family) =>
          [
            n.name,
            family,
            tb.routes(n.name, family).filter((r) => r.dst !== routeTo(gone, family).dst),
          ] as const,
      ),
    );
    await tb.deleteNode(gone.name);
    for (const node of survivors) {
      for (const family of [4, 6] as const) {
        await within(10_000, `${node.name}: route to deleted ${gone.name} IPv${family} removed`, () =>
          tb.routes(node.name, family).every((r) => r.dst !== routeTo(gone, family).dst),
        );
      }
    }
    for (const [name, family, routes] of keep) {
      expect(tb.routes(name, family), `${name} IPv${family}`).toEqual(routes);
    }
  });

  it('a route deleted by hand comes back within about a second', async () => {
    const [a, b] = tb.nodes();
    for (const family of [4, 6] as const) {
      const want = routeTo(b!, family);
      expect(hasRoute(tb.routes(a!.name, family), want)).toBe(true);
      // By key: the route names a nexthop object of its own, and an IPv4 delete that names the gateway
      // does not match such a route (ESRCH). `ip route del` fails unless it deleted the route; no look
      // in between: the agent may have put it back before a second `ip` has started.
      ip(a!.ns, `-${family}`, 'route', 'del', want.dst, 'proto', '126');
      await within(10_000, `${a!.name}: IPv${family} route to ${b!.name} restored`, () =>
        hasRoute(tb.routes(a!.name, family), want),
      );
    }
  });

  it('with nexthop_compat_mode=0 a route deleted by hand comes back as fast: its notification names only the object', async () => {
    const [a, b] = tb.nodes();
    // The kernel then leaves the gateway out of route dumps and notifications; the agent's watch sees
    // a route of its protocol that names a nexthop object, nothing more.
    nsSysctl(a!.ns, 'net.ipv4.nexthop_compat_mode', '0');
    try {
      for (const family of [4, 6] as const) {
        const dst = routeTo(b!, family).dst;
        const listed = () => tb.routes(a!.name, family).find((r) => r.dst === dst);
        expect(listed()).toBeDefined();
        expect(listed()).not.toHaveProperty('gateway');
        // `ip route del` fails unless it deleted the route; no look in between: the agent may have
        // put it back before a second `ip` has started.
        ip(a!.ns, `-${family}`, 'route', 'del', dst, 'proto', '126');
        await within(
          10_000,
          `${a!.name}: IPv${family} route to ${b!.name} restored`,
          () => listed() !== undefined,
        );
      }
    } finally {
      nsSysctl(a!.ns, 'net.ipv4.nexthop_compat_mode', '1');
    }
    for (const family of [4, 6] as const) {
      expect(hasRoute(tb.routes(a!.name, family), routeTo(b!, family))).toBe(true);
    }
  });

  it('an IPv4 route whose nexthop object is deleted by hand comes back within about a second', async () => {
    const [a, b] = tb.nodes();
    const want = routeTo(b!, 4);
    // The kernel drops IPv4 routes with their object without a route notification (IPv6 routes do
    // get one): only the object's deletion tells the agent.
    // What the flush took is read from its own output, not by a look at the routes after it: the agent
    // may have put the route back before a second `ip` has started.
    expect(ip(a!.ns, '-4', 'nexthop', 'flush', 'protocol', '126')).toMatch(/^Flushed [1-9]\d* nexthops/m);
    expect(hasRoute(tb.routes(a!.name, 6), routeTo(b!, 6))).toBe(true);
    await within(10_000, `${a!.name}: IPv4 route to ${b!.name} restored`, () =>
      hasRoute(tb.routes(a!.name, 4), want),
    );
  });

  it('the uplink losing carrier: the routes the kernel drops with it (IPv4 silently) are back within about a second of the carrier', async () => {
    const [a, b] = tb.nodes();
    const wanted = [routeTo(b!, 4), routeTo(b!, 6)] as const;
    // A cable pulled: the node's eth0 is a veth whose other end is its port on the fabric's bridge.
    ip(tb.fabricNs, 'link', 'set', `n${a!.plan.index}`, 'down');
    try {
      // The kernel deletes the nexthop objects on a device without carrier, and the routes through
      // them (linkwatch applies the change within about a second); IPv4 announces neither.
      await within(5000, `${a!.name}: routes through eth0 dropped by the kernel`, () =>
        wanted.every((w, i) => !hasRoute(tb.routes(a!.name, i === 0 ? 4 : 6), w)),
      );
    } finally {
      ip(tb.fabricNs, 'link', 'set', `n${a!.plan.index}`, 'up');
    }
    // Without a route notification only the link's state says they must be put back: the resync is 60 s.
    await within(10_000, `${a!.name}: routes to ${b!.name} back with the carrier`, () =>
      wanted.every((w, i) => hasRoute(tb.routes(a!.name, i === 0 ? 4 : 6), w)),
    );
    const pod = tb.pods().find((p) => p.node === 'node-1')!;
    const peerPod = await tb.addPod(b!.name);
    expect((await tb.ping(pod.ns, peerPod.v4)).rttMs).toBeDefined();
  });

  it('a blackhole for its own pod CIDR deleted by hand comes back too', async () => {
    const a = tb.nodes()[0]!;
    ip(a.ns, 'route', 'del', 'blackhole', a.plan.podCIDRs[0]);
    await within(10_000, `${a.name}: own blackhole restored`, () =>
      tb.routes(a.name, 4).some((r) => r.type === 'blackhole' && r.dst === a.plan.podCIDRs[0]),
    );
  });

  it("a route of ours replaced by someone else's is reported at once; when that one goes, ours is back within about a second", async () => {
    const [a, b] = tb.nodes();
    const conflicts = (mark: number, dst: string): number =>
      a!.logs
        .slice(mark)
        .filter(
          (l) =>
            l.msg === 'route not programmed: its prefix is held by a route trellis does not own' &&
            l.route === dst,
        ).length;
    for (const family of [4, 6] as const) {
      const want = routeTo(b!, family);
      expect(hasRoute(tb.routes(a!.name, family), want)).toBe(true);
      const mark = a!.logs.length;
      // An operator's static route to the same prefix (the resync is 60 s: only the watch can be this quick).
      ip(
        a!.ns,
        `-${family}`,
        'route',
        'replace',
        want.dst,
        'via',
        want.gateway!,
        'dev',
        'eth0',
        'proto',
        'static',
      );
      expect(hasRoute(tb.routes(a!.name, family), want)).toBe(false);
      await within(10_000, `${a!.name}: IPv${family} conflict reported`, () => conflicts(mark, want.dst) > 0);
      // trellis never overwrites it: it is still the operator's.
      expect(hasRoute(tb.routes(a!.name, family), want)).toBe(false);
      ip(a!.ns, `-${family}`, 'route', 'del', want.dst, 'proto', 'static');
      await within(
        10_000,
        `${a!.name}: IPv${family} route to ${b!.name} back after the foreign one went`,
        () => hasRoute(tb.routes(a!.name, family), want),
      );
    }
  });

  it('forwarding switched off behind its back (a sysctl reload) is back on after the next pass, and logged', async () => {
    const a = tb.nodes()[0]!;
    const forwarding = (key: string): string => nsExec(a.ns, 'cat', [`/proc/sys/${key}`]).trim();
    const mark = a.logs.length;
    nsSysctl(a.ns, 'net.ipv4.ip_forward', '0');
    nsSysctl(a.ns, 'net.ipv6.conf.all.forwarding', '0');
    // Any full pass does it; a route of ours deleted by hand asks for one at once.
    ip(a.ns, 'route', 'del', 'blackhole', a.plan.podCIDRs[0]);
    await within(10_000, `${a.name}: forwarding back on`, () =>
      ['net/ipv4/ip_forward', 'net/ipv6/conf/all/forwarding'].every((k) => forwarding(k) === '1'),
    );
    const lines = (): Record<string, unknown>[] =>
      a.logs.slice(mark).filter((l) => String(l.msg).startsWith('IP forwarding was off'));
    // The lines come through the agent's stdout pipe, read between the polls above (spawnSync blocks).
    await within(10_000, `${a.name}: forwarding logged`, () => lines().length >= 2);
    expect(
      lines()
        .map((l) => [l.sysctl, l.was])
        .sort(),
    ).toEqual([
      ['net/ipv4/ip_forward', '0'],
      ['net/ipv6/conf/all/forwarding', '0'],
    ]);
  });
});
