import { describe, expect, it } from 'vitest';
import type { MasqOptions } from '../../../pkg/masq/render.ts';
import { renderMasqRuleset } from '../../../pkg/masq/render.ts';
import { MasqSyncer } from '../../../pkg/masq/sync.ts';

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
});
