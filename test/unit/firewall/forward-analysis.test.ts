import { describe, expect, it } from 'vitest';
import {
  ACCEPT_COMMENT,
  acceptCommand,
  type BaseChain,
  chainKey,
  deleteCommand,
  distinctAccepts,
  type ForwardBlock,
  type ForwardRuleset,
  fixCommand,
  forwardBlocks,
  ownAccepts,
  parseChainRules,
  parseForwardBaseChains,
  planAccepts,
  type Rule,
  undecidedChains,
} from '../../../pkg/firewall/index.ts';

/** Expressions as `nft -j` prints them (iptables-nft's rules included). */
const counter = { counter: { packets: 0, bytes: 0 } };
const accept = { accept: null };
const drop = { drop: null };
const reject = { reject: null };
const jump = (target: string) => ({ jump: { target } });
const goto = (target: string) => ({ goto: { target } });
const ret = { return: null };
const addr = (protocol: 'ip' | 'ip6', field: 'saddr' | 'daddr', cidr: string, op = '==') => {
  const [a, len] = cidr.split('/');
  return {
    match: {
      op,
      left: { payload: { protocol, field } },
      right: len === undefined ? a : { prefix: { addr: a, len: Number(len) } },
    },
  };
};
const ifname = (key: 'iifname' | 'oifname', name: string) => ({
  match: { op: '==', left: { meta: { key } }, right: name },
});
const conntrack = { xt: { type: 'match', name: 'conntrack' } };

const V4 = '10.244.1.0/24';
const V6 = 'fd00:10:244:1::/64';

function ruleset(base: BaseChain[], chains: Record<string, Record<string, unknown>[][]>): ForwardRuleset {
  const rules = new Map<string, Rule[]>();
  for (const [key, list] of Object.entries(chains)) {
    rules.set(
      key,
      list.map((expr, i) => ({ handle: i + 1, expr })),
    );
  }
  return { baseChains: base, rules };
}

const ipFilterForward = (policy: 'accept' | 'drop'): BaseChain => ({
  family: 'ip',
  table: 'filter',
  name: 'FORWARD',
  policy,
  prio: 0,
});

function summary(blocks: ForwardBlock[]): string[] {
  return blocks.map((b) => `${b.family} ${b.direction} ${b.chain}: ${b.by}`);
}

