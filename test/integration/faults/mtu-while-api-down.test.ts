import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipJson } from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { logsSince, within } from './support.ts';

/**
 * An agent restarted with another --mtu while the API server is unreachable serves ADD from the pod
 * CIDRs it remembers. The runtime hands its pods the MTU of the config list in place, the last run's:
 * the list must say the new MTU before those pods come, not only once the API answers.
 */
const skip = testbedSkipReason();

const title = 'faults: the MTU changed while the API server is unreachable';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 1 }] });
  }, 90_000);
  afterAll(async () => {
    if (tb === undefined) return;
    await tb.faults.restore();
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('--mtu 1400 at a restart during an outage: the list says 1400 and a pod added then gets it', async () => {
    expect(tb.conflist('node-1').plugins[0]).toMatchObject({ type: 'trellis', mtu: 1500 });
    await tb.faults.outage('drop');
    await tb.stopAgent('node-1');
    const mark = tb.node('node-1').logs.length;
    await tb.startAgent('node-1', { waitReady: false, args: ['--mtu', '1400'] });
    await within(30_000, 'node-1: serving ADD from memory', () =>
      logsSince(tb, 'node-1', mark).some((l) =>
        String(l.msg).startsWith('serving ADD with the pod CIDRs remembered'),
      ),
    );
    await within(
      10_000,
      'the list rewritten with 1400',
      () => tb.conflist('node-1').plugins[0]?.mtu === 1400,
    );
    const pod = await tb.addPod('node-1');
    expect(ipJson<{ mtu: number }[]>(pod.ns, 'link', 'show', 'eth0')[0]?.mtu).toBe(1400);
    // Still not ready: the API decides that.
    expect(logsSince(tb, 'node-1', mark).some((l) => l.msg === 'trellis agent ready')).toBe(false);
  }, 90_000);
});
