import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MasqOptions, MasqSyncer, NftRunner } from '../../../pkg/masq/index.ts';
import { NftSetWriter } from '../../../pkg/netlink/index.ts';
import { withNetns } from '../../../pkg/netns/index.ts';
import { readOnChange } from '../../../pkg/read-on-change.ts';
import { NetnsPool, netnsSkipReason, nftSetHas, type TestNetns } from '../../support/netns.ts';

/**
 * The periodic resync's check against the kernel's ruleset generation (NFT_MSG_GETGEN), in the real
 * kernel: a table no transaction can have changed is not listed again (no nft spawned), and any
 * committed transaction, in any table, brings the listing back.
 */

function nft(ns: string, args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

const title = 'the masquerade resync and the ruleset generation (root, real kernel, test namespace)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let writer: NftSetWriter;

  beforeAll(() => {
    ns = pool.add('nftgen');
    writer = withNetns(ns.path, () => new NftSetWriter());
  });
  afterAll(() => {
    writer?.close();
    pool.cleanup();
  });

  /** A syncer over the namespace's real nft, counting the table's listings. */
  function countingSyncer(generation: () => Promise<number>): { syncer: MasqSyncer; listings: () => number } {
    const runner = new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', ns.name] });
    let listings = 0;
    // The listing as cmd/agent/adapters.ts wraps it.
    const snapshot = readOnChange(
      (table?: string) => {
        listings++;
        return runner.snapshot(table);
      },
      { generation, sameArgs: ([a], [b]) => a === b },
    );
    const syncer = new MasqSyncer({ apply: (text) => runner.apply(text), snapshot }, writer);
    return { syncer, listings: () => listings };
  }

  const opts: MasqOptions = {
    podCIDRs: { v4: ['10.244.0.0/24'], v6: [] },
    clusterCIDRs: ['10.244.0.0/24', '10.244.1.0/24'],
    noMasqueradeCIDRs: [],
  };

  it('moves with every committed transaction, in any table, and with nothing else', async () => {
    const g0 = await writer.generation();
    expect(await writer.generation()).toBe(g0);
    expect(nft(ns.name, ['add', 'table', 'inet', 'someone-else']).status).toBe(0);
    const g1 = await writer.generation();
    expect(g1).not.toBe(g0);
    // A transaction the kernel refuses commits nothing.
    const refused = nft(ns.name, ['add', 'rule', 'inet', 'someone-else', 'no-such-chain', 'accept']);
    expect(refused.status, refused.stderr).not.toBe(0);
    expect(await writer.generation()).toBe(g1);
    // Listing commits nothing either.
    expect(nft(ns.name, ['list', 'ruleset']).status).toBe(0);
    expect(await writer.generation()).toBe(g1);
  });

  it('a resync lists the table only when a transaction was committed since the last listing', async () => {
    const { syncer, listings } = countingSyncer(() => writer.generation());
    expect(await syncer.sync(opts)).toBe('applied');
    expect(listings()).toBe(1); // the listing after the apply

    syncer.resync();
    expect(await syncer.sync(opts)).toBe('unchanged');
    expect(listings()).toBe(1); // nothing committed since: not listed

    // Another table's transaction: listed once, found as it was, and that generation remembered.
    expect(nft(ns.name, ['add', 'table', 'inet', 'another']).status).toBe(0);
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('unchanged');
    expect(listings()).toBe(2);
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('unchanged');
    expect(listings()).toBe(2);

    // Our table changed behind the table watch's back (its notification lost): listed, and applied.
    expect(
      nft(ns.name, ['add', 'element', 'inet', 'trellis', 'nomasq_v4', '{ 203.0.113.0/24 }']).status,
    ).toBe(0);
    expect(nftSetHas(ns.name, 'nomasq_v4', '203.0.113.9')).toBe(true);
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('applied');
    expect(nftSetHas(ns.name, 'nomasq_v4', '203.0.113.9')).toBe(false);
    expect(listings()).toBe(4); // the check's, and the one after the apply
  });

  it('without an answer to the generation request, every resync lists the table as before', async () => {
    const { syncer, listings } = countingSyncer(() => Promise.reject(new Error('EPERM')));
    syncer.invalidate();
    expect(await syncer.sync(opts)).toBe('applied');
    for (let i = 0; i < 2; i++) {
      syncer.resync();
      expect(await syncer.sync(opts)).toBe('unchanged');
    }
    expect(listings()).toBe(3);
  });
});
