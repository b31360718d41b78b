import { describe, expect, it } from 'vitest';
import {
  type BaseChain,
  describeVxlanBlock,
  type ForwardRuleset,
  parseIptablesSave,
  type Rule,
  type VxlanInKind,
  vxlanFixCommand,
  vxlanInputBlocks,
} from '../../../pkg/firewall/index.ts';

/** Expressions as `nft -j list chain` printed them for these rules (nft 1.0.6, iptables-nft 1.8.9). */
const accept = { accept: null };
const drop = { drop: null };
const reject = { reject: { type: 'icmpx', expr: 'admin-prohibited' } };
const ctEstablished = {
  match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] },
};
const iif = (name: string, op = '==') => ({ match: { op, left: { meta: { key: 'iifname' } }, right: name } });
const dport = (protocol: string, right: unknown) => ({
  match: { op: '==', left: { payload: { protocol, field: 'dport' } }, right },
});
const saddr = (addr: string, len: number) => ({
  match: {
    op: '==',
    left: { payload: { protocol: 'ip', field: 'saddr' } },
    right: { prefix: { addr, len } },
  },
});
const l4proto = (p: string) => ({ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: p } });

/** One base chain at the input hook with its rules (and more chains). */
function input(
  policy: 'accept' | 'drop',
  rules: Record<string, unknown>[][],
  chain: Omit<BaseChain, 'policy' | 'prio' | 'hook'> = { family: 'inet', table: 'filter', name: 'input' },
  more: Record<string, Record<string, unknown>[][]> = {},
): ForwardRuleset {
  const asRules = (list: Record<string, unknown>[][]): Rule[] =>
    list.map((expr, i) => ({ handle: i + 1, expr }));
  const map = new Map<string, Rule[]>([[`${chain.family} ${chain.table} ${chain.name}`, asRules(rules)]]);
  for (const [k, v] of Object.entries(more)) map.set(k, asRules(v));
  return { baseChains: [{ ...chain, policy, prio: 0, hook: 'input' }], rules: map };
}

const V4: VxlanInKind = { family: 4, port: 8472, sources: ['10.100.1.12', '10.100.2.13'], devices: ['eth0'] };

const blocked = (rs: ForwardRuleset, kind = V4) => vxlanInputBlocks(rs, [kind]).map(describeVxlanBlock);