describe('forwardBlocks: which forward chains of the host firewall drop pod traffic', () => {
  it("Docker's FORWARD policy DROP with an empty DOCKER-USER drops IPv4 both ways, and leaves IPv6 alone", () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [
        [counter, jump('DOCKER-USER')],
        [ifname('oifname', 'docker0'), conntrack, counter, accept],
      ],
      'ip filter DOCKER-USER': [[counter, ret]],
    });
    expect(summary(forwardBlocks(rs, [V4, V6]))).toEqual([
      '4 from-pods ip filter FORWARD: policy drop',
      '4 to-pods ip filter FORWARD: policy drop',
    ]);
  });

  it('accepting the pod CIDR (or a cluster CIDR holding it) both ways in DOCKER-USER lets both through', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[counter, jump('DOCKER-USER')]],
      'ip filter DOCKER-USER': [
        [addr('ip', 'saddr', '10.244.0.0/16'), counter, accept],
        [addr('ip', 'daddr', V4), counter, accept],
        [counter, ret],
      ],
    });
    expect(forwardBlocks(rs, [V4])).toEqual([]);
  });

  it('accepting only the source lets pods out but nothing in', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[addr('ip', 'saddr', V4), accept]],
    });
    expect(summary(forwardBlocks(rs, [V4]))).toEqual(['4 to-pods ip filter FORWARD: policy drop']);
  });

  it('`-i trl+ -j ACCEPT` and `-o trl+ -j ACCEPT` (iifname/oifname "trl*") cover every pod', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [
        [ifname('iifname', 'trl*'), counter, accept],
        [ifname('oifname', 'trl*'), counter, accept],
      ],
    });
    expect(forwardBlocks(rs, [V4])).toEqual([]);
    // The cluster's pod network, of which V4 alone is this node's: other nodes' pods (a NodePort
    // DNATed to them, their replies) come and go by the uplink or a tunnel, which trl+ does not cover.
    expect(summary(forwardBlocks(rs, ['10.244.0.0/16'], [V4]))).toEqual([
      '4 from-pods ip filter FORWARD: policy drop',
      '4 to-pods ip filter FORWARD: policy drop',
    ]);
    expect(forwardBlocks(rs, [V4], [V4])).toEqual([]);
    // The same check still sees an operator's drop of this node's pods (only a maybe for the wide
    // prefix), and another device's match decides nothing for other nodes' pods.
    const dropsOurs = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [[ifname('iifname', 'trl*'), counter, drop]],
    });
    expect(
      forwardBlocks(dropsOurs, ['10.244.0.0/16'], [V4]).map((b) => [b.podCIDR, b.direction, b.targeted]),
    ).toEqual([[V4, 'from-pods', true]]);
    const notEth0 = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [
        [ifname('iifname', 'eth0'), counter, accept],
        [counter, drop],
      ],
    });
    // A drop the wide kind meets already is said once, not again for this node's own CIDR; a CIDR
    // walked as itself (its family's cover fell back to it) is not walked twice.
    const dropsAll = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [[addr('ip', 'daddr', '10.244.0.0/16'), counter, drop]],
    });
    expect(summary(forwardBlocks(dropsAll, ['10.244.0.0/16'], [V4]))).toEqual([
      '4 to-pods ip filter FORWARD: rule 1 in ip filter FORWARD: drop',
    ]);
    const ownOnly = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [[ifname('iifname', 'trl*'), counter, drop]],
    });
    expect(summary(forwardBlocks(ownOnly, [V4, '10.245.0.0/16'], [V4]))).toEqual([
      '4 from-pods ip filter FORWARD: rule 1 in ip filter FORWARD: drop',
    ]);
    expect(summary(forwardBlocks(notEth0, ['10.244.0.0/16'], [V4]))).toEqual([
      '4 from-pods ip filter FORWARD: rule 2 in ip filter FORWARD: drop',
      '4 to-pods ip filter FORWARD: rule 2 in ip filter FORWARD: drop',
    ]);
    const one = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [
        [ifname('iifname', 'trl3f9c0aa1b2c3'), accept],
        [ifname('oifname', 'eth0'), accept],
      ],
    });
    expect(summary(forwardBlocks(one, [V4]))).toEqual([
      '4 from-pods ip filter FORWARD: policy drop',
      '4 to-pods ip filter FORWARD: policy drop',
    ]);
  });

  it('a match it cannot judge (conntrack state) is passed over: new connections still meet the policy', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[conntrack, counter, accept]],
    });
    expect(forwardBlocks(rs, [V4])).toHaveLength(2);
  });

  it("firewalld's inet chain: policy accept, a final reject: both families, unless an earlier rule accepts", () => {
    const base: BaseChain = {
      family: 'inet',
      table: 'firewalld',
      name: 'filter_FORWARD',
      policy: 'accept',
      prio: 10,
    };
    const rs = ruleset([base], {
      'inet firewalld filter_FORWARD': [[conntrack, accept], [reject]],
    });
    expect(summary(forwardBlocks(rs, [V4, V6]))).toEqual([
      '4 from-pods inet firewalld filter_FORWARD: rule 2 in inet firewalld filter_FORWARD: reject',
      '4 to-pods inet firewalld filter_FORWARD: rule 2 in inet firewalld filter_FORWARD: reject',
      '6 from-pods inet firewalld filter_FORWARD: rule 2 in inet firewalld filter_FORWARD: reject',
      '6 to-pods inet firewalld filter_FORWARD: rule 2 in inet firewalld filter_FORWARD: reject',
    ]);
    const trusted = ruleset([base], {
      'inet firewalld filter_FORWARD': [
        [ifname('iifname', 'trl*'), accept],
        [addr('ip6', 'daddr', 'fd00:10:244::/48'), accept],
        [reject],
      ],
    });
    expect(summary(forwardBlocks(trusted, [V4, V6]))).toEqual([
      '4 to-pods inet firewalld filter_FORWARD: rule 3 in inet firewalld filter_FORWARD: reject',
    ]);
  });

  it('a drop for other addresses or the other family does not count; one for a block holding the pods does', () => {
    const base = ipFilterForward('accept');
    const others = ruleset([base], {
      'ip filter FORWARD': [
        [addr('ip', 'saddr', '192.168.0.0/16'), drop],
        [addr('ip6', 'saddr', '::/0'), drop],
        [addr('ip', 'saddr', V4, '!='), drop],
      ],
    });
    expect(forwardBlocks(others, [V4])).toEqual([]);
    const wide = ruleset([base], {
      'ip filter FORWARD': [[addr('ip', 'daddr', '10.0.0.0/8'), counter, drop]],
    });
    expect(summary(forwardBlocks(wide, [V4]))).toEqual([
      '4 to-pods ip filter FORWARD: rule 1 in ip filter FORWARD: drop',
    ]);
    // Part of the pods only (one address): it cannot say, so it does not claim a block.
    const some = ruleset([base], { 'ip filter FORWARD': [[addr('ip', 'daddr', '10.244.1.7'), drop]] });
    expect(forwardBlocks(some, [V4])).toEqual([]);
  });

  it("iptables' own extensions: -j REJECT rejects, -j LOG and -m comment decide and filter nothing", () => {
    const xt = (type: 'match' | 'target', name: string) => ({ xt: { type, name } });
    // RHEL's stock rules: policy ACCEPT, then -A FORWARD -j REJECT --reject-with icmp-host-prohibited.
    const rhel = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [
        [counter, xt('target', 'LOG')],
        [counter, xt('target', 'REJECT')],
      ],
    });
    expect(summary(forwardBlocks(rhel, [V4]))).toEqual([
      '4 from-pods ip filter FORWARD: rule 2 in ip filter FORWARD: reject',
      '4 to-pods ip filter FORWARD: rule 2 in ip filter FORWARD: reject',
    ]);
    const commented = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [
        [addr('ip', 'saddr', V4), xt('match', 'comment'), counter, accept],
        [addr('ip', 'daddr', V4), xt('match', 'comment'), counter, accept],
      ],
    });
    expect(forwardBlocks(commented, [V4])).toEqual([]);
    // A target this does not know (a jump into user space of its own kind): undecided, not a block.
    const other = ruleset([ipFilterForward('drop')], { 'ip filter FORWARD': [[xt('target', 'NFQUEUE')]] });
    expect(forwardBlocks(other, [V4])).toEqual([]);
  });

  it("a drop that names the pods (their addresses or veths) is marked as the operator's; a catch-all is not", () => {
    const rs = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [
        [addr('ip', 'daddr', '10.0.0.0/8'), drop],
        [ifname('iifname', 'trl*'), drop],
      ],
    });
    expect(forwardBlocks(rs, [V4]).map((b) => [b.direction, b.targeted])).toEqual([
      ['from-pods', true],
      ['to-pods', true],
    ]);
    const catchAll = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [
        [{ match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv4' } }, reject],
      ],
    });
    expect(forwardBlocks(catchAll, [V4]).map((b) => b.targeted)).toEqual([undefined, undefined]);
    // Never lifted: no accept for it, and the advice is to delete it if pods should pass.
    const targeted = forwardBlocks(rs, [V4]);
    expect(distinctAccepts(targeted)).toEqual([]);
    expect(fixCommand(targeted[1]!)).toBe(
      "the rule names the pods' addresses or veths; if they should pass, delete it: nft delete rule ip filter FORWARD handle 1",
    );
  });

  it('goto: the end of the target chain ends the caller too, so the policy decides', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[goto('CHECKS')], [accept]],
      'ip filter CHECKS': [[addr('ip', 'saddr', '192.0.2.0/24'), accept]],
    });
    expect(forwardBlocks(rs, [V4])).toHaveLength(2);
    const jumped = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[jump('CHECKS')], [accept]],
      'ip filter CHECKS': [[addr('ip', 'saddr', '192.0.2.0/24'), accept]],
    });
    expect(forwardBlocks(jumped, [V4])).toEqual([]);
  });

  it('a policy drop reached through a goto or return that certainly applies names it (one that may apply is passed over)', () => {
    const rs = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[conntrack, accept], [ifname('iifname', 'eth0'), goto('ZONES')], [goto('ZONES')]],
      'ip filter ZONES': [[ifname('iifname', 'eth9'), accept]],
    });
    const forward = { family: 'ip', table: 'filter', name: 'FORWARD' };
    expect(forwardBlocks(rs, [V4]).map((b) => [b.direction, b.by, b.exit])).toEqual([
      ['from-pods', 'policy drop', { chain: forward, handle: 3 }],
      ['to-pods', 'policy drop', { chain: forward, handle: 3 }],
    ]);
    // A return that may apply (a mark): passed over, the policy at the end answered as always.
    const marked = ruleset([ipFilterForward('drop')], {
      'ip filter FORWARD': [[{ match: { op: '==', left: { meta: { key: 'mark' } }, right: 1 } }, ret]],
    });
    expect(forwardBlocks(marked, [V4]).map((b) => b.exit)).toEqual([undefined, undefined]);
  });

  it("nft older than 1.0.6 prints iptables' extensions as xt null: judged as rules that may apply, never a crash", () => {
    const old = { xt: null };
    // Docker's FORWARD as nft 1.0.2 prints it: `-m conntrack ... -j ACCEPT` is [xt null, accept], passed
    // over as a match it cannot judge, as conntrack is on newer nft; the policy then drops.
    const rs = ruleset([ipFilterForward('drop')], { 'ip filter FORWARD': [[old, accept]] });
    expect(forwardBlocks(rs, [V4]).map((b) => [b.direction, b.by])).toEqual([
      ['from-pods', 'policy drop'],
      ['to-pods', 'policy drop'],
    ]);
    // RHEL's final `-j REJECT` as [xt null]: its target, unknown, so the chain cannot be called clear.
    const rhel = ruleset([ipFilterForward('accept')], { 'ip filter FORWARD': [[old]] });
    expect(forwardBlocks(rhel, [V4])).toEqual([]);
    expect(undecidedChains(rhel, [V4])).toEqual(['ip filter FORWARD']);
  });

  it('hands to user space (queue) or into a chain it did not read: undecided, not a block', () => {
    const queued = ruleset([ipFilterForward('drop')], { 'ip filter FORWARD': [[{ queue: { num: 100 } }]] });
    expect(forwardBlocks(queued, [V4])).toEqual([]);
    const unread = ruleset([ipFilterForward('drop')], { 'ip filter FORWARD': [[jump('ELSEWHERE')]] });
    expect(forwardBlocks(unread, [V4])).toEqual([]);
    // Neither is known to let the packets through: named, for status and the log.
    expect(undecidedChains(queued, [V4])).toEqual(['ip filter FORWARD']);
    expect(undecidedChains(unread, [V4])).toEqual(['ip filter FORWARD']);
    expect(undecidedChains(ruleset([ipFilterForward('drop')], { 'ip filter FORWARD': [] }), [V4])).toEqual(
      [],
    );
    const cycle = ruleset([ipFilterForward('accept')], {
      'ip filter FORWARD': [[jump('A')]],
      'ip filter A': [[jump('A')]],
    });
    expect(forwardBlocks(cycle, [V4])).toEqual([]);
  });
});

