import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { NetnsPool, netnsSkipReason, nsExec, type TestNetns } from '../../support/netns.ts';
import { sleep, within } from '../faults/support.ts';

/**
 * The masquerade table as a real (standalone) agent keeps it, in a namespace of the test's own: put
 * back at once when someone deletes it, and removed when the agent restarts with --no-masquerade.
 */
const POD_CIDRS = ['10.244.0.0/24', 'fd00:10:244::/64'];

function hasTable(ns: TestNetns): boolean {
  return nsExec(ns.name, 'nft', ['list', 'tables', 'inet']).includes('table inet trellis');
}

describe.skipIf(netnsSkipReason !== undefined)('masquerade table kept by a real agent (namespaces)', () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let agent: AgentProcess | undefined;
  let dir: string | undefined;

  beforeAll(async () => {
    ns = pool.add('mq-agent', { loUp: true });
    agent = startAgent({ ns: ns.name, podCIDRs: POD_CIDRS });
    dir = agent.dir;
    await agent.ready();
    await within(5000, 'the masquerade table applied', () => hasTable(ns));
  }, 30_000);

  afterAll(async () => {
    await agent?.kill();
    pool.cleanup();
    if (dir !== undefined) removeAgentDir(dir);
  });

  /** The chain's listing; throws while the table is missing (nft's complaint kept off the test output). */
  const rules = (): string =>
    execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'chain', 'inet', 'trellis', 'postrouting'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  const warnings = (): number =>
    agent!.logs.filter(
      (l) =>
        l.msg ===
        'the nftables table inet trellis (masquerade, MSS clamp) was changed by someone else; putting it back',
    ).length;
  const passes = (): number => agent!.logs.filter((l) => l.msg === 'reconciled').length;

  it('a deleted table is put back within the debounce, not at the next resync (60 s)', async () => {
    const before = rules();
    expect(before).toContain('masquerade');
    for (const how of [
      ['delete', 'table', 'inet', 'trellis'],
      ['flush', 'ruleset'], // what a restart of Debian's nftables.service does
      ['flush', 'chain', 'inet', 'trellis', 'postrouting'],
    ]) {
      const warned = warnings();
      nsExec(ns.name, 'nft', how);
      await within(10_000, `after nft ${how.join(' ')}: masquerade rule back`, () => {
        try {
          return rules().includes('masquerade');
        } catch {
          return false; // the table is not there yet
        }
      });
      // The log line comes through the agent's stdout pipe, behind the kernel's change on a loaded machine.
      await within(5000, 'the warning logged', () => warnings() > warned);
    }
    // A rule added by hand to the agent's table goes too: the table is the agent's alone.
    nsExec(ns.name, 'nft', [
      'add',
      'rule',
      'inet',
      'trellis',
      'postrouting',
      'ip',
      'daddr',
      '192.0.2.1',
      'counter',
    ]);
    await within(10_000, 'the hand-added rule removed', () => !rules().includes('192.0.2.1'));
    // A saved copy restored the way nftables.service does (flush ruleset, then the table): the same
    // shape as an apply of the agent's own, but another process committed it.
    const warned = warnings();
    nsExec(ns.name, 'nft', ['-f', '-'], {
      input:
        'flush ruleset\ntable inet trellis {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\n',
    });
    await within(10_000, 'the restored stale copy replaced', () => rules().includes('masquerade'));
    await within(5000, 'the warning logged', () => warnings() > warned);
    // The agent's own re-applies are not taken for someone else's: it settles.
    await sleep(300);
    const settled = [passes(), warnings()];
    await sleep(700);
    expect([passes(), warnings()]).toEqual(settled);
  });

  it('restarted with --no-masquerade, the table keeps the source check and loses the masquerade', async () => {
    await agent!.stop();
    expect(hasTable(ns)).toBe(true); // a stop leaves rules in place (documented)
    agent = startAgent({ ns: ns.name, podCIDRs: POD_CIDRS, dir, extraArgs: ['--no-masquerade'] });
    await agent.ready();
    const table = nsExec(ns.name, 'nft', ['list', 'table', 'inet', 'trellis']);
    expect(table).toContain('fib saddr . iif oif missing');
    expect(table).not.toContain('masquerade');
  });

  it('restarted with --no-masquerade --no-source-check, the agent removes the table the earlier run left', async () => {
    const off = ['--no-masquerade', '--no-source-check'];
    await agent!.stop();
    expect(hasTable(ns)).toBe(true);
    agent = startAgent({ ns: ns.name, podCIDRs: POD_CIDRS, dir, extraArgs: off });
    await agent.ready();
    expect(hasTable(ns)).toBe(false);
    expect(agent.logs.map((l) => l.msg)).toContain(
      'masquerading and the source check are off: removed the nftables table an earlier run left',
    );
    // Nothing left to remove on the next start: no line, no error.
    await agent.stop();
    agent = startAgent({ ns: ns.name, podCIDRs: POD_CIDRS, dir, extraArgs: off });
    await agent.ready();
    expect(hasTable(ns)).toBe(false);
    expect(agent.logs.filter((l) => String(l.msg).includes('nftables table'))).toEqual([]);
  });
});
