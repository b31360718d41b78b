import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ForwardFirewallWatch } from '../../../pkg/agent/forward-firewall.ts';
import {
  ACCEPT_COMMENT,
  commandText,
  type FirewallCommand,
  type ForwardRuleset,
  type Rule,
} from '../../../pkg/firewall/index.ts';

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

function setup(
  read: (cidrs: readonly string[]) => Promise<ForwardRuleset>,
  write?: (cmd: FirewallCommand) => Promise<unknown>,
) {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { watch: new ForwardFirewallWatch({ read, log, ...(write === undefined ? {} : { write }) }), lines };
}

/** A FORWARD chain held as rule lists, which the fake nft below edits as nft would. */
function fakeNft(initial: Rule[]) {
  let rules = [...initial];
  let next = 100;
  const writes: string[] = [];
  const read = async (): Promise<ForwardRuleset> => ({
    baseChains: [{ family: 'ip', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 }],
    rules: new Map([['ip filter FORWARD', [...rules]]]),
  });
  const write = async ({ tool, args }: FirewallCommand): Promise<void> => {
    expect(tool).toBe('nft');
    writes.push(args.join(' '));
    if (args[0] === 'delete') {
      const handle = Number(args.at(-1));
      rules = rules.filter((r) => r.handle !== handle);
      return;
    }
    // add rule ip filter FORWARD ip saddr|daddr CIDR counter accept comment "..."
    const [, , , , , proto, field, cidr] = args;
    const [a, len] = cidr!.split('/');
    rules.push({
      handle: next++,
      expr: [
        {
          match: {
            op: '==',
            left: { payload: { protocol: proto, field } },
            right: { prefix: { addr: a, len: Number(len) } },
          },
        },
        { accept: null },
      ],
      comment: ACCEPT_COMMENT,
    });
  };
  return { read, write, writes, rules: () => rules };
}

