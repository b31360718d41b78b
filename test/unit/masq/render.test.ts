import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cidrContains, parseCidr, parseIp } from '../../../pkg/ip/index.ts';
import {
  MasqConfigError,
  type MasqOptions,
  planMasq,
  renderDeleteTable,
  renderMasqRuleset,
} from '../../../pkg/masq/render.ts';

const base: MasqOptions = {
  podCIDRs: { v4: ['10.244.0.0/24'], v6: ['fd00:10:244::/64'] },
  clusterCIDRs: ['10.244.0.0/24', '10.244.1.0/24', 'fd00:10:244::/64', 'fd00:10:244:1::/64'],
  noMasqueradeCIDRs: [],
};

function setElements(text: string, name: string): string[] {
  const m = new RegExp(`set ${name} \\{[^}]*?elements = \\{ ([^}]*) \\}`, 's').exec(text);
  return m === null ? [] : m[1]!.split(', ');
}

describe('renderMasqRuleset', () => {
  it('replaces the table atomically: create, delete, define, in that order', () => {
    const text = renderMasqRuleset(base);
    const lines = text.split('\n');
    expect(lines[0]).toBe('table inet trellis {}');
    expect(lines[1]).toBe('delete table inet trellis');
    expect(lines[2]).toBe('table inet trellis {');
    expect(text).toContain('type nat hook postrouting priority srcnat + 10; policy accept;');
    expect(text.endsWith('}\n')).toBe(true);
  });

  it('has one masquerade rule per family with pods, matched against interval sets', () => {
    const text = renderMasqRuleset(base);
    expect(text.match(/masquerade/g)).toHaveLength(2);
    expect(text).toContain('ip saddr @pods_v4 ip daddr != @nomasq_v4 counter masquerade fully-random');
    expect(text).toContain('ip6 saddr @pods_v6 ip6 daddr != @nomasq_v6 counter masquerade fully-random');
    expect(setElements(text, 'pods_v4')).toEqual(['10.244.0.0/24']);
    // Adjacent cluster CIDRs merge: nft rejects overlapping interval elements.
    expect(setElements(text, 'nomasq_v4')).toEqual(['10.244.0.0/23']);
    expect(setElements(text, 'nomasq_v6')).toEqual(['fd00:10:244::/63']);
  });

  it('stays two rules for thousands of nodes, and lists our own CIDR as a destination even if omitted', () => {
    const cluster = Array.from({ length: 4000 }, (_, i) => `10.${100 + (i >> 8)}.${i & 255}.0/24`).reverse();
    const text = renderMasqRuleset({
      ...base,
      podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
      clusterCIDRs: cluster,
    });
    expect(text.match(/masquerade/g)).toHaveLength(1);
    expect(text).not.toContain('ip6');
    expect(setElements(text, 'nomasq_v4')).toEqual(['10.100.0.0-10.115.159.255', '10.244.0.0/24']);
  });

  it('omits a family without local pods, and the elements line of an empty set', () => {
    const text = renderMasqRuleset({
      podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
      clusterCIDRs: [],
      noMasqueradeCIDRs: [],
    });
    expect(text).not.toMatch(/pods_v6|nomasq_v6/);
    expect(setElements(text, 'nomasq_v4')).toEqual(['10.244.0.0/24']);
    const none = renderMasqRuleset({
      podCIDRs: { v4: [], v6: [] },
      clusterCIDRs: ['10.244.0.0/16'],
      noMasqueradeCIDRs: [],
    });
    expect(none).not.toMatch(/masquerade|set /);
    expect(none).toContain('chain postrouting');
  });

  it('merges no-masquerade CIDRs that contain or overlap cluster CIDRs', () => {
    const text = renderMasqRuleset({
      ...base,
      noMasqueradeCIDRs: ['10.0.0.0/8', '192.168.0.0/16', '192.168.4.0/24'],
    });
    expect(setElements(text, 'nomasq_v4')).toEqual(['10.0.0.0/8', '192.168.0.0/16']);
  });

  it('rejects bad operator config (noMasqueradeCIDRs, tableName), naming the setting', () => {
    const bad: [Partial<MasqOptions>, RegExp][] = [
      [{ noMasqueradeCIDRs: ['10.0.0.1/8'] }, /noMasqueradeCIDRs\[0\]/],
      [{ noMasqueradeCIDRs: ['10.0.0.0/8 } ; flush ruleset ; table ip x {'] }, /noMasqueradeCIDRs\[0\]/],
      [{ clusterCIDRs: '10.0.0.0/8' as unknown as string[] }, /clusterCIDRs/],
      [{ tableName: 'trellis; flush ruleset' }, /tableName/],
    ];
    for (const [patch, re] of bad) {
      const run = () => renderMasqRuleset({ ...base, ...patch });
      expect(run).toThrow(MasqConfigError);
      expect(run).toThrow(re);
    }
  });

  it('skips and reports bad CIDRs from Node objects instead of failing for the whole cluster', () => {
    const plan = planMasq({
      ...base,
      podCIDRs: { v4: ['10.244.0.0/24', 'fd00::/64'], v6: ['10.0.0.0/8', 'fd00:10:244::/64'] },
      clusterCIDRs: ['10.244.1.0/24', 'fd00::/129', '10.244.2.5/24', '10.244.3.0/24 } ; flush ruleset'],
    });
    expect(plan.skipped.map((x) => x.setting)).toEqual([
      'podCIDRs.v4[1]',
      'podCIDRs.v6[0]',
      'clusterCIDRs[1]',
      'clusterCIDRs[2]',
      'clusterCIDRs[3]',
    ]);
    expect(plan.ruleset).not.toContain('flush');
    expect(setElements(plan.ruleset, 'pods_v4')).toEqual(['10.244.0.0/24']);
    expect(setElements(plan.ruleset, 'nomasq_v4')).toEqual(['10.244.0.0/23']);
    expect(setElements(plan.ruleset, 'pods_v6')).toEqual(['fd00:10:244::/64']);
  });

  it('a destination keeps the pod address exactly when it is inside a cluster or no-masq CIDR (property)', () => {
    const arbCidr = fc
      .tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 18, max: 28 }))
      .map(([n, len]) => {
        const c = parseCidr(`10.${n}.${(n * 37) % 256}.0/${len}`, { strict: false })!;
        return `${[24n, 16n, 8n, 0n].map((s) => String((c.network >> s) & 255n)).join('.')}/${len}`;
      });
    fc.assert(
      fc.property(
        fc.array(arbCidr, { maxLength: 10 }),
        fc.array(arbCidr, { maxLength: 4 }),
        fc.integer({ min: 0, max: 2 ** 24 - 1 }),
        (cluster, extra, host) => {
          const text = renderMasqRuleset({
            podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
            clusterCIDRs: cluster,
            noMasqueradeCIDRs: extra,
          });
          const ip = parseIp(`10.${host >> 16}.${(host >> 8) & 255}.${host & 255}`)!;
          const inSet = setElements(text, 'nomasq_v4').some((e) => {
            if (e.includes('-')) {
              const [lo, hi] = e.split('-').map((x) => parseIp(x)!.value) as [bigint, bigint];
              return ip.value >= lo && ip.value <= hi;
            }
            return cidrContains(parseCidr(e)!, ip);
          });
          const expected = [...cluster, ...extra, '10.244.0.0/24'].some((c) =>
            cidrContains(parseCidr(c)!, ip),
          );
          expect(inSet).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('the MSS clamp into the tunnels', () => {
  const clamp =
    'tcp flags syn / syn,rst oifname { "trellis.v4", "trellis.v6" } counter tcp option maxseg size set rt mtu';

  it('adds a filter chain at the forward hook clamping SYNs into the named devices, beside masquerade', () => {
    const text = renderMasqRuleset({ ...base, clampMssInto: ['trellis.v6', 'trellis.v4', 'trellis.v4'] });
    expect(text).toContain('chain forward {\n\t\ttype filter hook forward priority mangle; policy accept;\n');
    expect(text).toContain(clamp);
    expect(text.match(/masquerade fully-random comment/g)).toHaveLength(2);
    expect(renderMasqRuleset(base)).not.toContain('forward');
  });

  it('without masquerade: the clamp alone, no sets and no nat chain (no connection tracking)', () => {
    const text = renderMasqRuleset({
      ...base,
      masquerade: false,
      clampMssInto: ['trellis.v4', 'trellis.v6'],
    });
    expect(text).toContain(clamp);
    expect(text).not.toMatch(/\bnat\b|masquerade|\tset /);
    // Neither: the table is only replaced by an empty one.
    expect(renderMasqRuleset({ ...base, masquerade: false })).toBe(
      'table inet trellis {}\ndelete table inet trellis\ntable inet trellis {\n}\n',
    );
  });

  it('rejects a device name nft would read as something else', () => {
    for (const bad of ['', 'a"b', 'eth0 }', 'a-very-long-interface', 7]) {
      expect(() => renderMasqRuleset({ ...base, clampMssInto: [bad as string] })).toThrow(
        /invalid clampMssInto\[0\]/,
      );
    }
  });
});

describe('the node into the tunnels', () => {
  const tunnels = ['trellis.v6', 'trellis.v4'];

  it('masquerades what leaves through the tunnels to the pod network from anything but our pods, per family', () => {
    const text = renderMasqRuleset({ ...base, tunnels });
    expect(text).toContain(
      'oifname { "trellis.v4", "trellis.v6" } ip saddr != @pods_v4 ip daddr @nomasq_v4 counter masquerade fully-random',
    );
    expect(text).toContain(
      'oifname { "trellis.v4", "trellis.v6" } ip6 saddr != @pods_v6 ip6 daddr @nomasq_v6 counter masquerade fully-random',
    );
    // In the one nat chain, after the pods' rules (disjoint sources: the order changes nothing).
    const chain = text.slice(text.indexOf('chain postrouting'));
    expect(chain.match(/masquerade fully-random/g)).toHaveLength(4);
    expect(chain.indexOf('ip saddr @pods_v4')).toBeLessThan(chain.indexOf('ip saddr != @pods_v4'));
    expect(renderMasqRuleset(base)).not.toContain('oifname');
  });

  it('only with the masquerade sets, and only for the families with pods here', () => {
    expect(renderMasqRuleset({ ...base, tunnels, masquerade: false })).not.toContain('masquerade');
    const v4 = renderMasqRuleset({ ...base, podCIDRs: { v4: ['10.244.0.0/24'], v6: [] }, tunnels });
    expect(v4).toContain('ip saddr != @pods_v4');
    expect(v4).not.toContain('ip6');
  });

  it('rejects a device name nft would read as something else', () => {
    expect(() => renderMasqRuleset({ ...base, tunnels: ['a"b'] })).toThrow(/invalid tunnels\[0\]/);
  });
});

describe('renderDeleteTable', () => {
  it('is idempotent nft input: create-if-missing then delete', () => {
    expect(renderDeleteTable()).toBe('table inet trellis {}\ndelete table inet trellis\n');
    expect(() => renderDeleteTable('Bad-Name')).toThrow(MasqConfigError);
  });
});
