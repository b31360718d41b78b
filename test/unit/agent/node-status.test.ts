import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type { ClusterNode } from '../../../pkg/agent/cluster.ts';
import { NodeStatusReporter, REASSERT_MS } from '../../../pkg/agent/node-status.ts';
import { K8sError } from '../../../pkg/k8s/errors.ts';

/** `now` left out: the reporter's own clock. */
function reporter(now?: () => number) {
  const patches: Record<string, string | null>[] = [];
  const networkUp: string[] = [];
  const r = new NodeStatusReporter({
    ...(now === undefined ? {} : { now }),
    kube: {
      annotateNode: async (_name, annotations) => void patches.push({ ...annotations }),
      setNetworkUnavailable: async (name) => void networkUp.push(name),
    },
    nodeName: 'n1',
    log: pino({ level: 'silent' }),
    signal: new AbortController().signal,
  });
  return { r, patches, networkUp };
}

const node = (over: Partial<ClusterNode> = {}): ClusterNode => ({
  name: 'n1',
  podCIDRs: ['10.244.1.0/24'],
  internalIPs: ['10.0.0.1'],
  uid: 'u1',
  resourceVersion: '10',
  ...over,
});
/** A reporter whose NetworkUnavailable writes stay in flight until the test ends them (writes[i]()). */
function heldWrites() {
  const writes: (() => void)[] = [];
  const r = new NodeStatusReporter({
    kube: {
      annotateNode: async () => {},
      setNetworkUnavailable: () => new Promise<void>((resolve) => writes.push(resolve)),
    },
    nodeName: 'n1',
    log: pino({ level: 'silent' }),
    signal: new AbortController().signal,
  });
  return { r, writes };
}

const vteps = [{ family: 4 as const, mac: '0a:00:00:00:00:01' }];
const flush = () => new Promise((r) => setImmediate(r));

