import { describe, expect, it } from 'vitest';
import type { ClusterNode } from '../../../pkg/agent/cluster.ts';
import { clusterCidrsOf, MasqGiven, refusedCidrs, sameRefusal } from '../../../pkg/agent/masq-given.ts';

const none = new Map<string, Set<string>>();
const node = (name: string, podCIDRs: string[]): ClusterNode => ({ name, podCIDRs, internalIPs: [] });

describe('MasqGiven', () => {
  it('nothing to go on before a whole sync, after a failed one, or when this node changed', () => {
    const g = new MasqGiven();
    g.markChanged('n2');
    expect(g.take(() => undefined, 'n1', none)).toBeUndefined();
    g.synced([node('n1', ['10.0.1.0/24']), node('n2', ['10.0.2.0/24'])], none);
    g.markChanged('n1');
    expect(g.take(() => undefined, 'n1', none)).toBeUndefined();
    g.forget();
    expect(g.take(() => undefined, 'n1', none)).toBeUndefined();
  });

  it("each changed node's CIDRs against what it gave, counted as a multiset, remembered for the next", () => {
    const g = new MasqGiven();
    g.synced(
      [node('n1', ['10.0.1.0/24']), node('n2', ['10.0.2.0/24', 'fd00:2::/64']), node('n3', ['10.0.3.0/24'])],
      none,
    );
    const now = new Map([
      ['n2', node('n2', ['fd00:2::/64', '10.0.9.0/24'])],
      ['n4', node('n4', ['10.0.4.0/24', '10.0.4.0/24'])],
    ]);
    for (const n of ['n2', 'n3', 'n4']) g.markChanged(n);
    expect(g.take((n) => now.get(n), 'n1', none)).toEqual({
      removed: ['10.0.2.0/24', '10.0.3.0/24'],
      added: ['10.0.9.0/24', '10.0.4.0/24', '10.0.4.0/24'],
    });
    // Nothing changed since: nothing to hand over.
    expect(g.take((n) => now.get(n), 'n1', none)).toEqual({ removed: [], added: [] });
    now.set('n4', node('n4', ['10.0.4.0/24']));
    g.markChanged('n4');
    expect(g.take((n) => now.get(n), 'n1', none)).toEqual({ removed: ['10.0.4.0/24'], added: [] });
  });

  it('a change marked while a whole sync runs is not covered by it, and comes in the next take', () => {
    const g = new MasqGiven();
    const before = [node('n1', ['10.0.1.0/24'])];
    g.markChanged('n1');
    g.forget(); // the whole sync read `before`
    g.markChanged('n2'); // a step ran while it awaited the kernel
    g.synced(before, none);
    expect(g.take((n) => (n === 'n2' ? node('n2', ['10.0.2.0/24']) : before[0]), 'n0', none)).toEqual({
      removed: [],
      added: ['10.0.2.0/24'],
    });
  });

  it("leaves out the CIDRs the route planner refused, in the whole sync's list and in each change", () => {
    const refused = refusedCidrs([
      {
        node: 'wide',
        problem: 'pod CIDR 10.0.0.0/8 contains 10.0.2.0/24 of node n2; skipped',
        refusedCidr: '10.0.0.0/8',
      },
      { node: 'n3', problem: 'no InternalIP' },
    ]);
    expect(refused).toEqual(new Map([['wide', new Set(['10.0.0.0/8'])]]));
    const g = new MasqGiven();
    g.synced([node('n2', ['10.0.2.0/24']), node('wide', ['10.0.0.0/8', 'fd00:9::/64'])], refused);
    // Its narrower claim now, and the /8 still refused: only the new CIDR joins, nothing of the /8 leaves.
    g.markChanged('wide');
    const now = node('wide', ['10.0.0.0/8', '10.0.9.0/24', 'fd00:9::/64']);
    expect(g.take(() => now, 'n1', refused)).toEqual({ removed: [], added: ['10.0.9.0/24'] });
    // Accepted by a later plan (the /24 inside it went): the /8 joins.
    g.markChanged('wide');
    expect(g.take(() => now, 'n1', none)).toEqual({ removed: [], added: ['10.0.0.0/8'] });
  });

  it('matches a refused CIDR by its canonical text, whatever spelling the Node used', () => {
    const refused = new Map([['n9', new Set(['fd00:9::/64'])]]);
    expect(clusterCidrsOf(node('n9', ['fd00:9:0::/64', '10.9.0.0/16']), refused)).toEqual(['10.9.0.0/16']);
    expect(clusterCidrsOf(node('n8', ['fd00:9::/64']), refused)).toEqual(['fd00:9::/64']);
  });

  it('compares two refusals by the CIDRs they hold', () => {
    expect(sameRefusal(undefined, undefined)).toBe(true);
    expect(sameRefusal(new Set(['10.0.0.0/8']), undefined)).toBe(false);
    expect(sameRefusal(new Set(['10.0.0.0/8', 'fd00::/16']), new Set(['fd00::/16', '10.0.0.0/8']))).toBe(
      true,
    );
    expect(sameRefusal(new Set(['10.0.0.0/8']), new Set(['10.0.0.0/16']))).toBe(false);
  });
});
