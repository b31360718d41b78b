import { describe, expect, it } from 'vitest';
import { recoverXtComments } from '../../../pkg/firewall/read.ts';
import type { Rule } from '../../../pkg/firewall/ruleset.ts';

/**
 * Our accepts written back by iptables-nft-restore: nft -j shows their comment as an xt match without
 * its text, and iptables-nft-save has it. Matched rule for rule, and only where both reads show the
 * same accept.
 */
const OURS = 'trellis: the pods of this node';
const save = (rules: string[]) => async (): Promise<string> =>
  [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD DROP [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ...rules,
    'COMMIT',
    '',
  ].join('\n');
const fromPods = `-A FORWARD -s 10.244.1.0/24 -m comment --comment "${OURS}" -j ACCEPT`;
const toPods = `-A FORWARD -d 10.244.1.0/24 -m comment --comment "${OURS}" -j ACCEPT`;

const accept = (handle: number, field: 'saddr' | 'daddr'): Rule => ({
  handle,
  expr: [
    {
      match: {
        op: '==',
        left: { payload: { protocol: 'ip', field } },
        right: { prefix: { addr: '10.244.1.0', len: 24 } },
      },
    },
    { xt: { type: 'match', name: 'comment' } },
    { accept: null },
  ],
});
const kubeJump: Rule = {
  handle: 3,
  expr: [{ xt: { type: 'match', name: 'comment' } }, { jump: { target: 'KUBE-FORWARD' } }],
};

describe('recoverXtComments', () => {
  it('gives our accepts their comment back from iptables-nft-save, rule for rule', async () => {
    const rules = new Map([['ip filter FORWARD', [accept(1, 'saddr'), accept(2, 'daddr')]]]);
    await recoverXtComments(rules, save([fromPods, toPods]));
    expect(rules.get('ip filter FORWARD')!.map((r) => r.comment)).toEqual([OURS, OURS]);
  });

  it('lends it to no other rule when the chain changed between the reads (same count, rules moved)', async () => {
    // nft saw kube-proxy's commented jump, then our accept; by the save the jump had gone and another
    // accept had come: two rules in both reads, each at another position.
    const rules = new Map([['ip filter FORWARD', [kubeJump, accept(4, 'saddr')]]]);
    await recoverXtComments(rules, save([fromPods, toPods]));
    expect(rules.get('ip filter FORWARD')!.map((r) => r.comment)).toEqual([undefined, undefined]);
  });

  it('leaves a chain alone whose rule count differs, and one of another family', async () => {
    const rules = new Map([
      ['ip filter FORWARD', [accept(1, 'saddr')]],
      ['ip6 filter FORWARD', [accept(1, 'saddr')]],
    ]);
    await recoverXtComments(rules, save([fromPods, toPods]));
    expect(rules.get('ip filter FORWARD')![0]!.comment).toBeUndefined();
    expect(rules.get('ip6 filter FORWARD')![0]!.comment).toBeUndefined();
  });
});
