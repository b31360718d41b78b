import { describe, expect, it } from 'vitest';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';
import { MasqTableWatch } from '../../../pkg/masq/table-watch.ts';

const OURS = 4242;
const THEIRS = 777;

const change = (
  c: 'new' | 'del',
  object: 'table' | 'rule' | 'element',
  opts: { table?: string; family?: number; portid?: number } = {},
): NftablesEvent => ({
  type: 'change',
  change: c,
  object,
  family: opts.family ?? 1,
  table: opts.table ?? 'trellis',
  portid: opts.portid ?? OURS,
});
const gen = (portid = OURS): NftablesEvent => ({ type: 'generation', portid });

/** The verdict at each commit of a stream of events. */
function verdicts(watch: MasqTableWatch, events: NftablesEvent[]): boolean[] {
  return events.flatMap((e) => {
    const v = watch.feed(e);
    return e.type === 'generation' ? [v] : [];
  });
}

describe('MasqTableWatch', () => {
  it('takes a transaction that ends with the table re-created for ours, anything else touching it for someone else’s', () => {
    const w = new MasqTableWatch();
    expect(
      verdicts(w, [
        change('del', 'rule'),
        change('del', 'table'),
        change('new', 'table'),
        change('new', 'rule'),
        gen(), // an apply of ours
        change('del', 'rule'),
        gen(), // flush chain
        change('new', 'table'),
        change('del', 'table'),
        gen(), // created and deleted: gone
        gen(), // an empty commit
      ]),
    ).toEqual([false, true, true, false]);
  });

  it('with the committer known, a re-created table is ours only when our nft committed it', () => {
    const w = new MasqTableWatch({ ours: (portid) => portid === OURS });
    expect(
      verdicts(w, [
        // An apply of ours.
        change('del', 'table'),
        change('new', 'table'),
        gen(OURS),
        // nftables.service restoring a saved ruleset with an old copy of our table in it.
        change('del', 'table', { portid: THEIRS }),
        change('new', 'table', { portid: THEIRS }),
        change('new', 'rule', { portid: THEIRS }),
        gen(THEIRS),
        // A flag set on the table (dormant: masquerading stops): one NEWTABLE, not ours.
        change('new', 'table', { portid: THEIRS }),
        gen(THEIRS),
      ]),
    ).toEqual([false, true, true]);
  });

  it('ignores other tables, the same name in another family, and a table of another name', () => {
    const w = new MasqTableWatch({ table: 'trellis', ours: () => false });
    expect(
      verdicts(w, [
        change('del', 'table', { family: 2 }), // ip trellis, not inet trellis
        change('del', 'rule', { table: 'kube-proxy' }),
        gen(THEIRS),
      ]),
    ).toEqual([false]);
    expect(
      verdicts(new MasqTableWatch({ table: 'mine' }), [change('del', 'table', { table: 'mine' }), gen()]),
    ).toEqual([true]);
  });

  it("takes set element changes for ours only when they alone came from the element writer's port", () => {
    const WRITER = 0x80001234;
    const w = new MasqTableWatch({ ours: (portid) => portid === OURS, ourElements: (p) => p === WRITER });
    expect(
      verdicts(w, [
        // A Node added: the writer moved a range of nomasq_v4.
        change('del', 'element', { portid: WRITER }),
        change('new', 'element', { portid: WRITER }),
        gen(WRITER),
        // `nft add element inet trellis nomasq_v4 { ... }` by hand.
        change('new', 'element', { portid: THEIRS }),
        gen(THEIRS),
        // The same change by one of our nft runs: ours only when it re-creates the table.
        change('new', 'element', { portid: OURS }),
        gen(OURS),
        // Anything beyond elements from the writer's port is not what the writer does.
        change('new', 'element', { portid: WRITER }),
        change('del', 'rule', { portid: WRITER }),
        gen(WRITER),
        // The next element-only transaction is judged afresh.
        change('new', 'element', { portid: WRITER }),
        gen(WRITER),
      ]),
    ).toEqual([false, true, true, true, false]);
  });

  it('reset forgets a transaction whose notifications were partly lost', () => {
    const w = new MasqTableWatch();
    w.feed(change('del', 'rule'));
    w.reset();
    expect(w.feed(gen())).toBe(false);
  });
});
