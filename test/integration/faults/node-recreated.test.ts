import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeObject, Testbed, type TestbedPod, testbedSkipReason } from '../../support/testbed/index.ts';
import { within } from './support.ts';

const skip = testbedSkipReason();

interface NodeObject {
  metadata: { uid?: string; annotations?: Record<string, string> };
  status?: { conditions?: { type: string; status: string; reason?: string }[] };
}

/** The trellis.dev annotations and the NetworkUnavailable condition the agent writes to its Node. */
function written(node: NodeObject): { annotations: string[]; networkUp: boolean } {
  const annotations = Object.keys(node.metadata.annotations ?? {}).filter((k) =>
    k.startsWith('trellis.dev/'),
  );
  const cond = node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
  return {
    annotations: annotations.sort(),
    networkUp: cond?.status === 'False' && cond.reason === 'TrellisIsUp',
  };
}

const noRouteCreated = {
  type: 'NetworkUnavailable',
  status: 'True',
  reason: 'NoRouteCreated',
  message: 'test',
};

const title = 'faults: a Node deleted and re-created under the same name while its agent runs';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let far: TestbedPod;
  let near: TestbedPod;

  beforeAll(async () => {
    tb = await Testbed.create({ mode: 'vxlan', segments: [{ nodes: 2 }] });
    near = await tb.addPod('node-1');
    far = await tb.addPod('node-2');
  }, 90_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('the agent writes its annotations, its coverage report and NetworkUnavailable=False to the new object too, and again when it is set True again', async () => {
    const before = written((await tb.api.getNode('node-1')) as unknown as NodeObject);
    expect(before.networkUp).toBe(true);
    expect(before.annotations).toEqual(
      expect.arrayContaining(['trellis.dev/vtep-mac-v4', 'trellis.dev/vtep-mac-v6']),
    );
    const oldUid = ((await tb.api.getNode('node-1')) as unknown as NodeObject).metadata.uid;

    // As `kubectl delete node` and a cloud's kubelet registering it again: a bare object, same pod
    // CIDRs, NetworkUnavailable=True until the network plugin says otherwise.
    await tb.api.deleteNode('node-1');
    const object = nodeObject(tb.node('node-1').plan) as { status: { conditions: unknown[] } };
    object.status.conditions.push(noRouteCreated);
    await tb.api.createNode(object);
    const fresh = () => tb.api.getNode('node-1') as Promise<unknown> as Promise<NodeObject>;
    expect((await fresh()).metadata.uid).not.toBe(oldUid);
    let now = written(await fresh());
    for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
      now = written(await fresh());
      if (now.networkUp && now.annotations.length === before.annotations.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(now).toEqual(before);
    // Set True again on the same object (the cloud's route controller): put back at once, not at the
    // next resync, although the object came with it True.
    await tb.api.patchNodeStatus('node-1', { conditions: [noRouteCreated] });
    for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
      now = written(await fresh());
      if (now.networkUp) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(now.networkUp).toBe(true);
    // node-2 still tunnels to node-1's pods (it needs node-1's VTEP MAC from the new object).
    expect((await tb.ping(far.ns, near.v4)).rttMs).toBeDefined();
  });

  it('NetworkUnavailable set True by someone else (a cloud route controller, an etcd restore) is set False again at once', async () => {
    const fresh = async () => written((await tb.api.getNode('node-2')) as unknown as NodeObject);
    expect((await fresh()).networkUp).toBe(true);
    await tb.api.patchNodeStatus('node-2', { conditions: [noRouteCreated] });
    let up = false;
    for (const deadline = Date.now() + 5000; !up && Date.now() < deadline; ) {
      up = (await fresh()).networkUp;
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
    expect(up).toBe(true);
    expect(
      tb
        .node('node-2')
        .logs.find(
          (l) =>
            l.msg === 'NetworkUnavailable=True was set on this Node by someone else; setting it False again',
        ),
    ).toMatchObject({ level: 'warn', reason: 'NoRouteCreated' });
  });

  it("an agent restarted over its Node's NetworkUnavailable=False leaves the condition as it was (its lastTransitionTime: when the network came up)", async () => {
    type Condition = { type: string; status: string; lastTransitionTime?: string };
    const condition = async (): Promise<Condition | undefined> =>
      (
        (await tb.api.getNode('node-2')) as unknown as { status?: { conditions?: Condition[] } }
      ).status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
    const before = await condition();
    expect(before).toMatchObject({ status: 'False' });
    // A write now would carry a later second than the one there.
    await new Promise((r) => setTimeout(r, 1100));
    const agent = await tb.restartAgent('node-2', { signal: 'SIGTERM' });
    await agent.ready();
    await within(5000, 'the first pass after the restart', () =>
      agent.logs.some((l) => l.msg === 'trellis agent ready'),
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(await condition()).toEqual(before);
  });

  it('while its Node is gone the agent refuses ADD (code 11, saying why): the pod CIDR may be given to another node', async () => {
    const agent = tb.node('node-1');
    const waiting = (): boolean =>
      agent.logs.some(
        (l) =>
          l.msg === 'waiting before programming the node' &&
          l.reason === "Node node-1 is not in the API, or its object is unusable (see 'Node object skipped')",
      );
    await tb.api.deleteNode('node-1');
    for (const deadline = Date.now() + 5000; !waiting() && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(waiting()).toBe(true);
    await expect(tb.addPod('node-1')).rejects.toThrow(
      /"code":11,"msg":"trellis agent is not ready yet: Node node-1 is not in the API, or its object is unusable \(see 'Node object skipped'\)"/,
    );
    // The kubelet registers it again: pods start again, and the old ones still talk.
    await tb.api.createNode(nodeObject(tb.node('node-1').plan));
    let pod: TestbedPod | undefined;
    for (const deadline = Date.now() + 5000; pod === undefined && Date.now() < deadline; ) {
      pod = await tb.addPod('node-1').catch(() => undefined);
      if (pod === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    expect(pod).toBeDefined();
    expect((await tb.ping(far.ns, pod!.v4)).rttMs).toBeDefined();
    expect((await tb.ping(far.ns, near.v4)).rttMs).toBeDefined();
  });
});