describe('vxlanInputBlocks: the input chains that drop the tunnelled peers’ VXLAN', () => {
  it('a policy drop with the usual openings (established, lo, ssh) drops it', () => {
    const rs = input('drop', [
      [ctEstablished, accept],
      [iif('lo'), accept],
      [dport('tcp', 22), accept],
    ]);
    expect(blocked(rs)).toEqual([
      'inet filter input drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop',
    ]);
  });

  it('the port opened (udp or th dport, in a set or a range) lets it in; another port does not', () => {
    expect(blocked(input('drop', [[dport('udp', 8472), accept]]))).toEqual([]);
    expect(blocked(input('drop', [[dport('th', 8472), accept]]))).toEqual([]);
    expect(blocked(input('drop', [[dport('udp', { set: [53, { range: [8000, 8500] }] }), accept]]))).toEqual(
      [],
    );
    expect(blocked(input('drop', [[dport('udp', 4789), accept]]))).toHaveLength(1);
    expect(blocked(input('drop', [[l4proto('udp'), accept]]))).toEqual([]);
    expect(blocked(input('drop', [[l4proto('tcp'), accept]]))).toHaveLength(1);
    // `tcp dport != 22` needs a TCP header all the same: it accepts no UDP.
    const notSsh = { match: { op: '!=', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 22 } };
    expect(blocked(input('drop', [[notSsh, accept]]))).toHaveLength(1);
  });

  it('a source prefix holding every tunnelled peer accepts; one holding some may: no warning without a certain drop', () => {
    expect(blocked(input('drop', [[saddr('10.100.0.0', 16), accept]]))).toEqual([]);
    expect(blocked(input('drop', [[saddr('10.100.1.0', 24), accept]]))).toEqual([]);
    expect(blocked(input('drop', [[saddr('192.168.0.0', 16), accept]]))).toHaveLength(1);
    // A drop of none of them is passed over; a drop of all of them decides.
    expect(blocked(input('accept', [[saddr('192.168.0.0', 16), drop]]))).toEqual([]);
    expect(blocked(input('accept', [[saddr('10.0.0.0', 8), drop]]))).toEqual([
      'inet filter input drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: rule 1 in inet filter input: drop',
    ]);
  });

  it("firewalld's zones by interface: the peers' device's zone decides, a zone of another device does not", () => {
    const chain = { family: 'inet' as const, table: 'firewalld', name: 'filter_INPUT' };
    const zones = (open: boolean) =>
      input(
        'accept',
        [[ctEstablished, accept], [{ jump: { target: 'filter_INPUT_ZONES' } }], [reject]],
        chain,
        {
          'inet firewalld filter_INPUT_ZONES': [
            [iif('eth1'), { goto: { target: 'filter_IN_internal' } }],
            [iif('eth0'), { goto: { target: 'filter_IN_public' } }],
          ],
          'inet firewalld filter_IN_internal': [[dport('udp', 8472), accept]],
          'inet firewalld filter_IN_public': open
            ? [[dport('udp', 8472), accept]]
            : [[dport('tcp', 22), accept]],
        },
      );
    expect(blocked(zones(true))).toEqual([]);
    expect(blocked(zones(false))).toEqual([
      'inet firewalld filter_INPUT drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: rule 3 in inet firewalld filter_INPUT: reject',
    ]);
    // Peers reached over both devices: either zone may take them, so the final reject is not certain.
    expect(blocked(zones(false), { ...V4, devices: ['eth0', 'eth1'] })).toEqual([]);
  });

  it('only input chains of the family count; forward chains never do', () => {
    const rs = input('drop', [], { family: 'ip6', table: 'filter', name: 'INPUT' });
    expect(blocked(rs)).toEqual([]);
    expect(blocked(rs, { ...V4, family: 6, sources: ['fd00:100:1::12'] })).toHaveLength(1);
    const fwd: ForwardRuleset = {
      baseChains: [{ family: 'ip', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 }],
      rules: new Map([['ip filter FORWARD', []]]),
    };
    expect(blocked(fwd)).toEqual([]);
  });

  it("legacy iptables' INPUT: -p udp --dport (and multiport) read as ports; other udp options are not", () => {
    const save = (...rules: string[]) =>
      [
        '*filter',
        ':INPUT DROP [0:0]',
        ':FORWARD ACCEPT [0:0]',
        ...rules.map((r) => `-A INPUT ${r}`),
        'COMMIT',
      ].join('\n');
    const legacy = (...rules: string[]) => blocked(parseIptablesSave(save(...rules), 4, true));
    expect(legacy('-p udp -m udp --dport 8472 -j ACCEPT')).toEqual([]);
    expect(legacy('-p udp -m multiport --dports 53,8000:8500 -j ACCEPT')).toEqual([]);
    expect(legacy('-i eth+ -p udp -m udp --dport 8472 -j ACCEPT')).toEqual([]);
    // A udp option it cannot judge may accept them: no certain drop, no warning.
    expect(legacy('-p udp -m udp --sport 8472 -j ACCEPT')).toEqual([]);
    expect(legacy('-p tcp -m tcp --dport 8472 -j ACCEPT')).toEqual([
      'iptables-legacy filter INPUT drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop',
    ]);
    // conntrack and state read natively: established connections' accept is not theirs.
    expect(legacy('-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')).toHaveLength(1);
    expect(legacy('-m state --state NEW -p udp -j ACCEPT')).toEqual([]);
    // Without `input`, only FORWARD is read.
    expect(vxlanInputBlocks(parseIptablesSave(save(), 4), [V4])).toEqual([]);
  });
});

