import { describe, expect, it } from 'vitest';
import type { ClusterNode } from '../../../pkg/agent/cluster.ts';
import { MasqGiven } from '../../../pkg/agent/masq-given.ts';

const node = (name: string, podCIDRs: string[]): ClusterNode => ({ name, podCIDRs, internalIPs: [] });

describe('MasqGiven', () => {
  it('nothing to go on before a whole sync, after a failed one, or when this node changed', () => {
    const g = new MasqGiven();
    g.markChanged('n2');
    expect(g.take(() => undefined, 'n1')).toBeUndefined();
    g.synced([node('n1', ['10.0.1.0/24']), node('n2', ['10.0.2.0/24'])]);
    g.markChanged('n1');
    expect(g.take(() => undefined, 'n1')).toBeUndefined();
    g.forget();
    expect(g.take(() => undefined, 'n1')).toBeUndefined();
  });

  it("each changed node's CIDRs against what it gave, counted as a multiset, remembered for the next", () => {
    const g = new MasqGiven();
    g.synced([
      node('n1', ['10.0.1.0/24']),
      node('n2', ['10.0.2.0/24', 'fd00:2::/64']),
      node('n3', ['10.0.3.0/24']),
    ]);
    const now = new Map([
      ['n2', node('n2', ['fd00:2::/64', '10.0.9.0/24'])],
      ['n4', node('n4', ['10.0.4.0/24', '10.0.4.0/24'])],
    ]);
    for (const n of ['n2', 'n3', 'n4']) g.markChanged(n);
    expect(g.take((n) => now.get(n), 'n1')).toEqual({
      removed: ['10.0.2.0/24', '10.0.3.0/24'],
      added: ['10.0.9.0/24', '10.0.4.0/24', '10.0.4.0/24'],
    });
    // Nothing changed since: nothing to hand over.
    expect(g.take((n) => now.get(n), 'n1')).toEqual({ removed: [], added: [] });
    now.set('n4', node('n4', ['10.0.4.0/24']));
    g.markChanged('n4');
    expect(g.take((n) => now.get(n), 'n1')).toEqual({ removed: ['10.0.4.0/24'], added: [] });
  });

  it('a change marked while a whole sync runs is not covered by it, and comes in the next take', () => {
    const g = new MasqGiven();
    const before = [node('n1', ['10.0.1.0/24'])];
    g.markChanged('n1');
    g.forget(); // the whole sync read `before`
    g.markChanged('n2'); // a step ran while it awaited the kernel
    g.synced(before);
    expect(g.take((n) => (n === 'n2' ? node('n2', ['10.0.2.0/24']) : before[0]), 'n0')).toEqual({
      removed: [],
      added: ['10.0.2.0/24'],
    });
  });
});