describe('parsing nft -j output', () => {
  it('keeps forward base chains of ip, ip6 and inet tables, not trellis’s own', () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        {
          chain: {
            family: 'ip',
            table: 'filter',
            name: 'FORWARD',
            handle: 1,
            type: 'filter',
            hook: 'forward',
            prio: 0,
            policy: 'drop',
          },
        },
        { chain: { family: 'ip', table: 'filter', name: 'DOCKER-USER', handle: 2 } },
        { chain: { family: 'ip6', table: 'filter', name: 'INPUT', hook: 'input', prio: 0, policy: 'drop' } },
        {
          chain: {
            family: 'inet',
            table: 'trellis',
            name: 'forward',
            hook: 'forward',
            prio: -150,
            policy: 'accept',
          },
        },
        {
          chain: {
            family: 'bridge',
            table: 'filter',
            name: 'FORWARD',
            hook: 'forward',
            prio: 0,
            policy: 'drop',
          },
        },
        {
          chain: {
            family: 'inet',
            table: 'firewalld',
            name: 'filter_FORWARD',
            hook: 'forward',
            prio: 10,
            policy: 'accept',
          },
        },
      ],
    });
    expect(parseForwardBaseChains(json, 'trellis').map(chainKey)).toEqual([
      'ip filter FORWARD',
      'inet firewalld filter_FORWARD',
    ]);
    expect(parseForwardBaseChains(json, 'trellis')[0]?.policy).toBe('drop');
    expect(() => parseForwardBaseChains('Error: oops', 'trellis')).toThrow(/no JSON/);
  });

  it('reads rules with their handles and expressions', () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        { chain: { family: 'ip', table: 'filter', name: 'FORWARD' } },
        {
          rule: {
            family: 'ip',
            table: 'filter',
            chain: 'FORWARD',
            handle: 5,
            expr: [ifname('iifname', 'trl*'), counter, accept],
          },
        },
      ],
    });
    const rules = parseChainRules(json, { family: 'ip', table: 'filter', name: 'FORWARD' });
    expect(rules).toEqual([{ handle: 5, expr: [ifname('iifname', 'trl*'), counter, accept] }]);
  });
});