describe('ForwardFirewallWatch', () => {
  it("asks the reader to follow this node's own CIDRs' jumps too when the checked prefix is wider", async () => {
    const asked: string[][] = [];
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const watch = new ForwardFirewallWatch({
      read: async (cidrs) => {
        asked.push([...cidrs]);
        return dockerForward(false);
      },
      own: () => ['10.244.1.0/24'],
      // Accepts are inserted (the fake firewall keeps dropping): the read after them asks the same.
      write: async () => undefined,
      log,
    });
    await watch.check(['10.244.0.0/16']);
    expect(asked.length).toBeGreaterThan(1);
    for (const a of asked) expect(a).toEqual(['10.244.0.0/16', '10.244.1.0/24']);
    asked.length = 0;
    await watch.check(['10.244.1.0/24']);
    for (const a of asked) expect(a).toEqual(['10.244.1.0/24']);
  });

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

  it("report only (--no-accept-forward): an earlier run's accept hides only what it lets through; a drop it leaves is a block", async () => {
    // An earlier run's accept of the pods' packets one way only; the policy drops the other way.
    const nft = fakeNft([
      {
        handle: 7,
        expr: [
          {
            match: {
              op: '==',
              left: { payload: { protocol: 'ip', field: 'saddr' } },
              right: { prefix: { addr: '10.244.1.0', len: 24 } },
            },
          },
          { accept: null },
        ],
        comment: ACCEPT_COMMENT,
      },
    ]);
    const { watch, lines } = setup(nft.read);
    await watch.check(POD_CIDRS);
    const state = watch.state();
    expect(state.blocks.map((b) => b.direction)).toEqual(['to-pods']);
    expect(state.hiddenBlocks?.map((b) => b.direction)).toEqual(['from-pods']);
    expect(state.earlierAccepts).toEqual(['ip filter FORWARD handle 7']);
    expect(state.earlierRemove).toEqual(['nft delete rule ip filter FORWARD handle 7']);
    const said = lines.find((l) => String(l.msg).startsWith('accept rules an earlier run'));
    expect(said).toMatchObject({
      withoutThem: ['ip filter FORWARD drops IPv4 packets from pods (10.244.1.0/24): policy drop'],
    });
    expect(nft.writes).toEqual([]);
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
      vxlanBlocks: [],
      error: 'nft: exit code 1: Error: Could not process rule',
    });
  });

  it('a chain it cannot judge (a queue) is in the state and said once at info, not reported as a drop', async () => {
    const queued: ForwardRuleset = {
      baseChains: [{ family: 'ip', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 }],
      rules: new Map([['ip filter FORWARD', [{ handle: 1, expr: [{ queue: { num: 100 } }] }]]]),
    };
    const { watch, lines } = setup(async () => queued);
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(watch.state()).toMatchObject({ blocks: [], undecided: ['ip filter FORWARD'] });
    expect(lines.map((l) => [l.level, l.chains])).toEqual([[30, ['ip filter FORWARD']]]);
  });

  it("a legacy table that could not be read: its drops stand as last read (no 'no longer drops'), the others' are checked, said once and when it is read again", async () => {
    /** Docker's policy drop in legacy iptables' FORWARD, and an nft table's. */
    const legacyDrop: ForwardRuleset = {
      baseChains: [
        { family: 'iptables-legacy', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 },
        { family: 'ip', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 },
      ],
      rules: new Map([
        ['iptables-legacy filter FORWARD', []],
        ['ip filter FORWARD', []],
      ]),
    };
    let next: ForwardRuleset = legacyDrop;
    const { watch, lines } = setup(async () => next);
    await watch.check(POD_CIDRS);
    const chains = () => [...new Set(watch.state().blocks.map((b) => b.chain))];
    expect(chains()).toEqual(['iptables-legacy filter FORWARD', 'ip filter FORWARD']);
    // The save tool fails now, and nft's table lets the pods through: the legacy drop stands.
    next = {
      ...dockerForward(true),
      unread: [{ family: 'iptables-legacy', error: 'spawn iptables-legacy-save ENOENT' }],
    };
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(chains()).toEqual(['iptables-legacy filter FORWARD']);
    expect(watch.state()).toMatchObject({
      unreadTables: [{ family: 'iptables-legacy', error: 'spawn iptables-legacy-save ENOENT' }],
    });
    expect(watch.state().error).toBeUndefined();
    expect(watch.state().undecided).toBeUndefined();
    const said = () => lines.map((l) => String(l.msg).slice(0, 40));
    expect(said()).toEqual([
      'the host firewall drops pod traffic this',
      'could not read a legacy iptables table o',
      'the host firewall drops pod traffic this',
    ]);
    expect(lines[1]!.tables).toEqual(['iptables-legacy filter: spawn iptables-legacy-save ENOENT']);
    // Read again, and it lets them through now.
    next = dockerForward(true);
    await watch.check(POD_CIDRS);
    expect(watch.state().blocks).toEqual([]);
    expect(watch.state().unreadTables).toBeUndefined();
    expect(said().slice(3)).toEqual([
      "the host firewall's legacy iptables tabl",
      'the host firewall no longer drops pod tr',
    ]);
  });

  it('inserting accepts, a legacy table unread in one of the two reads of a check: its drop neither doubled nor lost', async () => {
    /** nft's FORWARD (dropping or letting the pods through) beside legacy iptables' operator drop of them. */
    const withLegacyDrop = (nft: ForwardRuleset): ForwardRuleset => ({
      baseChains: [
        ...nft.baseChains,
        { family: 'iptables-legacy', table: 'filter', name: 'FORWARD', policy: 'accept', prio: 0 },
      ],
      rules: new Map([
        ...nft.rules,
        [
          'iptables-legacy filter FORWARD',
          [
            {
              handle: 1,
              expr: [
                {
                  match: {
                    op: '==',
                    left: { payload: { protocol: 'ip', field: 'saddr' } },
                    right: { prefix: { addr: '10.244.1.0', len: 24 } },
                  },
                },
                { drop: null },
              ],
            },
          ],
        ],
      ]),
    });
    const unread = (rs: ForwardRuleset): ForwardRuleset => ({
      ...rs,
      baseChains: rs.baseChains.filter((c) => c.family !== 'iptables-legacy'),
      unread: [{ family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' }],
    });
    // Each check reads before its accepts (nft's drop) and after them (nft lets the pods through).
    let reads: ForwardRuleset[] = [];
    const { watch, lines } = setup(
      async () => reads.shift()!,
      async () => undefined,
    );
    const legacyBlocks = () => watch.state().blocks.filter((b) => b.chain.startsWith('iptables-legacy'));
    reads = [withLegacyDrop(dockerForward(false)), withLegacyDrop(dockerForward(true))];
    await watch.check(POD_CIDRS);
    expect(legacyBlocks().map((b) => b.by)).toEqual(['rule 1 in iptables-legacy filter FORWARD: drop']);
    // Unread before the accepts, read after them: the re-read's drop, once, and the table not called
    // unread (nothing tunnels here: the first read's input walk decided nothing).
    reads = [unread(withLegacyDrop(dockerForward(false))), withLegacyDrop(dockerForward(true))];
    await watch.check(POD_CIDRS);
    expect(legacyBlocks()).toHaveLength(1);
    expect(watch.state().unreadTables).toBeUndefined();
    // Read before the accepts, unread after them: that first read's drop stands.
    reads = [withLegacyDrop(dockerForward(false)), unread(withLegacyDrop(dockerForward(true)))];
    await watch.check(POD_CIDRS);
    expect(legacyBlocks()).toHaveLength(1);
    expect(watch.state().unreadTables).toEqual([
      { family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' },
    ]);
    expect(lines.filter((l) => String(l.msg).includes('no longer drops'))).toEqual([]);
  });

  it('a legacy drop its accepts answered is not carried when the re-read cannot read the table; nor, once the pod CIDRs changed, a block of the old ones', async () => {
    const legacyPolicyDrop: ForwardRuleset = {
      baseChains: [{ family: 'iptables-legacy', table: 'filter', name: 'FORWARD', policy: 'drop', prio: 0 }],
      rules: new Map([['iptables-legacy filter FORWARD', []]]),
    };
    const unreadLegacy: ForwardRuleset = {
      baseChains: [],
      rules: new Map(),
      unread: [{ family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' }],
    };
    let reads: ForwardRuleset[] = [];
    const written: string[] = [];
    const inserting = setup(
      async () => reads.shift()!,
      async (cmd) => void written.push(commandText(cmd)),
    );
    reads = [legacyPolicyDrop, unreadLegacy];
    await inserting.watch.check(POD_CIDRS);
    expect(written).toEqual([
      expect.stringMatching(/^iptables-legacy -w 5 -A FORWARD -s 10\.244\.1\.0\/24 /),
      expect.stringMatching(/^iptables-legacy -w 5 -A FORWARD -d 10\.244\.1\.0\/24 /),
    ]);
    // Answered, as the accept log says: not reported as dropping with the command just run as its fix.
    expect(inserting.watch.state().blocks).toEqual([]);
    expect(inserting.watch.state().unreadTables).toEqual([
      { family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' },
    ]);

    // One insert refused: only the drop whose accept went in is taken as answered.
    const refusing = setup(
      async () => reads.shift()!,
      async (cmd) => {
        if (commandText(cmd).includes(' -d ')) throw new Error('iptables-legacy: exit status 4');
      },
    );
    reads = [legacyPolicyDrop, unreadLegacy];
    await refusing.watch.check(POD_CIDRS);
    expect(refusing.watch.state().blocks.map((b) => b.direction)).toEqual(['to-pods']);

    // Report only: the drop stands while the table is unread, for the pod CIDRs still checked.
    let next = legacyPolicyDrop;
    const reporting = setup(async () => next);
    await reporting.watch.check(POD_CIDRS);
    expect(reporting.watch.state().blocks).toHaveLength(2);
    next = unreadLegacy;
    await reporting.watch.check(POD_CIDRS);
    expect(reporting.watch.state().blocks).toHaveLength(2);
    await reporting.watch.check(['10.245.0.0/24']);
    expect(reporting.watch.state().blocks).toEqual([]);
  });

  it('checks asked for while one runs share one more after it, with the last pod CIDRs; no pod CIDRs yet: nothing read', async () => {
    const reads: string[] = [];
    let release: () => void = () => {};
    const { watch } = setup(async (cidrs) => {
      reads.push(cidrs.join(','));
      await new Promise<void>((r) => {
        release = r;
      });
      return dockerForward(true);
    });
    await watch.check([]);
    expect(reads).toEqual([]);
    const a = watch.check(POD_CIDRS);
    // Its inputs read, new ones come: the pod CIDRs changed, a peer became tunnelled.
    const b = watch.check(POD_CIDRS);
    const c = watch.check(['10.244.9.0/24']);
    expect(reads).toEqual(['10.244.1.0/24']);
    release();
    await a;
    // The one after it started when it ended.
    expect(reads).toEqual(['10.244.1.0/24', '10.244.9.0/24']);
    release();
    await Promise.all([b, c]);
    // None running: one check, none after it.
    const d = watch.check(POD_CIDRS);
    release();
    await d;
    expect(reads).toEqual(['10.244.1.0/24', '10.244.9.0/24', '10.244.1.0/24']);
  });

  it('with write: inserts one accept per blocked direction, reads again, logs once, and deletes accepts of prefixes no longer asked for once their replacements are in', async () => {
    const nft = fakeNft([]);
    const { watch, lines } = setup(nft.read, nft.write);
    await watch.check(POD_CIDRS);
    expect(nft.writes).toEqual([
      `add rule ip filter FORWARD ip saddr 10.244.1.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
      `add rule ip filter FORWARD ip daddr 10.244.1.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
    ]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 40,
      msg: expect.stringMatching(/^the host firewall dropped pod traffic this node forwards; inserted rules/),
      blocked: [
        'ip filter FORWARD drops IPv4 packets from pods (10.244.1.0/24): policy drop',
        'ip filter FORWARD drops IPv4 packets to pods (10.244.1.0/24): policy drop',
      ],
      inserted: nft.writes.map((w) => `nft ${w}`),
    });
    expect(lines[0]!.stillBlocked).toBeUndefined();
    expect(watch.state().blocks).toEqual([]);

    // Nothing to do next time.
    await watch.check(POD_CIDRS);
    expect(nft.writes).toHaveLength(2);
    expect(lines).toHaveLength(1);

    // The prefixes changed: the new accepts go in first, then the old ones go (no moment without).
    await watch.check(['10.244.7.0/24']);
    expect(nft.writes.slice(2)).toEqual([
      `add rule ip filter FORWARD ip saddr 10.244.7.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
      `add rule ip filter FORWARD ip daddr 10.244.7.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
      'delete rule ip filter FORWARD handle 100',
      'delete rule ip filter FORWARD handle 101',
    ]);
    expect(lines.map((l) => l.msg).slice(1, 2)).toEqual([
      'deleted accept rules for prefixes no longer accepted',
    ]);
    expect(nft.rules().map((r) => r.handle)).toEqual([102, 103]);
    expect(watch.state().blocks).toEqual([]);

    // Narrower again (a node left the pod network): the wider accepts let the narrower prefix
    // through, yet they are judged as gone, so the narrower ones go in before they are deleted.
    await watch.check(['10.244.0.0/16']);
    await watch.check(['10.244.7.0/24']);
    expect(nft.writes.slice(-4)).toEqual([
      `add rule ip filter FORWARD ip saddr 10.244.7.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
      `add rule ip filter FORWARD ip daddr 10.244.7.0/24 counter accept comment "${ACCEPT_COMMENT}"`,
      'delete rule ip filter FORWARD handle 104',
      'delete rule ip filter FORWARD handle 105',
    ]);
    expect(watch.state().blocks).toEqual([]);

    // No drop left (the firewall's policy accepts now): stale accepts still go.
    const rs = await nft.read();
    const accepting = async (): Promise<ForwardRuleset> => ({
      ...rs,
      baseChains: rs.baseChains.map((c) => ({ ...c, policy: 'accept' })),
      rules: new Map([['ip filter FORWARD', nft.rules()]]),
    });
    const quiet = setup(accepting, nft.write);
    await quiet.watch.check(['10.244.9.0/24']);
    expect(nft.writes.slice(-2)).toEqual([
      'delete rule ip filter FORWARD handle 106',
      'delete rule ip filter FORWARD handle 107',
    ]);
  });

  it('with write: accepts whose replacements failed to go in stay (the policy would drop everything meanwhile)', async () => {
    const nft = fakeNft([]);
    let refuse = false;
    const write = async (cmd: FirewallCommand): Promise<void> => {
      if (refuse && cmd.args[0] === 'add') throw new Error('nft: Could not process rule: Resource busy');
      await nft.write(cmd);
    };
    const { watch } = setup(nft.read, write);
    await watch.check(POD_CIDRS);
    expect(nft.rules().map((r) => r.handle)).toEqual([100, 101]);
    refuse = true;
    await watch.check(['10.244.0.0/20']);
    expect(nft.writes.filter((w) => w.startsWith('delete'))).toEqual([]);
    expect(nft.rules().map((r) => r.handle)).toEqual([100, 101]);
    // The next check puts them in, then the old ones go.
    refuse = false;
    await watch.check(['10.244.0.0/20']);
    expect(nft.writes.slice(-2)).toEqual([
      'delete rule ip filter FORWARD handle 100',
      'delete rule ip filter FORWARD handle 101',
    ]);
  });

  it("keepOthers: a check of this node's pod CIDRs before the pod network is known deletes none of the wider accepts", async () => {
    const nft = fakeNft([]);
    const { watch } = setup(nft.read, nft.write);
    await watch.check(['10.244.0.0/20']);
    expect(nft.rules().map((r) => r.handle)).toEqual([100, 101]);
    // Restarted with the API away: the own pod CIDR, inside the accepts of the last run: nothing to do.
    await watch.check(POD_CIDRS, { keepOthers: true });
    expect(nft.writes).toHaveLength(2);
    expect(nft.rules().map((r) => r.handle)).toEqual([100, 101]);
    // Without accepts yet (a fresh node behind Docker's FORWARD DROP): the own pod CIDR's go in.
    const fresh = fakeNft([]);
    const first = setup(fresh.read, fresh.write);
    await first.watch.check(POD_CIDRS, { keepOthers: true });
    expect(fresh.rules().map((r) => r.handle)).toEqual([100, 101]);
  });

  it("with write: a drop that appears while its accepts go in is the next check's, not a failure of them", async () => {
    const nft = fakeNft([]);
    let reads = 0;
    // From the re-read on, a second table drops pod traffic too (ip6tables-nft right after
    // iptables-nft, as Docker's start does, or another tool's table just loaded).
    const read = async (): Promise<ForwardRuleset> => {
      const rs = await nft.read();
      if (++reads < 2) return rs;
      return {
        baseChains: [
          ...rs.baseChains,
          { family: 'ip', table: 'other', name: 'FORWARD', policy: 'drop', prio: 10 },
        ],
        rules: new Map([...rs.rules, ['ip other FORWARD', []]]),
      };
    };
    const { watch, lines } = setup(read, nft.write);
    await watch.check(POD_CIDRS);
    expect(lines[0]).toMatchObject({
      msg: expect.stringMatching(/^the host firewall dropped pod traffic this node forwards; inserted rules/),
      blocked: [
        'ip filter FORWARD drops IPv4 packets from pods (10.244.1.0/24): policy drop',
        'ip filter FORWARD drops IPv4 packets to pods (10.244.1.0/24): policy drop',
      ],
    });
    expect(lines[0]!.stillBlocked).toBeUndefined();
    // What the re-read found is what drops now, said as a new block: the next check (soon: its
    // table is watched) accepts it.
    expect(lines.slice(1)).toMatchObject([
      {
        msg: expect.stringMatching(/^the host firewall drops pod traffic this node forwards: /),
        blocked: [
          'ip other FORWARD drops IPv4 packets from pods (10.244.1.0/24): policy drop',
          'ip other FORWARD drops IPv4 packets to pods (10.244.1.0/24): policy drop',
        ],
      },
    ]);
    expect(watch.state().blocks.map((b) => b.chain)).toEqual(['ip other FORWARD', 'ip other FORWARD']);
  });

  it('with write: an insert nft refuses is logged with what still drops, and reported as blocked', async () => {
    const nft = fakeNft([]);
    const { watch, lines } = setup(nft.read, async () => {
      throw new Error('nft: exit code 1: Error: Could not process rule: Operation not supported');
    });
    await watch.check(POD_CIDRS);
    expect(lines[0]).toMatchObject({
      msg: expect.stringMatching(/did not let all of it through$/),
      inserted: [],
      errors: [
        'nft: exit code 1: Error: Could not process rule: Operation not supported',
        'nft: exit code 1: Error: Could not process rule: Operation not supported',
      ],
      stillBlocked: expect.any(Array),
    });
    expect(lines[1]).toMatchObject({ msg: expect.stringMatching(/^the host firewall drops pod traffic/) });
    expect(watch.state().blocks).toHaveLength(2);
  });

  it('names the tables to watch: those that dropped pod traffic, then those holding its accepts', async () => {
    const nft = fakeNft([]);
    const seen: unknown[] = [];
    const log = pino({ level: 'silent' });
    const watch = new ForwardFirewallWatch({
      read: nft.read,
      write: nft.write,
      log,
      onTables: (t) => seen.push(t),
    });
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(seen).toEqual([[{ family: 2, name: 'filter' }], [{ family: 2, name: 'filter' }]]);
    const healthy = new ForwardFirewallWatch({
      read: async () => dockerForward(true),
      log,
      onTables: (t) => seen.push(t),
    });
    await healthy.check(POD_CIDRS);
    expect(seen.at(-1)).toEqual([]);
  });

  it("with write: a drop that names the pods is the operator's: nothing inserted, reported with its handle", async () => {
    const writes: string[][] = [];
    const read = async (): Promise<ForwardRuleset> => ({
      baseChains: [{ family: 'ip', table: 'filter', name: 'FORWARD', policy: 'accept', prio: 0 }],
      rules: new Map([
        [
          'ip filter FORWARD',
          [
            {
              handle: 7,
              expr: [
                {
                  match: {
                    op: '==',
                    left: { payload: { protocol: 'ip', field: 'daddr' } },
                    right: { prefix: { addr: '10.244.1.0', len: 24 } },
                  },
                },
                { drop: null },
              ],
            },
          ],
        ],
      ]),
    });
    const { watch, lines } = setup(read, async (cmd) => writes.push(cmd.args));
    await watch.check(POD_CIDRS);
    expect(writes).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: expect.stringMatching(/^the host firewall drops pod traffic this node forwards/),
      blocked: [
        'ip filter FORWARD drops IPv4 packets to pods (10.244.1.0/24): rule 7 in ip filter FORWARD: drop',
      ],
      fix: [
        "the rule names the pods' addresses or veths; if they should pass, delete it: nft delete rule ip filter FORWARD handle 7",
      ],
    });
  });

  it("reports an input chain that drops the tunnelled peers' VXLAN once, never fixes it, and says when it lets it in", async () => {
    let open = false;
    const asked: unknown[] = [];
    const kind = { family: 4 as const, port: 8472, sources: ['10.100.1.12'], devices: ['eth0'] };
    const read = async (_: readonly string[], vxlan: readonly unknown[]): Promise<ForwardRuleset> => {
      asked.push(vxlan);
      const rs = dockerForward(true);
      rs.baseChains.push({
        family: 'ip',
        table: 'filter',
        name: 'INPUT',
        policy: 'drop',
        prio: 0,
        hook: 'input',
      });
      const udp8472 = {
        match: { op: '==', left: { payload: { protocol: 'udp', field: 'dport' } }, right: 8472 },
      };
      rs.rules.set('ip filter INPUT', open ? [{ handle: 1, expr: [udp8472, { accept: null }] }] : []);
      return rs;
    };
    const writes: FirewallCommand[] = [];
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const watch = new ForwardFirewallWatch({
      read,
      vxlan: () => [kind],
      write: async (c) => writes.push(c),
      log,
    });
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(asked).toEqual([[kind], [kind]]);
    expect(writes).toEqual([]);
    expect(watch.state().vxlanBlocks).toEqual([
      { family: 4, port: 8472, chain: 'ip filter INPUT', by: 'policy drop' },
    ]);
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [
        40,
        'the host firewall drops the VXLAN packets of the nodes this node tunnels to: pods here and on those nodes cannot reach each other until it accepts their UDP port (trellis does not open it)',
      ],
    ]);
    expect(lines[0]).toMatchObject({
      fix: ['iptables -I INPUT -p udp --dport 8472 -j ACCEPT'],
      peers: 1,
      note: expect.stringContaining('--add-port=8472/udp'),
    });
    open = true;
    await watch.check(POD_CIDRS);
    expect(watch.state().vxlanBlocks).toEqual([]);
    expect(lines.at(-1)).toMatchObject({
      level: 30,
      msg: 'the host firewall lets in the VXLAN packets of the nodes this node tunnels to',
    });
  });
});

describe("ForwardFirewallWatch: an unread legacy table and this node's own CIDRs", () => {
  it('carries a drop of the own CIDR walked inside the wider pod network only when it is the operator’s (targeted)', async () => {
    const own = '10.244.1.0/24';
    const dropOwn = (targeted: boolean): ForwardRuleset => ({
      baseChains: [
        { family: 'iptables-legacy', table: 'filter', name: 'FORWARD', policy: 'accept', prio: 0 },
      ],
      rules: new Map([
        [
          'iptables-legacy filter FORWARD',
          [
            {
              handle: 1,
              expr: [
                ...(targeted
                  ? [
                      {
                        match: {
                          op: '==',
                          left: { payload: { protocol: 'ip', field: 'saddr' } },
                          right: { prefix: { addr: '10.244.1.0', len: 24 } },
                        },
                      },
                    ]
                  : []),
                { drop: null },
              ],
            },
          ],
        ],
      ]),
    });
    for (const targeted of [true, false]) {
      let next = dropOwn(targeted);
      const watch = new ForwardFirewallWatch({
        read: async () => next,
        own: () => [own],
        log: pino({ level: 'silent' }),
      });
      // At start the agent checks its own CIDR alone, then the cluster's pod network.
      await watch.check([own], { keepOthers: true });
      expect(watch.state().blocks.length).toBeGreaterThan(0);
      next = {
        baseChains: [],
        rules: new Map(),
        unread: [{ family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' }],
      };
      await watch.check(['10.244.0.0/16']);
      const carried = watch.state().blocks.map((b) => `${b.podCIDR} ${b.direction}`);
      expect(carried).toEqual(targeted ? [`${own} from-pods`] : []);
    }
  });
});

describe('ForwardFirewallWatch: an unread legacy INPUT chain', () => {
  it('keeps its VXLAN drop while the table is unread and the peers still tunnel; drops it once none does', async () => {
    const kind = { family: 4 as const, port: 8472, sources: ['10.100.1.12'], devices: ['eth0'] };
    let peers = [kind];
    let readable = true;
    const read = async (): Promise<ForwardRuleset> =>
      readable
        ? {
            baseChains: [
              {
                family: 'iptables-legacy',
                table: 'filter',
                name: 'INPUT',
                policy: 'drop',
                prio: 0,
                hook: 'input',
              },
            ],
            rules: new Map([['iptables-legacy filter INPUT', []]]),
          }
        : {
            baseChains: [],
            rules: new Map(),
            unread: [{ family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' }],
          };
    const log = pino({ level: 'silent' });
    const watch = new ForwardFirewallWatch({ read, vxlan: () => peers, log });
    await watch.check(POD_CIDRS);
    expect(watch.state().vxlanBlocks).toHaveLength(1);
    readable = false;
    await watch.check(POD_CIDRS);
    expect(watch.state().vxlanBlocks).toEqual([
      { family: 4, port: 8472, chain: 'iptables-legacy filter INPUT', by: 'policy drop' },
    ]);
    expect(watch.state().unreadTables).toEqual([
      { family: 'iptables-legacy', error: 'iptables-legacy-save: exit status 4' },
    ]);
    peers = [];
    await watch.check(POD_CIDRS);
    expect(watch.state().vxlanBlocks).toEqual([]);
  });
});

describe("ForwardFirewallWatch: a table another process owns (nftables' owner flag, firewalld 2.2+)", () => {
  it('inserts nothing (the kernel would refuse it with EPERM), reports the block with firewalld’s own fix, and warns once', async () => {
    const owned: ForwardRuleset = {
      baseChains: [
        {
          family: 'inet',
          table: 'firewalld',
          name: 'filter_FORWARD',
          policy: 'accept',
          prio: 10,
          owned: true,
        },
      ],
      rules: new Map([
        [
          'inet firewalld filter_FORWARD',
          [
            // An accept of ours for a pod CIDR the node no longer has: not deleted either.
            {
              handle: 8,
              expr: [
                {
                  match: {
                    op: '==',
                    left: { payload: { protocol: 'ip', field: 'saddr' } },
                    right: { prefix: { addr: '10.244.9.0', len: 24 } },
                  },
                },
                { accept: null },
              ],
              comment: ACCEPT_COMMENT,
            },
            { handle: 9, expr: [{ reject: null }] },
          ],
        ],
      ]),
    };
    const writes: string[] = [];
    const { watch, lines } = setup(
      async () => owned,
      async (cmd) => {
        writes.push(cmd.args.join(' '));
        throw new Error('nft: exit code 1: Error: Could not process rule: Operation not permitted');
      },
    );
    await watch.check(POD_CIDRS);
    await watch.check(POD_CIDRS);
    expect(writes).toEqual([]);
    expect(watch.state().blocks.map((b) => b.owned)).toEqual([true, true]);
    expect(lines.map((l) => l.level)).toEqual([40, 40]); // the owned-table warning and the block, once
    expect(String(lines[0]!.msg)).toMatch(/in a table another process owns/);
    expect(lines[1]!.note).toBeUndefined(); // Docker's advice is not firewalld's
    expect((lines[0]!.fix as string[]).join('\n')).toContain(
      `--add-rich-rule='rule family="ipv4" destination address="10.244.1.0/24" accept'`,
    );
  });
});
