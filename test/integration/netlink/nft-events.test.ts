import { afterAll, describe, expect, it } from 'vitest';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';
import { MasqTableWatch, renderMasqRuleset } from '../../../pkg/masq/index.ts';
import { createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import { NetnsPool, netnsSkipReason, nsExec } from '../../support/netns.ts';

/**
 * nf_tables notifications from the real kernel, in a namespace of the test's own: what the agent's
 * masquerade-table watch is fed, and what it makes of the agent's own applies and of other people's
 * changes.
 */
type Seen = NftablesEvent | { type: 'overflow' };

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe.skipIf(netnsSkipReason !== undefined)(
  'nf_tables notifications (root, real kernel, test namespace)',
  () => {
    const pool = new NetnsPool();
    afterAll(() => pool.cleanup());

    it('report each object change and each commit; the watch tells our applies from anyone else’s', async () => {
      const ns = pool.add('nftev');
      const seen: Seen[] = [];
      const sub = withNetns(ns.path, () =>
        createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e)),
      );
      const ruleset = renderMasqRuleset({
        podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
        clusterCIDRs: ['10.244.0.0/16'],
        noMasqueradeCIDRs: [],
      });
      /** Runs one change and returns its notifications once its commit (generation) arrived. */
      const step = async (run: () => void): Promise<Seen[]> => {
        const from = seen.length;
        run();
        const deadline = Date.now() + 2000;
        while (!seen.slice(from).some((e) => e.type === 'generation') && Date.now() < deadline)
          await sleep(10);
        return seen.slice(from);
      };
      try {
        const applyOnce = await step(() => nsExec(ns.name, 'nft', ['-f', '-'], { input: ruleset }));
        const applyAgain = await step(() => nsExec(ns.name, 'nft', ['-f', '-'], { input: ruleset }));
        const flushChain = await step(() =>
          nsExec(ns.name, 'nft', ['flush', 'chain', 'inet', 'trellis', 'postrouting']),
        );
        const otherTable = await step(() => nsExec(ns.name, 'nft', ['add', 'table', 'ip', 'other']));
        const flushAll = await step(() => nsExec(ns.name, 'nft', ['flush', 'ruleset']));

        const tableEvents = (evs: Seen[]) =>
          evs.flatMap((e) =>
            e.type === 'change' && e.object === 'table' ? [`${e.change} ${e.family} ${e.table}`] : [],
          );
        // The apply deletes and re-creates the table (inet = family 1) in one transaction.
        expect(tableEvents(applyAgain)).toEqual(['del 1 trellis', 'new 1 trellis']);
        expect(
          applyAgain.filter((e) => e.type === 'change' && e.object === 'rule' && e.change === 'new'),
        ).toHaveLength(1);
        expect(applyAgain.at(-1)).toEqual({ type: 'generation' });
        expect(flushChain).toEqual([
          { type: 'change', change: 'del', object: 'rule', family: 1, table: 'trellis' },
          { type: 'generation' },
        ]);
        expect(tableEvents(otherTable)).toEqual(['new 2 other']);
        expect(tableEvents(flushAll).sort()).toEqual(['del 1 trellis', 'del 2 other']);

        const watch = new MasqTableWatch();
        const verdicts = (evs: Seen[]) =>
          evs.flatMap((e) => (e.type === 'overflow' ? [] : [watch.feed(e)])).filter(Boolean);
        expect(verdicts(applyOnce)).toEqual([]);
        expect(verdicts(applyAgain)).toEqual([]);
        expect(verdicts(flushChain)).toEqual([true]);
        expect(verdicts(otherTable)).toEqual([]);
        expect(verdicts(flushAll)).toEqual([true]);
        expect(seen.some((e) => e.type === 'overflow')).toBe(false);
      } finally {
        sub.close();
      }
    });
  },
);