describe('fixCommand', () => {
  const block = (chain: string, family: 4 | 6, direction: 'from-pods' | 'to-pods'): ForwardBlock => ({
    family,
    podCIDR: family === 4 ? V4 : V6,
    direction,
    chain,
    by: 'policy drop',
  });

  it("iptables-nft's tables get iptables commands, others an nft rule at the top of the chain", () => {
    expect(fixCommand(block('ip filter FORWARD', 4, 'from-pods'))).toBe(
      'iptables -I FORWARD -s 10.244.1.0/24 -j ACCEPT',
    );
    expect(fixCommand(block('ip6 filter FORWARD', 6, 'to-pods'))).toBe(
      'ip6tables -I FORWARD -d fd00:10:244:1::/64 -j ACCEPT',
    );
    expect(fixCommand(block('inet firewalld filter_FORWARD', 6, 'from-pods'))).toBe(
      'nft insert rule inet firewalld filter_FORWARD ip6 saddr fd00:10:244:1::/64 accept',
    );
  });

  it("a table another process owns (firewalld 2.2+'s): firewalld's own command, or its owner's configuration; never nft or iptables", () => {
    const owned = (chain: string, family: 4 | 6, direction: 'from-pods' | 'to-pods'): ForwardBlock => ({
      ...block(chain, family, direction),
      owned: true,
    });
    const from = fixCommand(owned('inet firewalld filter_FORWARD', 4, 'from-pods'));
    expect(from).toContain('inet firewalld is owned by the process that created it');
    expect(from).toContain(
      'firewall-cmd --permanent --new-policy trellis-pods && firewall-cmd --permanent --policy trellis-pods --add-ingress-zone ANY && firewall-cmd --permanent --policy trellis-pods --add-egress-zone ANY;',
    );
    expect(from).toContain(
      `firewall-cmd --permanent --policy trellis-pods --add-rich-rule='rule family="ipv4" source address="10.244.1.0/24" accept' && firewall-cmd --reload`,
    );
    expect(fixCommand(owned('inet firewalld filter_FORWARD', 6, 'to-pods'))).toContain(
      `--add-rich-rule='rule family="ipv6" destination address="fd00:10:244:1::/64" accept'`,
    );
    const other = fixCommand(owned('ip other FORWARD', 4, 'to-pods'));
    expect(other).toBe(
      "ip other is owned by the process that created it (nftables' owner flag): the kernel refuses changes to it from anyone else, trellis included; accept IPv4 packets to 10.244.1.0/24 through that program's own configuration",
    );
    // Even a drop that names the pods: deleting it takes the owner too.
    const targeted: ForwardBlock = {
      ...owned('inet firewalld filter_FORWARD', 4, 'from-pods'),
      targeted: true,
      rule: { chain: { family: 'inet', table: 'firewalld', name: 'filter_FORWARD' }, handle: 9 },
    };
    expect(fixCommand(targeted)).toContain('firewall-cmd');
    expect(fixCommand(targeted)).not.toMatch(/nft (insert|delete)/);
  });
});

