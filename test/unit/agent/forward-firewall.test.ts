import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ForwardFirewallWatch } from '../../../pkg/agent/forward-firewall.ts';
import type { ForwardRuleset } from '../../../pkg/firewall/index.ts';

const POD_CIDRS = ['10.244.1.0/24'];

/** Docker's FORWARD: policy drop, or with the pods let through. */
function dockerForward(acceptPods: boolean): ForwardRuleset {
  const rules = acceptPods
    ? [
        {
          handle: 1,
          expr: [
            { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'trl*' } },
            { accept: null },
          ],
        },
        {
          handle: 2,
          expr: [
            { match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'trl*' } },
            { accept: null },
          ],
        },
      ]
    : [];
  return {
    baseChains: [{ family: 'ip', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 }],
    rules: new Map([['ip filter FORWARD', rules]]),
  };
}

function setup(read: (cidrs: readonly string[]) => Promise<ForwardRuleset>) {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { watch: new ForwardFirewallWatch({ read, log }), lines };
}

describe('ForwardFirewallWatch', () => {
  it('warns with the blocked chains and the fix when a block appears, once, and says when it clears', async () => {
    let next = dockerForward(false);
    const { watch, lines } = setup(async () => next);
    await watch.check(POD_CIDRS);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 40,
      blocked: [
        'ip filter FORWARD drops IPv4 packets from pods (10.244.1.0/24): policy drop',
        'ip filter FORWARD drops IPv4 packets to pods (10.244.1.0/24): policy drop',
      ],
      fix: [
        'iptables -I FORWARD -s 10.244.1.0/24 -j ACCEPT',
        'iptables -I FORWARD -d 10.244.1.0/24 -j ACCEPT',
      ],
    });
    expect(String(lines[0]!.msg)).toMatch(/^the host firewall drops pod traffic this node forwards/);
    expect(watch.state().blocks).toHaveLength(2);
    expect(watch.state().checkedAt).toMatch(/^\d{4}-/);

    await watch.check(POD_CIDRS);
    expect(lines).toHaveLength(1); // unchanged: no second warning every minute

    next = dockerForward(true);
    await watch.check(POD_CIDRS);
    expect(lines.map((l) => l.msg)).toEqual([
      lines[0]!.msg,
      'the host firewall no longer drops pod traffic this node forwards',
    ]);
    expect(watch.state().blocks).toEqual([]);
  });

  it('a healthy firewall logs nothing; a failed read warns once per distinct error and keeps the last verdict', async () => {
    let fail: Error | undefined;
    const { watch, lines } = setup(async () => {
      if (fail !== undefined) throw fail;
      return dockerForward(true);
    });
    await watch.check(POD_CIDRS);
    expect(lines).toEqual([]);
    const checkedAt = watch.state().checkedAt;
    fail = new Error('nft: exit code 1: Error: Could not process rule');
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(lines.map((l) => [l.level, l.msg, l.error])).toEqual([
      [
        40,
        "could not read the host firewall's forward chains; checked again later",
        'nft: exit code 1: Error: Could not process rule',
      ],
    ]);
    expect(watch.state()).toEqual({
      checkedAt,
      blocks: [],
      error: 'nft: exit code 1: Error: Could not process rule',
    });
  });

  it('a check while one runs shares it; no pod CIDRs yet: nothing read', async () => {
    let reads = 0;
    let release: () => void = () => {};
    const { watch } = setup(async () => {
      reads++;
      await new Promise<void>((r) => {
        release = r;
      });
      return dockerForward(true);
    });
    await watch.check([]);
    expect(reads).toBe(0);
    const a = watch.check(POD_CIDRS);
    const b = watch.check(POD_CIDRS);
    release();
    await Promise.all([a, b]);
    expect(reads).toBe(1);
  });
});
