import { afterEach, describe, expect, it, vi } from 'vitest';
import type { IntervalSetChange } from '../../../pkg/datapath/ports.ts';
import type { MasqOptions } from '../../../pkg/masq/render.ts';
import { renderMasqRuleset } from '../../../pkg/masq/render.ts';
import { MasqSyncer, RELIST_QUIET_MS, type SetElementWriter } from '../../../pkg/masq/sync.ts';
import { readOnChange } from '../../../pkg/read-on-change.ts';

function syncer(): { s: MasqSyncer; applied: string[] } {
  const applied: string[] = [];
  return {
    s: new MasqSyncer({
      apply: async (text: string) => {
        applied.push(text);
      },
    }),
    applied,
  };
}

describe('MasqSyncer', () => {
  const opts = (): MasqOptions => ({
    podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
    clusterCIDRs: ['10.244.0.0/24', '10.244.1.0/24'],
    noMasqueradeCIDRs: [],
  });

  it('applies once for unchanged options, again after invalidate (the resync), and what it renders is current', async () => {
    const { s, applied } = syncer();
    expect(await s.sync(opts())).toBe('applied');
    expect(await s.sync(opts())).toBe('unchanged');
    s.invalidate();
    expect(await s.sync(opts())).toBe('applied');
    expect(applied).toEqual([renderMasqRuleset(opts()), renderMasqRuleset(opts())]);
  });

  it('resync: applies again only when the kernel differs from its listing after the last apply, or none is current', async () => {
    let kernel = 'listing 1';
    const applied: string[] = [];
    const updates: IntervalSetChange[][] = [];
    const s = new MasqSyncer(
      {
        apply: async (text: string) => {
          applied.push(text);
        },
        snapshot: async () => kernel,
      },
      { port: 7, update: async (_table, changes) => void updates.push([...changes]) },
    );
    expect(await s.sync(opts())).toBe('applied');
    s.resync();
    expect(await s.sync(opts())).toBe('unchanged'); // the kernel as listed: left alone
    kernel = 'listing 2'; // changed behind the watch's back
    s.resync();
    expect(await s.sync(opts())).toBe('applied');
    s.resync();
    expect(await s.sync(opts())).toBe('unchanged'); // listed again after that apply
    // Set elements changed in place: the listing no longer describes the kernel, the resync applies.
    expect(await s.sync({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, '10.250.0.0/24'] })).toBe(
      'updated',
    );
    s.resync();
    expect(await s.sync({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, '10.250.0.0/24'] })).toBe(
      'applied',
    );
    expect(applied).toHaveLength(3);
    expect(updates).toHaveLength(1);
    // Without a snapshot (an older runner), a resync is an invalidate.
    const { s: plain, applied: plainApplied } = syncer();
    await plain.sync(opts());
    plain.resync();
    expect(await plain.sync(opts())).toBe('applied');
    expect(plainApplied).toHaveLength(2);
  });

  describe('resync with the ruleset generation', () => {
    /** A fake kernel: every apply is a committed transaction; `race` commits one while a listing runs. */
    function withGeneration() {
      const kernel = { text: 'listing 1', generation: 1, snapshots: 0, race: false };
      // The listing as cmd/agent/adapters.ts wraps it: taken again only once the generation moved.
      const snapshot = readOnChange(
        async (_table?: string) => {
          kernel.snapshots++;
          if (kernel.race) {
            kernel.race = false;
            kernel.generation++;
          }
          return kernel.text;
        },
        { generation: async () => kernel.generation, sameArgs: ([a], [b]) => a === b },
      );
      const s = new MasqSyncer({
        apply: async () => {
          kernel.generation++;
        },
        snapshot,
      });
      return { s, kernel };
    }

    it('lists the table only when a transaction was committed since the last listing', async () => {
      const { s, kernel } = withGeneration();
      expect(await s.sync(opts())).toBe('applied');
      expect(kernel.snapshots).toBe(1);
      s.resync();
      expect(await s.sync(opts())).toBe('unchanged');
      expect(kernel.snapshots).toBe(1); // no transaction since: not listed
      kernel.generation++; // another table's
      s.resync();
      expect(await s.sync(opts())).toBe('unchanged');
      expect(kernel.snapshots).toBe(2);
      s.resync();
      expect(await s.sync(opts())).toBe('unchanged');
      expect(kernel.snapshots).toBe(2);
      kernel.generation++; // ours, its notification lost
      kernel.text = 'listing 2';
      s.resync();
      expect(await s.sync(opts())).toBe('applied');
      expect(kernel.snapshots).toBe(4);
    });

    it('a transaction committed while the table was being listed brings the listing back next time', async () => {
      const { s, kernel } = withGeneration();
      kernel.race = true;
      expect(await s.sync(opts())).toBe('applied');
      s.resync();
      expect(await s.sync(opts())).toBe('unchanged');
      expect(kernel.snapshots).toBe(2); // the generation read before the first listing had moved on
      s.resync();
      expect(await s.sync(opts())).toBe('unchanged');
      expect(kernel.snapshots).toBe(2);
    });
  });

  describe('after in-place changes settle', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    /** A syncer over a fake kernel whose listing is `kernel.text`; snapshots wait for `kernel.hold`. */
    function settling() {
      vi.useFakeTimers();
      const kernel = { text: 'table as applied', snapshots: 0, hold: undefined as Promise<void> | undefined };
      const applied: string[] = [];
      const s = new MasqSyncer(
        {
          apply: async (text: string) => {
            applied.push(text);
          },
          snapshot: async () => {
            kernel.snapshots++;
            const text = kernel.text;
            await kernel.hold;
            return text;
          },
        },
        { port: 7, update: async () => {} },
      );
      return { s, kernel, applied };
    }
    const grown = (): MasqOptions => ({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, '10.250.0.0/24'] });

    it('the table is listed again, and the resync leaves it (and its counters) alone', async () => {
      const { s, kernel, applied } = settling();
      expect(await s.sync(opts())).toBe('applied');
      // A Node came (per-node step) and another went (a full pass's sync): both in place.
      expect(await s.changeCluster([], ['10.250.0.0/24'])).toBe('updated');
      expect(await s.sync(grown())).toBe('unchanged');
      expect(await s.changeCluster(['10.244.1.0/24'], [])).toBe('updated');
      kernel.text = 'table with the new elements';
      await vi.advanceTimersByTimeAsync(RELIST_QUIET_MS - 10);
      expect(kernel.snapshots).toBe(1); // the one after the apply: not yet quiet for long enough
      await vi.advanceTimersByTimeAsync(20);
      expect(kernel.snapshots).toBe(2);
      const shrunk: MasqOptions = { ...grown(), clusterCIDRs: ['10.244.0.0/24', '10.250.0.0/24'] };
      s.resync();
      expect(await s.sync(shrunk)).toBe('unchanged');
      expect(applied).toHaveLength(1);
      // Changed behind the watch's back after that listing: the resync applies.
      kernel.text = "someone else's table";
      s.resync();
      expect(await s.sync(shrunk)).toBe('applied');
      expect(applied).toHaveLength(2);
    });

    it('a listing that a write or an invalidate overtook is not the reference', async () => {
      const { s, kernel, applied } = settling();
      expect(await s.sync(opts())).toBe('applied');
      expect(await s.changeCluster([], ['10.250.0.0/24'])).toBe('updated');
      let release: () => void = () => {};
      kernel.hold = new Promise((r) => (release = r));
      await vi.advanceTimersByTimeAsync(RELIST_QUIET_MS);
      expect(kernel.snapshots).toBe(2); // under way: another Node changes meanwhile
      expect(await s.changeCluster([], ['10.251.0.0/24'])).toBe('updated');
      kernel.hold = undefined;
      release();
      await vi.advanceTimersByTimeAsync(0);
      const both: MasqOptions = { ...opts(), clusterCIDRs: [...grown().clusterCIDRs, '10.251.0.0/24'] };
      s.resync();
      expect(await s.sync(both)).toBe('applied'); // no listing of the last state: applied whole
      // After an invalidate, a pending listing is dropped: the next sync applies anyway.
      expect(await s.changeCluster(['10.251.0.0/24'], [])).toBe('updated');
      s.invalidate();
      await vi.advanceTimersByTimeAsync(RELIST_QUIET_MS * 2);
      expect(kernel.snapshots).toBe(3); // the one after the last apply only
      expect(await s.sync(grown())).toBe('applied');
      expect(applied).toHaveLength(3);
    });
  });

  it('resync with a refused clamp: nft -c tries it, and only a clamp the kernel now takes changes the table', async () => {
    let modules = false; // nft_exthdr, nft_rt
    const applied: string[] = [];
    const refuse = async (text: string): Promise<void> => {
      if (!modules && text.includes('maxseg'))
        throw new Error('Could not process rule: No such file or directory');
    };
    const s = new MasqSyncer({
      apply: async (text: string) => {
        await refuse(text);
        applied.push(text);
      },
      check: refuse,
      snapshot: async () => (applied.at(-1)?.includes('maxseg') ? 'with clamp' : 'without clamp'),
    });
    const clamped: MasqOptions = { ...opts(), clampMssInto: ['trellis.v4'] };
    expect(await s.sync(clamped)).toBe('applied');
    expect(s.clampRefused).toContain('No such file or directory');
    s.resync();
    expect(await s.sync(clamped)).toBe('unchanged'); // still refused: the table and its counters stay
    modules = true;
    s.resync();
    expect(await s.sync(clamped)).toBe('applied');
    expect(s.clampRefused).toBeUndefined();
    expect(applied.map((t) => t.includes('maxseg'))).toEqual([false, true]);
  });

  it('a refused clamp is not tried again at every change of the nodes (same shape): only at a resync', async () => {
    const tried: boolean[] = [];
    const refuse = async (text: string): Promise<void> => {
      if (text.includes('maxseg')) throw new Error('Could not process rule: No such file or directory');
    };
    const s = new MasqSyncer({
      apply: async (text: string) => {
        tried.push(text.includes('maxseg'));
        await refuse(text);
      },
      check: refuse,
    });
    const clamped = (extra: string[]): MasqOptions => ({
      ...opts(),
      clusterCIDRs: [...opts().clusterCIDRs, ...extra],
      clampMssInto: ['trellis.v4'],
    });
    expect(await s.sync(clamped([]))).toBe('applied');
    expect(tried).toEqual([true, false]);
    // Nodes come and go: the elements change, the shape does not. No clamp tried, no check run.
    expect(await s.sync(clamped(['10.251.0.0/24']))).not.toBe('unchanged');
    expect(await s.sync(clamped(['10.251.0.0/24', '10.252.0.0/24']))).not.toBe('unchanged');
    expect(tried.slice(2)).not.toContain(true);
    expect(s.clampRefused).toContain('No such file or directory');
  });

  it('an invalidate while nft runs is not lost: the next sync applies again', async () => {
    // Someone flushes the ruleset right after our transaction, and the watch's invalidate() lands
    // before our nft has exited: what was applied may be gone already.
    let release: () => void = () => {};
    let applies = 0;
    const s = new MasqSyncer({
      apply: (): Promise<void> => {
        applies++;
        return applies === 1 ? new Promise((r) => (release = r)) : Promise.resolve();
      },
    });
    const first = s.sync(opts());
    s.invalidate();
    release();
    expect(await first).toBe('applied');
    expect(await s.sync(opts())).toBe('applied');
    expect(applies).toBe(2);
    expect(await s.sync(opts())).toBe('unchanged');
  });

  it('names the committer of a transaction only by a port that is a pid', () => {
    const s = new MasqSyncer({ apply: async () => {}, ran: (pid) => pid === 4242 });
    expect(s.committedBy(4242)).toBe(true);
    expect(s.committedBy(777)).toBe(false);
    // A port the kernel picked because the pid was taken (negative as s32): nobody's, so undecided.
    expect(s.committedBy(0xffffefff)).toBeUndefined();
    expect(s.committedBy(0)).toBeUndefined();
    expect(new MasqSyncer({ apply: async () => {} }).committedBy(4242)).toBeUndefined();
  });

  it('renders again when the caller changed its arrays in place', async () => {
    const { s, applied } = syncer();
    const o = opts();
    await s.sync(o);
    (o.clusterCIDRs as string[]).push('10.244.9.0/24');
    expect(await s.sync(o)).toBe('applied');
    expect(applied.at(-1)).toBe(renderMasqRuleset(o));
    expect(applied.at(-1)).toContain('10.244.9.0/24');
  });

  it("renders again when the table's parts change: masquerade off, the clamp devices", async () => {
    const { s, applied } = syncer();
    await s.sync(opts());
    expect(await s.sync({ ...opts(), clampMssInto: ['trellis.v4'] })).toBe('applied');
    expect(await s.sync({ ...opts(), clampMssInto: ['trellis.v4'] })).toBe('unchanged');
    expect(await s.sync({ ...opts(), clampMssInto: ['trellis.v4'], masquerade: false })).toBe('applied');
    expect(applied[1]).toContain('maxseg');
    expect(applied[2]).not.toContain('masquerade');
  });

  it('a kernel that refuses the clamp keeps masquerade: the table without it, and why', async () => {
    const applied: string[] = [];
    let clampWorks = false;
    const s = new MasqSyncer({
      apply: async (text: string) => {
        // What nft says on a kernel without nft_exthdr / nft_rt.
        if (text.includes('maxseg') && !clampWorks)
          throw new Error('nft -f -: exit code 1: Error: Could not process rule: No such file or directory');
        applied.push(text);
      },
    });
    const withClamp = { ...opts(), clampMssInto: ['trellis.v4'] };
    expect(await s.sync(withClamp)).toBe('applied');
    expect(applied).toEqual([renderMasqRuleset(opts())]);
    expect(s.clampRefused).toMatch(/No such file or directory/);
    // The same ruleset again: the table without the clamp is current, no nft run.
    expect(await s.sync(withClamp)).toBe('unchanged');
    // The resync tries the clamp again; once the kernel takes it, it is on and the refusal gone.
    clampWorks = true;
    s.invalidate();
    expect(await s.sync(withClamp)).toBe('applied');
    expect(applied.at(-1)).toContain('maxseg');
    expect(s.clampRefused).toBeUndefined();
  });

  it('a failure that is not the clamp (the check of the same ruleset passes) applies the table whole again, clamp included', async () => {
    const applied: string[] = [];
    let transient = 1;
    const s = new MasqSyncer({
      apply: async (text: string) => {
        if (transient-- > 0) throw new Error('nft -f -: killed after 10000 ms');
        applied.push(text);
      },
      check: async () => {},
    });
    expect(await s.sync({ ...opts(), clampMssInto: ['trellis.v4'] })).toBe('applied');
    expect(applied).toHaveLength(1);
    expect(applied[0]).toContain('maxseg');
    expect(s.clampRefused).toBeUndefined();
  });

  it('a table that fails without the clamp too fails as masquerade did before', async () => {
    const s = new MasqSyncer({
      apply: async () => {
        throw new Error('nft: not found');
      },
    });
    await expect(s.sync({ ...opts(), clampMssInto: ['trellis.v4'] })).rejects.toThrow(/nft: not found/);
    expect(s.clampRefused).toBeUndefined();
  });

  it('still rejects bad operator config after a good sync', async () => {
    const { s } = syncer();
    await s.sync(opts());
    await expect(s.sync({ ...opts(), noMasqueradeCIDRs: ['nope'] })).rejects.toThrow(/noMasqueradeCIDRs/);
    await expect(s.sync({ ...opts(), podCIDRs: null as unknown as MasqOptions['podCIDRs'] })).rejects.toThrow(
      /podCIDRs/,
    );
  });

  describe('with an element writer', () => {
    const v4 = (a: string): bigint => a.split('.').reduce((n, o) => (n << 8n) | BigInt(o), 0n);
    /** The writer's calls; `fail` makes the next one throw as the kernel would. */
    function withWriter(): {
      s: MasqSyncer;
      applied: string[];
      updates: IntervalSetChange[][];
      fail: { next?: Error };
    } {
      const applied: string[] = [];
      const updates: IntervalSetChange[][] = [];
      const fail: { next?: Error } = {};
      const writer: SetElementWriter = {
        port: 99,
        update: async (table, changes) => {
          expect(table).toBe('trellis');
          const err = fail.next;
          delete fail.next;
          if (err !== undefined) throw err;
          updates.push([...changes]);
        },
      };
      const s = new MasqSyncer(
        {
          apply: async (text: string) => {
            applied.push(text);
          },
        },
        writer,
      );
      return { s, applied, updates, fail };
    }
    const grown = (): MasqOptions => ({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, '10.244.2.0/24'] });

    it('moves only the ranges that changed once the table was applied whole, in one transaction', async () => {
      const { s, applied, updates } = withWriter();
      expect(await s.sync(opts())).toBe('applied');
      // A Node added next to the others: the merged range grows, removed and added whole.
      expect(await s.sync(grown())).toBe('updated');
      // A Node far away: a range of its own.
      expect(await s.sync({ ...grown(), clusterCIDRs: [...grown().clusterCIDRs, '10.250.0.0/24'] })).toBe(
        'updated',
      );
      // Deleted again.
      expect(await s.sync(grown())).toBe('updated');
      expect(await s.sync(grown())).toBe('unchanged');
      expect(applied).toHaveLength(1);
      expect(updates).toEqual([
        [
          {
            set: 'nomasq_v4',
            family: 4,
            remove: [[v4('10.244.0.0'), v4('10.244.1.255')]],
            add: [[v4('10.244.0.0'), v4('10.244.2.255')]],
          },
        ],
        [{ set: 'nomasq_v4', family: 4, remove: [], add: [[v4('10.250.0.0'), v4('10.250.0.255')]] }],
        [{ set: 'nomasq_v4', family: 4, remove: [[v4('10.250.0.0'), v4('10.250.0.255')]], add: [] }],
      ]);
      expect(s.wroteElements(99)).toBe(true);
      expect(s.wroteElements(98)).toBe(false);
    });

    it('applies the table whole when its shape changed, after invalidate, and when the kernel refuses', async () => {
      const { s, applied, updates, fail } = withWriter();
      await s.sync(opts());
      // IPv6 pods too: new sets and a rule, not an element change.
      const dual: MasqOptions = { ...opts(), podCIDRs: { v4: ['10.244.0.0/24'], v6: ['fd00::/64'] } };
      expect(await s.sync(dual)).toBe('applied');
      s.invalidate();
      expect(await s.sync({ ...dual, clusterCIDRs: [...dual.clusterCIDRs, '10.244.2.0/24'] })).toBe(
        'applied',
      );
      // The table is not what was written last (someone deleted an element): ENOENT, then whole.
      fail.next = new Error('NFT_MSG_DELSETELEM inet trellis nomasq_v4 (1 ranges): ENOENT');
      expect(await s.sync(dual)).toBe('applied');
      expect(s.lastInPlaceError).toMatch(/ENOENT/);
      expect(await s.sync({ ...dual, noMasqueradeCIDRs: ['192.0.2.0/24'] })).toBe('updated');
      expect(s.lastInPlaceError).toBeUndefined();
      expect(applied).toEqual([
        renderMasqRuleset(opts()),
        renderMasqRuleset(dual),
        renderMasqRuleset({ ...dual, clusterCIDRs: [...dual.clusterCIDRs, '10.244.2.0/24'] }),
        renderMasqRuleset(dual),
      ]);
      expect(updates).toHaveLength(1);
    });

    it('applies the table whole when more than 1,024 ranges move', async () => {
      const { s, applied, updates } = withWriter();
      await s.sync(opts());
      const sparse = Array.from({ length: 1100 }, (_, i) => `10.${100 + (i >> 7)}.${(i & 127) * 2}.0/24`);
      expect(await s.sync({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, ...sparse] })).toBe('applied');
      expect(await s.sync({ ...opts(), clusterCIDRs: [...opts().clusterCIDRs, ...sparse.slice(1)] })).toBe(
        'updated',
      );
      expect(applied).toHaveLength(2);
      expect(updates).toHaveLength(1);
    });

    it('an invalidate while the writer runs is not lost', async () => {
      const { s, applied } = withWriter();
      await s.sync(opts());
      const pending = s.sync(grown());
      s.invalidate();
      expect(await pending).toBe('updated');
      expect(await s.sync(grown())).toBe('applied');
      expect(applied).toHaveLength(2);
    });

    it('changeCluster moves only what a Node event changed, and a whole sync of the same cluster then writes nothing', async () => {
      const { s, applied, updates, fail } = withWriter();
      expect(await s.changeCluster([], ['10.244.2.0/24'])).toBe('unsupported'); // nothing written yet
      await s.sync(opts());
      expect(await s.changeCluster([], ['10.244.2.0/24', '10.250.0.0/24'])).toBe('updated');
      expect(updates.at(-1)).toEqual([
        {
          set: 'nomasq_v4',
          family: 4,
          remove: [[v4('10.244.0.0'), v4('10.244.1.255')]],
          add: [
            [v4('10.244.0.0'), v4('10.244.2.255')],
            [v4('10.250.0.0'), v4('10.250.0.255')],
          ],
        },
      ]);
      // A CIDR that came and went at once, text that is no CIDR, an IPv6 block without IPv6 pods here.
      expect(await s.changeCluster(['10.244.2.0/24'], ['10.244.2.0/24', 'junk', 'fd00::/64'])).toBe(
        'unchanged',
      );
      expect(updates).toHaveLength(1);
      // The full pass after: the cluster the events built, nothing left to write.
      const now = { ...opts(), clusterCIDRs: [...opts().clusterCIDRs, '10.250.0.0/24', '10.244.2.0/24'] };
      expect(await s.sync(now)).toBe('unchanged');
      expect(applied).toHaveLength(1);
      expect(updates).toHaveLength(1);
      // Refused (someone took the element away): forgotten, the next sync is whole.
      fail.next = new Error('NFT_MSG_DELSETELEM inet trellis nomasq_v4 (1 ranges): ENOENT');
      expect(await s.changeCluster(['10.250.0.0/24'], [])).toBe('unsupported');
      expect(await s.changeCluster(['10.250.0.0/24'], [])).toBe('unsupported');
      expect(await s.sync(grown())).toBe('applied');
      expect(applied.at(-1)).toBe(renderMasqRuleset(grown()));
      expect(await s.changeCluster([], ['10.250.0.0/24'])).toBe('updated');
    });

    it('after a resync (invalidate) the next Node event is measured against the plan applied whole', async () => {
      const { s, applied, updates } = withWriter();
      await s.sync(opts());
      s.invalidate();
      expect(await s.changeCluster([], ['10.244.2.0/24'])).toBe('unsupported'); // the kernel is unknown
      expect(await s.sync(opts())).toBe('applied');
      expect(await s.changeCluster([], ['10.250.0.0/24'])).toBe('updated');
      expect(updates.at(-1)).toEqual([
        { set: 'nomasq_v4', family: 4, remove: [], add: [[v4('10.250.0.0'), v4('10.250.0.255')]] },
      ]);
      // Moved on by an event, then a resync with the cluster of before the event: whole, and from it.
      s.invalidate();
      expect(await s.sync(opts())).toBe('applied');
      // 10.250.0.0/24 is not in the table any more: taking it away again changes nothing.
      expect(await s.changeCluster(['10.250.0.0/24'], ['10.244.2.0/24'])).toBe('updated');
      expect(updates.at(-1)).toEqual([
        {
          set: 'nomasq_v4',
          family: 4,
          remove: [[v4('10.244.0.0'), v4('10.244.1.255')]],
          add: [[v4('10.244.0.0'), v4('10.244.2.255')]],
        },
      ]);
      expect(applied).toHaveLength(3);
    });

    it('without an element writer, changeCluster leaves it to a whole sync', async () => {
      const { s } = syncer();
      await s.sync(opts());
      expect(await s.changeCluster([], ['10.244.2.0/24'])).toBe('unsupported');
    });
  });
});
