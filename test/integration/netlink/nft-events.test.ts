import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DELAY_MS, FirewallTableTrigger } from '../../../pkg/agent/firewall-tables.ts';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';
import { MasqTableWatch, renderMasqRuleset } from '../../../pkg/masq/index.ts';
import { nftablesSkipRule } from '../../../pkg/netlink/nft-messages.ts';
import { compileSkipFilters } from '../../../pkg/netlink/skip-filter.ts';
import { closeFd, createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import { getLibc } from '../../../pkg/netns/libc.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { sleep } from '../faults/support.ts';

/**
 * nf_tables notifications from the real kernel, in a namespace of the test's own: what the agent's
 * masquerade-table watch is fed, and what it makes of the agent's own applies and of other people's
 * changes.
 */
type Seen = NftablesEvent | { type: 'overflow' };

/**
 * Whether net.core.optmem_max is the namespace's own (Linux 6.9+): a kernel with one copy for all
 * shows it in the initial namespace alone, so its presence inside the test namespace tells, without
 * writing anything.
 */
function perNamespaceOptmem(ns: string): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, 'test', '-e', '/proc/sys/net/core/optmem_max']).status === 0;
}

/** nft in the namespace; `ip netns exec` execs it in place, so the pid returned is nft's. */
function nft(ns: string, args: string[], input?: string): number {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', ...args], { input, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.pid;
}

/** Another program's table with a set, whose element churn the filtered subscriptions drop. */
const OTHER_TABLE = 'table ip other {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n';

/**
 * Until the transaction `portid` committed was reported; throws after 2 s without it, so that what
 * a test then finds missing is missing from a transaction that was delivered.
 */
async function untilCommitted(seen: readonly Seen[], portid: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!seen.some((e) => e.type === 'generation' && e.portid === portid)) {
    if (Date.now() >= deadline) {
      throw new Error(`the commit of nft ${portid} was not reported within 2 s: ${JSON.stringify(seen)}`);
    }
    await sleep(10);
  }
}

/** The object changes seen: "new rule 1 trellis PORTID" (change, object, family, table, committer). */
function changesOf(seen: readonly Seen[]): string[] {
  return seen.flatMap((e) =>
    e.type === 'change' ? [`${e.change} ${e.object} ${e.family} ${e.table} ${e.portid}`] : [],
  );
}