describe('NodeStatusReporter', () => {
  it('sends a missing annotation once per version of the Node, again to a newer one still without it', async () => {
    const { r, patches } = reporter();
    r.publishAnnotations(node(), vteps, {});
    r.publishAnnotations(node(), vteps, {}); // our write is not back yet: not sent twice
    await flush();
    expect(patches).toHaveLength(1);
    // The Node re-created under our name (or a relist past our write): newer, and without it.
    r.publishAnnotations(node({ uid: 'u2', resourceVersion: '12' }), vteps, {});
    await flush();
    expect(patches).toHaveLength(2);
    // Shown on the Node: nothing to send; lost again later: sent again.
    r.publishAnnotations(
      node({ resourceVersion: '13', annotations: patches[0] as Record<string, string> }),
      vteps,
      {},
    );
    r.publishAnnotations(node({ resourceVersion: '14' }), vteps, {});
    await flush();
    expect(patches).toHaveLength(3);
  });

  it('retries a failed annotation patch with backoff, without waiting for the next pass; a newer patch replaces it', async () => {
    const sent: Record<string, string | null>[] = [];
    let failures = 2;
    const stop = new AbortController();
    const r = new NodeStatusReporter({
      kube: {
        annotateNode: async (_name, annotations) => {
          sent.push({ ...annotations });
          if (failures-- > 0) throw new Error('503 Service Unavailable');
        },
        setNetworkUnavailable: async () => {},
      },
      nodeName: 'n1',
      log: pino({ level: 'silent' }),
      signal: stop.signal,
      retryBaseMs: 5,
    });
    r.publishAnnotations(node(), vteps, {});
    await vi.waitFor(() => expect(sent).toHaveLength(3));
    await new Promise((res) => setTimeout(res, 50));
    expect(sent).toHaveLength(3); // succeeded on the third: no more
    expect(new Set(sent.map((p) => JSON.stringify(p))).size).toBe(1);

    // Failing for good: a newer patch (the IPv6 device came up) takes the retries over.
    failures = Number.POSITIVE_INFINITY;
    r.publishAnnotations(node({ resourceVersion: '20' }), [{ family: 4, mac: '0a:00:00:00:00:09' }], {});
    await vi.waitFor(() => expect(sent.length).toBeGreaterThanOrEqual(5));
    r.publishAnnotations(
      node({ resourceVersion: '21' }),
      [...vteps, { family: 6, mac: '0a:00:00:00:00:06' }],
      {},
    );
    await vi.waitFor(() => expect(sent.at(-1)).toHaveProperty('trellis.dev/vtep-mac-v6'));
    await new Promise((res) => setTimeout(res, 30));
    const later = sent.slice(sent.findIndex((p) => 'trellis.dev/vtep-mac-v6' in p));
    expect(later.every((p) => 'trellis.dev/vtep-mac-v6' in p)).toBe(true);
    // Stopped: no more tries.
    stop.abort();
    await new Promise((res) => setTimeout(res, 400));
    const n = sent.length;
    await new Promise((res) => setTimeout(res, 400));
    expect(sent).toHaveLength(n);
  });

  it('does not retry a patch the API refuses for good (the Node gone, no right to patch): the next pass does', async () => {
    const sent: Record<string, string | null>[] = [];
    const r = new NodeStatusReporter({
      kube: {
        annotateNode: async (_name, annotations) => {
          sent.push({ ...annotations });
          throw new K8sError('patch node n1', 'nodes "n1" not found', 404, 'NotFound');
        },
        setNetworkUnavailable: async () => {},
      },
      nodeName: 'n1',
      log: pino({ level: 'silent' }),
      signal: new AbortController().signal,
      retryBaseMs: 5,
    });
    r.publishAnnotations(node(), vteps, {});
    await new Promise((res) => setTimeout(res, 100));
    expect(sent).toHaveLength(1);
    // The next pass over the same Node sends it again (nothing is pending any more).
    r.publishAnnotations(node(), vteps, {});
    await flush();
    expect(sent).toHaveLength(2);
  });

  it('after a relist writes again what a view kept from before it lacks (the informer keeps an unchanged view and its version)', async () => {
    const { r, patches, networkUp } = reporter();
    // Written over version 10, NetworkUnavailable=True on it.
    const before = node({ networkUnavailable: 'NoRouteCreated' });
    r.networkUpFor(before);
    r.publishAnnotations(before, vteps, {});
    await flush();
    expect([networkUp.length, patches.length]).toEqual([1, 1]);
    // Our writes landed, then someone set True again and stripped the annotations; the relist found
    // what the informer tracks as it was at 10, and kept that view.
    r.networkUpFor(before);
    r.publishAnnotations(before, vteps, {});
    await flush();
    expect([networkUp.length, patches.length]).toEqual([1, 1]);
    r.relisted();
    r.networkUpFor(before);
    r.publishAnnotations(before, vteps, {});
    await flush();
    expect([networkUp.length, patches.length]).toEqual([2, 2]);
  });

  it('an agent started over a Node already NetworkUnavailable=False writes nothing; True later is put back', async () => {
    const { r, networkUp } = reporter();
    // Its lastTransitionTime says when the network came up: a restart or a rollout must not move it.
    r.networkUpFor(node({ networkUp: true }));
    r.networkUpFor(node({ resourceVersion: '11', networkUp: true }));
    await flush();
    expect(networkUp).toEqual([]);
    r.networkUpFor(node({ resourceVersion: '12', networkUnavailable: 'NoRouteCreated' }));
    await flush();
    expect(networkUp).toEqual(['n1']);
    // A Node without the condition at all (nobody set it): written, once.
    const fresh = reporter();
    fresh.r.networkUpFor(node({ uid: 'u9' }));
    await flush();
    expect(fresh.networkUp).toEqual(['n1']);
  });

  it('a NetworkUnavailable write the API refuses for good is not retried, and the next pass writes it', async () => {
    const tried: string[] = [];
    let refuse = true;
    const r = new NodeStatusReporter({
      kube: {
        annotateNode: async () => {},
        setNetworkUnavailable: async (name) => {
          tried.push(name);
          if (refuse) throw new K8sError('patch node n1 status', 'forbidden', 403, 'Forbidden');
        },
      },
      nodeName: 'n1',
      log: pino({ level: 'silent' }),
      signal: new AbortController().signal,
    });
    r.networkUpFor(node());
    // Longer than the first retry's 500 ms: none comes.
    await new Promise((res) => setTimeout(res, 700));
    expect(tried).toEqual(['n1']);
    refuse = false;
    r.networkUpFor(node());
    await flush();
    expect(tried).toEqual(['n1', 'n1']);
    r.networkUpFor(node({ resourceVersion: '11' }));
    await flush();
    expect(tried).toEqual(['n1', 'n1']); // written now: once per Node object
  });

  it("waits as long as a throttling server asks (429's Retry-After) before sending an annotation again", async () => {
    const sent: number[] = [];
    const start = Date.now();
    const r = new NodeStatusReporter({
      kube: {
        annotateNode: async () => {
          sent.push(Date.now() - start);
          if (sent.length === 1)
            throw new K8sError('patch node n1', 'too many requests', 429, 'TooManyRequests', {
              retryAfterMs: 300,
            });
        },
        setNetworkUnavailable: async () => {},
      },
      nodeName: 'n1',
      log: pino({ level: 'silent' }),
      signal: new AbortController().signal,
      retryBaseMs: 5,
    });
    r.publishAnnotations(node(), vteps, {});
    for (let i = 0; i < 100 && sent.length < 2; i++) await new Promise((res) => setTimeout(res, 50));
    expect(sent).toHaveLength(2);
    expect(sent[1]!).toBeGreaterThanOrEqual(290); // not the 5 ms backoff
  });

  it('writes NetworkUnavailable=False once per Node object', async () => {
    const { r, networkUp } = reporter();
    r.networkUpFor(node());
    r.networkUpFor(node({ resourceVersion: '11' }));
    await flush();
    expect(networkUp).toEqual(['n1']);
    r.networkUpFor(node({ uid: 'u2' }));
    await flush();
    expect(networkUp).toEqual(['n1', 'n1']);
  });

  it('a Node set True while its False is still being written is answered once the write is done', async () => {
    const { r, writes } = heldWrites();
    // A re-created Node (True until the network plugin says otherwise): written False.
    r.networkUpFor(node({ uid: 'u2', networkUnavailable: 'NodeCreated' }));
    expect(writes).toHaveLength(1);
    // Our False lands (rv 11), a cloud controller sets it True again (rv 12), all before our write's
    // answer: the events come while it is in flight.
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '11' }));
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '12', networkUnavailable: 'NoRouteCreated' }));
    expect(writes).toHaveLength(1);
    writes[0]!();
    await flush();
    expect(writes).toHaveLength(2);
    writes[1]!();
    await flush();
    // Only what came last is judged: our own False coming back while a write is in flight is nothing.
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '13' }));
    await flush();
    expect(writes).toHaveLength(2);
  });

  it('a Node that came during the write but predates it does not use up the budget a real True a moment later needs', async () => {
    const { r, writes } = heldWrites();
    r.networkUpFor(node({ uid: 'u2', networkUnavailable: 'NodeCreated' }));
    // A kubelet status update over the True we are answering, before our False lands.
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '11', networkUnavailable: 'NodeCreated' }));
    writes[0]!();
    await flush();
    expect(writes).toHaveLength(2); // judged as it came: True on a newer version
    writes[1]!();
    await flush();
    // A cloud controller really sets it True a moment later: answered, not left for REASSERT_MS.
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '13', networkUnavailable: 'NoRouteCreated' }));
    expect(writes).toHaveLength(3);
    // And it cannot make a fight of it: the next True while a write is in flight meets the budget.
    r.networkUpFor(node({ uid: 'u2', resourceVersion: '15', networkUnavailable: 'NoRouteCreated' }));
    writes[2]!();
    await flush();
    expect(writes).toHaveLength(3);
  });

  it('puts NetworkUnavailable=False back when someone sets it True on the same object, at most once every REASSERT_MS', async () => {
    let now = 1_000;
    const { r, networkUp } = reporter(() => now);
    r.networkUpFor(node());
    await flush();
    expect(networkUp).toHaveLength(1);
    // A pass over the Node as it was when we wrote (True, our False not back yet): nothing.
    r.networkUpFor(node({ networkUnavailable: 'NodeCreated' }));
    await flush();
    expect(networkUp).toHaveLength(1);
    // A cloud route controller (or an etcd restore) sets it True later: a newer Node, put back.
    r.networkUpFor(node({ resourceVersion: '12', networkUnavailable: 'NoRouteCreated' }));
    await flush();
    expect(networkUp).toHaveLength(2);
    // It fights back at once: not again before REASSERT_MS.
    now += 1_000;
    r.networkUpFor(node({ resourceVersion: '14', networkUnavailable: 'NoRouteCreated' }));
    await flush();
    expect(networkUp).toHaveLength(2);
    now += REASSERT_MS;
    r.networkUpFor(node({ resourceVersion: '16', networkUnavailable: 'NoRouteCreated' }));
    await flush();
    expect(networkUp).toHaveLength(3);
    // False on the Node: nothing to do.
    now += REASSERT_MS;
    r.networkUpFor(node());
    await flush();
    expect(networkUp).toHaveLength(3);
  });

  it('times REASSERT_MS on a monotonic clock: the wall clock stepped back does not hold the next put-back off', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    try {
      const { r, networkUp } = reporter();
      r.networkUpFor(node());
      r.networkUpFor(node({ resourceVersion: '12', networkUnavailable: 'NoRouteCreated' }));
      await vi.advanceTimersByTimeAsync(REASSERT_MS);
      r.networkUpFor(node({ resourceVersion: '14', networkUnavailable: 'NoRouteCreated' }));
      await vi.advanceTimersByTimeAsync(0);
      expect(networkUp).toHaveLength(3);
      // NTP steps the wall clock back an hour; then more than REASSERT_MS passes.
      vi.setSystemTime(Date.now() - 3_600_000);
      await vi.advanceTimersByTimeAsync(2 * REASSERT_MS);
      r.networkUpFor(node({ resourceVersion: '16', networkUnavailable: 'NoRouteCreated' }));
      await vi.advanceTimersByTimeAsync(0);
      expect(networkUp).toHaveLength(4);
    } finally {
      vi.useRealTimers();
    }
  });
});
