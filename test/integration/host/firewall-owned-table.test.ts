import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForwardFirewallWatch } from '../../../pkg/agent/forward-firewall.ts';
import { type FirewallCommand, readForwardRuleset } from '../../../pkg/firewall/index.ts';
import { NftRunner } from '../../../pkg/masq/index.ts';
import { NetnsPool, netnsSkipReason, nsExec, type TestNetns } from '../../support/netns.ts';

/**
 * firewalld 2.2+ creates `table inet firewalld` with nftables' owner flag: while firewalld's netlink
 * socket is open the kernel refuses any other socket's change to the table (EPERM). Here an `nft -i`
 * kept open in a test namespace owns such a table, its filter_FORWARD ending in firewalld's reject; the
 * agent's check reads the flag (through nft 1.0.6's misprinted JSON too, by the table's text) and
 * reports the block with firewalld's own fix instead of trying an insert the kernel refuses, and warns
 * once, not at every check.
 */
const PODS = ['10.244.1.0/24'];

const title = 'a table another process owns: reported, never written (root, real kernel, test namespace)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let owner: ChildProcess | undefined;

  beforeAll(async () => {
    ns = pool.add('fwown');
    owner = spawn('ip', ['netns', 'exec', ns.name, 'nft', '-i'], { stdio: ['pipe', 'ignore', 'ignore'] });
    owner.stdin!.write(
      [
        'add table inet firewalld { flags owner; }',
        'add chain inet firewalld filter_FORWARD { type filter hook forward priority filter + 10; policy accept; }',
        'add rule inet firewalld filter_FORWARD ct state established,related accept',
        'add rule inet firewalld filter_FORWARD reject with icmpx admin-prohibited',
        '',
      ].join('\n'),
    );
    for (let i = 0; i < 100 && !nsExec(ns.name, 'nft', ['list', 'tables']).includes('firewalld'); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  afterAll(() => {
    owner?.stdin?.end();
    owner?.kill();
    pool.cleanup();
  });

  it('finds the owner flag, inserts nothing, and advises firewall-cmd once', async () => {
    // The kernel's side of it: another socket's insert is refused.
    const refused = spawnSync(
      'ip',
      ['netns', 'exec', ns.name, 'nft', 'insert', 'rule', 'inet', 'firewalld', 'filter_FORWARD', 'accept'],
      { encoding: 'utf8' },
    );
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/Operation not permitted/);

    const runner = new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', ns.name] });
    const read = () => readForwardRuleset((args) => runner.run(args), PODS, 'trellis');
    const rs = await read();
    expect(rs.baseChains).toEqual([expect.objectContaining({ table: 'firewalld', owned: true })]);

    const writes: string[] = [];
    const write = async (cmd: FirewallCommand) => {
      writes.push(cmd.args.join(' '));
      return runner.run(cmd.args);
    };
    const lines: { level: number; msg: string; errors?: string[]; fix?: string[] }[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const watch = new ForwardFirewallWatch({ read, write, log });
    await watch.check(PODS);
    await watch.check(PODS);

    expect(writes).toEqual([]);
    const state = watch.state();
    expect(state.error).toBeUndefined();
    expect(state.blocks.map((b) => [b.direction, b.owned])).toEqual([
      ['from-pods', true],
      ['to-pods', true],
    ]);
    const warns = lines.filter((l) => l.level === 40);
    expect(warns.some((l) => l.errors !== undefined)).toBe(false);
    const owned = warns.filter((l) => /another process owns/.test(l.msg));
    expect(owned).toHaveLength(1);
    expect(owned[0]!.fix!.join('\n')).toContain(
      `--add-rich-rule='rule family="ipv4" source address="10.244.1.0/24" accept'`,
    );
    expect(owned[0]!.fix!.join('\n')).not.toMatch(/nft insert/);
    // Two checks, the same blocks: every warning once.
    expect(warns.length).toBe(new Set(warns.map((l) => l.msg)).size);
  });
});
