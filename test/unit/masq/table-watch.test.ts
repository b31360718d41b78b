import { describe, expect, it } from 'vitest';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';
import { MasqTableWatch } from '../../../pkg/masq/table-watch.ts';

const change = (
  c: 'new' | 'del',
  object: 'table' | 'rule',
  table = 'trellis',
  family = 1,
): NftablesEvent => ({
  type: 'change',
  change: c,
  object,
  family,
  table,
});
const GEN: NftablesEvent = { type: 'generation' };

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
        GEN, // an apply of ours
        change('del', 'rule'),
        GEN, // flush chain
        change('new', 'table'),
        change('del', 'table'),
        GEN, // created and deleted: gone
        GEN, // an empty commit
      ]),
    ).toEqual([false, true, true, false]);
  });

  it('ignores other tables, the same name in another family, and a table of another name', () => {
    const w = new MasqTableWatch('trellis');
    expect(
      verdicts(w, [
        change('del', 'table', 'trellis', 2), // ip trellis, not inet trellis
        change('del', 'rule', 'kube-proxy', 1),
        GEN,
      ]),
    ).toEqual([false]);
    expect(verdicts(new MasqTableWatch('mine'), [change('del', 'table', 'mine'), GEN])).toEqual([true]);
  });
});