const title = 'nf_tables notifications (root, real kernel, test namespace)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  afterAll(() => pool.cleanup());

  it('report each object change and each commit; the watch tells our applies from anyone else’s', async () => {
    const ns = pool.add('nftev');
    const seen: Seen[] = [];
    const sub = withNetns(ns.path, () => createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e)));
    const ruleset = renderMasqRuleset({
      podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
      clusterCIDRs: ['10.244.0.0/16'],
      noMasqueradeCIDRs: [],
    });
    /** Runs one nft and returns its pid and its notifications once its commit (generation) arrived. */
    const step = async (args: string[], input?: string): Promise<{ pid: number; evs: Seen[] }> => {
      const from = seen.length;
      const pid = nft(ns.name, args, input);
      const deadline = Date.now() + 2000;
      while (!seen.slice(from).some((e) => e.type === 'generation') && Date.now() < deadline) await sleep(10);
      return { pid, evs: seen.slice(from) };
    };
    try {
      const applyOnce = await step(['-f', '-'], ruleset);
      const applyAgain = await step(['-f', '-'], ruleset);
      const flushChain = await step(['flush', 'chain', 'inet', 'trellis', 'postrouting']);
      // A saved copy of the table restored the way nftables.service does it: same shape as an apply.
      const restore = await step(['-f', '-'], `flush ruleset\n${ruleset}`);
      const otherTable = await step(['add', 'table', 'ip', 'other']);
      const flushAll = await step(['flush', 'ruleset']);

      const tableEvents = (evs: Seen[]) =>
        evs.flatMap((e) =>
          e.type === 'change' && e.object === 'table' ? [`${e.change} ${e.family} ${e.table}`] : [],
        );
      // The apply deletes and re-creates the table (inet = family 1) in one transaction.
      expect(tableEvents(applyAgain.evs)).toEqual(['del 1 trellis', 'new 1 trellis']);
      expect(
        applyAgain.evs.filter((e) => e.type === 'change' && e.object === 'rule' && e.change === 'new'),
      ).toHaveLength(1);
      // Every notification names the process that committed it.
      expect(applyAgain.evs.at(-1)).toEqual({ type: 'generation', portid: applyAgain.pid });
      expect(flushChain.evs).toEqual([
        {
          type: 'change',
          change: 'del',
          object: 'rule',
          family: 1,
          table: 'trellis',
          portid: flushChain.pid,
        },
        { type: 'generation', portid: flushChain.pid },
      ]);
      expect(tableEvents(otherTable.evs)).toEqual(['new 2 other']);
      expect(tableEvents(flushAll.evs).sort()).toEqual(['del 1 trellis', 'del 2 other']);

      // The agent's watch, told which pids were its own nft runs (the two applies).
      const ours = new Set([applyOnce.pid, applyAgain.pid]);
      const watch = new MasqTableWatch({ ours: (pid) => ours.has(pid) });
      const verdicts = (evs: Seen[]) =>
        evs.flatMap((e) => (e.type === 'overflow' ? [] : [watch.feed(e)])).filter(Boolean);
      expect(verdicts(applyOnce.evs)).toEqual([]);
      expect(verdicts(applyAgain.evs)).toEqual([]);
      expect(verdicts(flushChain.evs)).toEqual([true]);
      expect(verdicts(otherTable.evs)).toEqual([]);
      expect(verdicts(restore.evs)).toEqual([true]);
      expect(verdicts(flushAll.evs)).toEqual([true]);
      expect(seen.some((e) => e.type === 'overflow')).toBe(false);
    } finally {
      sub.close();
    }
  });

  it('filtered for one table: other tables’ element churn is dropped in the kernel, all else arrives', async () => {
    const ns = pool.add('nftflt');
    const seen: Seen[] = [];
    const sub = withNetns(ns.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e), { family: 1, name: 'trellis' }),
    );
    try {
      const other = nft(ns.name, ['-f', '-'], OTHER_TABLE);
      const elements = nft(ns.name, ['add', 'element', 'ip', 'other', 's', '{ 192.0.2.1, 192.0.2.2 }']);
      const ours = nft(ns.name, ['-f', '-'], 'table inet trellis {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n');
      const ourElements = nft(ns.name, ['add', 'element', 'inet', 'trellis', 's', '{ 192.0.2.3 }']);
      // Deletes ip other first: a filter on the table name would drop this whole datagram.
      const flush = nft(ns.name, ['flush', 'ruleset']);
      const deadline = Date.now() + 2000;
      while (seen.filter((e) => e.type === 'generation').length < 5 && Date.now() < deadline) await sleep(10);
      await sleep(50);
      expect(seen.flatMap((e) => (e.type === 'generation' ? [e.portid] : []))).toEqual([
        other,
        elements,
        ours,
        ourElements,
        flush,
      ]);
      const changes = seen.flatMap((e) =>
        e.type === 'change' ? [`${e.change} ${e.object} ${e.family} ${e.table} ${e.portid}`] : [],
      );
      expect(changes.filter((c) => c.endsWith(` ${elements}`))).toEqual([]);
      expect(changes.filter((c) => c.endsWith(` ${ourElements}`))).toEqual([
        `new element 1 trellis ${ourElements}`,
      ]);
      expect(changes).toContain(`new table 2 other ${other}`);
      expect(changes).toContain(`del table 1 trellis ${flush}`);
      expect(changes).toContain(`del table 2 other ${flush}`);
    } finally {
      sub.close();
    }
  });

  it('the firewall trigger over a filtered subscription: kube-proxy’s own tables ask for no check, a change of the followed one does', async () => {
    const ns = pool.add('nfttrg');
    let checks = 0;
    const trigger = new FirewallTableTrigger({
      subscribe: (cb, table) =>
        withNetns(ns.path, () => createNetlinkEvents().subscribeNftablesEvents!(cb, table)),
      onChange: () => checks++,
    });
    nft(
      ns.name,
      ['-f', '-'],
      'table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n',
    );
    trigger.follow([{ family: 2, name: 'filter' }]);
    try {
      // What kube-proxy's nftables mode writes on an endpoint change: its own table's chains and rules.
      nft(ns.name, ['add', 'table', 'ip', 'kube-proxy']);
      for (let i = 0; i < 5; i++) {
        nft(ns.name, ['add', 'chain', 'ip', 'kube-proxy', `endpoint-${i}`]);
        nft(ns.name, [
          'add',
          'rule',
          'ip',
          'kube-proxy',
          `endpoint-${i}`,
          'ip',
          'daddr',
          `10.96.0.${i}`,
          'accept',
        ]);
      }
      nft(ns.name, ['add', 'table', 'ip6', 'filter']); // the followed name in another family
      await sleep(DELAY_MS + 500);
      expect(checks).toBe(0);
      // Docker re-creating its rules in the followed table.
      nft(ns.name, ['add', 'rule', 'ip', 'filter', 'FORWARD', 'ip', 'saddr', '172.17.0.0/16', 'accept']);
      const deadline = Date.now() + DELAY_MS + 2000;
      while (checks === 0 && Date.now() < deadline) await sleep(20);
      expect(checks).toBe(1);
    } finally {
      trigger.close();
    }
  });

  it('filtered for one table: a transaction that starts with other tables’ elements and then changes ours arrives', async () => {
    const ns = pool.add('nftmix');
    const seen: Seen[] = [];
    const sub = withNetns(ns.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e), { family: 1, name: 'trellis' }),
    );
    try {
      nft(ns.name, ['-f', '-'], OTHER_TABLE);
      nft(ns.name, ['-f', '-'], 'table inet trellis {\n\tchain c {\n\t}\n}\n');
      // One transaction: the kernel puts its notifications into one datagram, the other table's
      // elements first. A filter that looks at a datagram's first message alone drops all of it.
      const elements = Array.from({ length: 20 }, (_, i) => `192.0.2.${i + 1}`).join(', ');
      const mixed = nft(
        ns.name,
        ['-f', '-'],
        `add element ip other s { ${elements} }\nadd rule inet trellis c counter\n`,
      );
      // Then one that changes the other table's elements alone: still dropped whole.
      const othersOnly = nft(ns.name, [
        'add',
        'element',
        'ip',
        'other',
        's',
        '{ 198.51.100.1, 198.51.100.2 }',
      ]);
      await untilCommitted(seen, othersOnly);
      const changes = changesOf(seen);
      expect(changes).toContain(`new rule 1 trellis ${mixed}`);
      expect(changes.filter((c) => c.endsWith(` ${othersOnly}`))).toEqual([]);
      const watch = new MasqTableWatch();
      const foreign = seen.flatMap((e) => (e.type === 'overflow' ? [] : [watch.feed(e) ? e.portid : -1]));
      expect(foreign.filter((p) => p !== -1)).toContain(mixed);
    } finally {
      sub.close();
    }
  });

  it('filtered under 20 KB of socket option memory (the default of older kernels): a shorter walk is attached', async (ctx) => {
    const ns = pool.add('nftoptm');
    // Written only where the namespace has its own copy; elsewhere it would be the host's.
    if (!perNamespaceOptmem(ns.name)) ctx.skip();
    const set = spawnSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.core.optmem_max=20480']);
    expect(set.status).toBe(0);
    const longest = compileSkipFilters(nftablesSkipRule(1, 'trellis'))[0]!;
    const refused = withNetns(ns.path, () => {
      const s = getLibc().socket(16, 3, 12); // AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER
      try {
        return getLibc().attachFilter(s.value, longest);
      } finally {
        closeFd(s.value);
      }
    });
    expect(refused.errno).toBe(12); // ENOMEM: the longest walk does not fit here
    const seen: Seen[] = [];
    const sub = withNetns(ns.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e), { family: 1, name: 'trellis' }),
    );
    try {
      nft(ns.name, ['-f', '-'], OTHER_TABLE);
      nft(ns.name, ['-f', '-'], 'table inet trellis {\n\tchain c {\n\t}\n}\n');
      const mixed = nft(
        ns.name,
        ['-f', '-'],
        'add element ip other s { 192.0.2.1, 192.0.2.2 }\nadd rule inet trellis c counter\n',
      );
      const othersOnly = nft(ns.name, ['add', 'element', 'ip', 'other', 's', '{ 198.51.100.1 }']);
      await untilCommitted(seen, othersOnly);
      const changes = changesOf(seen);
      expect(changes).toContain(`new rule 1 trellis ${mixed}`);
      expect(changes.filter((c) => c.endsWith(` ${othersOnly}`))).toEqual([]);
    } finally {
      sub.close();
    }
  });

  it('filtered for the longest table name the agent takes: the kernel accepts the program and it filters', async () => {
    const ns = pool.add('nftlong');
    const name = `t${'x'.repeat(31)}`;
    const seen: Seen[] = [];
    const sub = withNetns(ns.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!((e) => seen.push(e), { family: 1, name }),
    );
    try {
      nft(ns.name, ['-f', '-'], OTHER_TABLE);
      const othersOnly = nft(ns.name, ['add', 'element', 'ip', 'other', 's', '{ 198.51.100.1 }']);
      const ours = nft(ns.name, ['add', 'table', 'inet', name]);
      await untilCommitted(seen, ours);
      const changes = changesOf(seen);
      expect(changes).toContain(`new table 1 ${name} ${ours}`);
      expect(changes.filter((c) => c.endsWith(` ${othersOnly}`))).toEqual([]);
    } finally {
      sub.close();
    }
  });
});