describe('the accept rules trellis inserts', () => {
  const policyBlock: ForwardBlock = {
    family: 4,
    podCIDR: V4,
    direction: 'from-pods',
    chain: 'ip filter FORWARD',
    by: 'policy drop',
  };

  it('go at the end of a chain whose policy drops, and right before the rule that drops otherwise', () => {
    expect(acceptCommand(policyBlock).tool).toBe('nft');
    expect(acceptCommand(policyBlock).args).toEqual([
      'add',
      'rule',
      'ip',
      'filter',
      'FORWARD',
      'ip',
      'saddr',
      V4,
      'counter',
      'accept',
      'comment',
      `"${ACCEPT_COMMENT}"`,
    ]);
    const byRule: ForwardBlock = {
      family: 6,
      podCIDR: V6,
      direction: 'to-pods',
      chain: 'inet firewalld filter_FORWARD',
      by: 'rule 9 in inet firewalld filter_FWDI_public: reject',
      rule: { chain: { family: 'inet', table: 'firewalld', name: 'filter_FWDI_public' }, handle: 9 },
    };
    expect(acceptCommand(byRule).args.slice(0, 10)).toEqual([
      'insert',
      'rule',
      'inet',
      'firewalld',
      'filter_FWDI_public',
      'position',
      '9',
      'ip6',
      'daddr',
      V6,
    ]);
  });

  it('are planned against the accepts of ours already there: none, misplaced after their rule, or in place and ineffective', () => {
    const forward = { family: 'ip' as const, table: 'filter', name: 'FORWARD' };
    const ours = (handle: number, field: 'saddr' | 'daddr'): Rule => ({
      handle,
      expr: [addr('ip', field, V4), counter, accept],
      comment: ACCEPT_COMMENT,
    });
    const rejectRule: Rule = { handle: 7, expr: [reject] };
    const byReject = {
      ...policyBlock,
      by: 'rule 7 in ip filter FORWARD: reject',
      rule: { chain: forward, handle: 7 },
    };
    const from: ForwardBlock = byReject;
    const to: ForwardBlock = { ...byReject, direction: 'to-pods' };
    const rs = (rules: Rule[]): ForwardRuleset => ({
      baseChains: [ipFilterForward('accept')],
      rules: new Map([['ip filter FORWARD', rules]]),
    });
    const none = { insert: [], misplaced: [], ineffective: [], unanswerable: [], owned: [] };
    // In a table another process owns: nothing to insert (the kernel would refuse it), reported.
    const fromOwned: ForwardBlock = { ...from, owned: true };
    expect(planAccepts(rs([rejectRule]), [fromOwned, to])).toEqual({
      ...none,
      insert: [to],
      owned: [fromOwned],
    });
    expect(distinctAccepts([fromOwned])).toEqual([]);
    // Nothing of ours yet: both inserted.
    expect(planAccepts(rs([rejectRule]), [from, to])).toEqual({ ...none, insert: [from, to] });
    // Ours after the reject (the reject came later): moved before it.
    expect(planAccepts(rs([rejectRule, ours(8, 'saddr')]), [from, to])).toEqual({
      ...none,
      insert: [from, to],
      misplaced: [{ chain: forward, handle: 8 }],
    });
    // Ours before it and still dropped: nothing more is inserted, ever.
    expect(planAccepts(rs([ours(5, 'saddr'), rejectRule]), [from, to])).toEqual({
      ...none,
      insert: [to],
      ineffective: [from],
    });
    // An earlier version's accept (its comment) is ours too: not inserted again beside it.
    const old: Rule = { ...ours(5, 'saddr'), comment: 'trellis: the pods of this node' };
    expect(planAccepts(rs([old, rejectRule]), [from, to])).toEqual({
      ...none,
      insert: [to],
      ineffective: [from],
    });
    expect(planAccepts(rs([{ ...old, comment: 'someone else' }, rejectRule]), [from])).toEqual({
      ...none,
      insert: [from],
    });
    // The operator's own drop is never answered; a policy behind a goto is left to the operator.
    expect(planAccepts(rs([]), [{ ...from, targeted: true }])).toEqual(none);
    const behindGoto: ForwardBlock = { ...policyBlock, exit: { chain: forward, handle: 3 } };
    expect(planAccepts(rs([]), [behindGoto])).toEqual({ ...none, unanswerable: [behindGoto] });
  });

  it('one per place, family, direction and pod CIDR', () => {
    expect(
      distinctAccepts([policyBlock, { ...policyBlock }, { ...policyBlock, direction: 'to-pods' }]),
    ).toHaveLength(2);
  });

  it('are found again by their comment; those of a pod CIDR still wanted are kept', () => {
    const forward = { family: 'ip' as const, table: 'filter', name: 'FORWARD' };
    const ours = (handle: number, cidr: string): { chain: typeof forward; rule: Rule } => ({
      chain: forward,
      rule: { handle, expr: [addr('ip', 'saddr', cidr), counter, accept], comment: ACCEPT_COMMENT },
    });
    const rules = [
      ours(4, V4),
      ours(5, '10.244.9.0/24'),
      {
        chain: forward,
        rule: { handle: 6, expr: [addr('ip', 'saddr', V4), accept], comment: 'someone else' },
      },
    ];
    expect(ownAccepts(rules).map((r) => r.handle)).toEqual([4, 5]);
    expect(ownAccepts(rules, (p) => p === V4)).toEqual([
      { chain: forward, handle: 5, target: 'saddr 10.244.9.0/24' },
    ]);
    expect(deleteCommand({ chain: forward, handle: 5 }).args).toEqual([
      'delete',
      'rule',
      'ip',
      'filter',
      'FORWARD',
      'handle',
      '5',
    ]);
  });
});