describe("the walk's certainty: conntrack, address types, what it cannot see", () => {
  const ct = (key: string, right: unknown) => ({ match: { op: 'in', left: { ct: { key } }, right } });
  const fibLocal = {
    match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' },
  };

  it('each VXLAN packet is new and not NATed: established, related and dnat accepts are not theirs', () => {
    expect(
      blocked(
        input('drop', [
          [ctEstablished, accept],
          [ct('status', ['dnat']), accept],
        ]),
      ),
    ).toHaveLength(1);
    expect(blocked(input('drop', [[ct('state', ['new']), accept]]))).toEqual([]);
  });

  it("ufw's not-local chain returns them (addressed to the node), so ufw's own allow decides", () => {
    const chain = { family: 'ip' as const, table: 'filter', name: 'INPUT' };
    const ufw = (notLocal: Record<string, unknown>[][], allow: boolean) =>
      input('drop', [[{ jump: { target: 'ufw-before-input' } }]], chain, {
        'ip filter ufw-before-input': [
          [iif('lo'), accept],
          [ctEstablished, accept],
          [{ jump: { target: 'ufw-not-local' } }],
          [{ jump: { target: 'ufw-user-input' } }],
        ],
        'ip filter ufw-not-local': notLocal,
        'ip filter ufw-user-input': allow ? [[dport('udp', 8472), accept]] : [[dport('tcp', 22), accept]],
      });
    const judged = [[fibLocal, { return: null }], [drop]];
    expect(blocked(ufw(judged, true))).toEqual([]);
    expect(blocked(ufw(judged, false))).toEqual([
      'ip filter INPUT drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop',
    ]);
    // iptables-nft shows `-m addrtype` as an xt match nft cannot read: the return may happen, so the
    // drop after it is not certain, and nothing is said (rather than a warning that may be false).
    const opaque = [[{ xt: { type: 'match', name: 'addrtype' } }, { return: null }], [drop]];
    expect(blocked(ufw(opaque, false))).toEqual([]);
  });
});

describe('vxlanFixCommand', () => {
  it('an iptables command for iptables-nft and legacy tables, an nft rule otherwise', () => {
    const at = (chain: string) => ({ family: 4 as const, port: 8472, chain, by: 'policy drop' });
    expect(vxlanFixCommand(at('ip filter INPUT'))).toBe('iptables -I INPUT -p udp --dport 8472 -j ACCEPT');
    expect(vxlanFixCommand({ ...at('ip6 filter INPUT'), family: 6 })).toBe(
      'ip6tables -I INPUT -p udp --dport 8472 -j ACCEPT',
    );
    expect(vxlanFixCommand(at('iptables-legacy filter INPUT'))).toBe(
      'iptables-legacy -I INPUT -p udp --dport 8472 -j ACCEPT',
    );
    expect(vxlanFixCommand(at('inet firewalld filter_INPUT'))).toBe(
      'nft insert rule inet firewalld filter_INPUT meta nfproto ipv4 udp dport 8472 accept',
    );
  });

  it("in a table another process owns (firewalld 2.2+'s), firewalld's own command, never nft", () => {
    const owned = {
      family: 4 as const,
      port: 8472,
      chain: 'inet firewalld filter_INPUT',
      by: 'policy drop',
      owned: true as const,
    };
    const fix = vxlanFixCommand(owned);
    expect(fix).toContain('firewall-cmd --permanent --add-port=8472/udp && firewall-cmd --reload');
    expect(fix).not.toMatch(/nft insert/);
    expect(vxlanFixCommand({ ...owned, chain: 'inet other input' })).toContain(
      "accept UDP port 8472 from the nodes this node tunnels to through that program's own configuration",
    );
  });
});
