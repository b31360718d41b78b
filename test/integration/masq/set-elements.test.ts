import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';
import {
  type MasqOptions,
  MasqSyncer,
  MasqTableWatch,
  NftRunner,
  renderMasqRuleset,
} from '../../../pkg/masq/index.ts';
import { RELIST_QUIET_MS } from '../../../pkg/masq/sync.ts';
import { NetlinkError, NftSetWriter } from '../../../pkg/netlink/index.ts';
import {
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFT_MSG_NEWSETELEM,
  setElementsBody,
} from '../../../pkg/netlink/nft-set-messages.ts';
import { RtnlSocket } from '../../../pkg/netlink/socket.ts';
import { createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import { NetnsPool, netnsSkipReason, nftSetHas, type TestNetns } from '../../support/netns.ts';
import { sleep } from '../faults/support.ts';

/**
 * The masquerade sets changed in place over netlink (NftSetWriter), in the real kernel: for every
 * change of the cluster, the namespace changed in place must hold exactly what a whole apply of the
 * same options gives in a second namespace, and the kernel must look addresses up in it as nft's
 * own elements.
 */

function nft(ns: string, args: string[], input?: string): { out: string; pid: number } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', ...args], { input, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { out: r.stdout, pid: r.pid };
}

/** The elements of every set of the table, as nft lists them. */
function setElements(ns: string): Record<string, unknown[]> {
  const listed = JSON.parse(nft(ns, ['-j', 'list', 'table', 'inet', 'trellis']).out) as {
    nftables: { set?: { name: string; elem?: unknown[] } }[];
  };
  const out: Record<string, unknown[]> = {};
  for (const o of listed.nftables) if (o.set !== undefined) out[o.set.name] = o.set.elem ?? [];
  return out;
}

const title = 'masquerade sets changed in place (root, real kernel, test namespaces)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  let inPlace: TestNetns;
  let whole: TestNetns;
  let writer: NftSetWriter;
  let syncer: MasqSyncer;
  const events: (NftablesEvent | { type: 'overflow' })[] = [];
  let sub: { close(): void } | undefined;

  beforeAll(() => {
    inPlace = pool.add('setel');
    whole = pool.add('setelw');
    writer = withNetns(inPlace.path, () => new NftSetWriter());
    syncer = new MasqSyncer(new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', inPlace.name] }), writer);
    sub = withNetns(inPlace.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!((e) => events.push(e), { family: 1, name: 'trellis' }),
    );
  });
  afterAll(() => {
    sub?.close();
    writer?.close();
    pool.cleanup();
  });

  const base: MasqOptions = {
    podCIDRs: { v4: ['10.244.0.0/24'], v6: ['fd00:10:244::/64'] },
    clusterCIDRs: ['10.244.0.0/24', '10.244.1.0/24', 'fd00:10:244::/64', 'fd00:10:244:1::/64'],
    noMasqueradeCIDRs: [],
  };
  const withCluster = (...cidrs: string[]): MasqOptions => ({
    ...base,
    clusterCIDRs: [...base.clusterCIDRs, ...cidrs],
  });

  /** Syncs in place and checks the namespace against a whole apply of the same options. */
  async function step(opts: MasqOptions, expected: 'updated' | 'applied'): Promise<void> {
    expect(await syncer.sync(opts)).toBe(expected);
    await new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', whole.name] }).apply(renderMasqRuleset(opts));
    expect(setElements(inPlace.name)).toEqual(setElements(whole.name));
  }

  it('a Node added, next to others or far away, and deleted again: elements as a whole apply has them', async () => {
    const cluster = (...cidrs: string[]): MasqOptions => ({ ...base, clusterCIDRs: cidrs });
    await step(base, 'applied');
    // Adjacent: the merged range 10.244.0.0-10.244.1.255 grows (removed and added whole).
    await step(withCluster('10.244.2.0/24'), 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.2.7')).toBe(true);
    // Far away, IPv4 and IPv6 in one transaction.
    await step(withCluster('10.244.2.0/24', '10.250.0.0/24', 'fd00:10:244:9::/64'), 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v6', 'fd00:10:244:9::1')).toBe(true);
    // The middle node deleted: one range splits in two.
    await step(cluster('10.244.0.0/24', '10.244.2.0/24', '10.250.0.0/24', 'fd00:10:244:9::/64'), 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.1.7')).toBe(false);
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.2.7')).toBe(true);
    await step(cluster('10.244.2.0/24', '10.250.0.0/24'), 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v6', 'fd00:10:244:9::1')).toBe(false);
    // Our own pod CIDR stays, listed or not.
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.0.7')).toBe(true);
    // A range up to the last address has no end element.
    await step(withCluster('255.255.255.0/24', 'ffff::/16'), 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '255.255.255.255')).toBe(true);
    expect(nftSetHas(inPlace.name, 'nomasq_v6', 'ffff:ffff::1')).toBe(true);
    await step(base, 'updated');
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '255.255.255.255')).toBe(false);
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.1.200')).toBe(true);
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.2.1')).toBe(false);
  });

  it('Node events through changeCluster leave the elements a whole apply of the same cluster has', async () => {
    let cidrs = [...base.clusterCIDRs];
    syncer.invalidate(); // as the periodic resync does: the next sync applies the table whole
    await step(base, 'applied');
    /** One event: CIDRs taken and given, then the namespace against a whole apply of the result. */
    const event = async (removed: string[], added: string[]): Promise<void> => {
      expect(await syncer.changeCluster(removed, added)).toBe('updated');
      for (const c of removed) cidrs.splice(cidrs.indexOf(c), 1);
      cidrs = [...cidrs, ...added];
      await new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', whole.name] }).apply(
        renderMasqRuleset({ ...base, clusterCIDRs: cidrs }),
      );
      expect(setElements(inPlace.name)).toEqual(setElements(whole.name));
    };
    await event([], ['10.244.2.0/24']); // next to the others
    await event([], ['10.250.0.0/24', 'fd00:10:244:7::/64']); // far away, both families
    await event(['10.244.1.0/24'], []); // the middle one: the range splits
    await event(['10.244.2.0/24'], ['10.244.1.0/24', '10.244.3.0/24']); // other CIDRs
    await event(['fd00:10:244:7::/64', '10.250.0.0/24'], []);
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.3.9')).toBe(true);
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '10.244.2.9')).toBe(false);
    // The full pass after it finds nothing to write.
    expect(await syncer.sync({ ...base, clusterCIDRs: cidrs })).toBe('unchanged');
  });

  it('once in-place changes settle, the resync checks a fresh listing and leaves the table and its counters alone', async () => {
    const handles = () => nft(inPlace.name, ['-a', 'list', 'table', 'inet', 'trellis']).out;
    syncer.invalidate();
    await step(base, 'applied');
    expect(await syncer.changeCluster([], ['10.244.2.0/24'])).toBe('updated');
    expect(syncer.listingCurrent).toBe(false);
    await vi.waitFor(() => expect(syncer.listingCurrent).toBe(true), { timeout: RELIST_QUIET_MS + 5000 });
    const before = handles();
    syncer.resync();
    expect(await syncer.sync(withCluster('10.244.2.0/24'))).toBe('unchanged');
    expect(handles()).toBe(before); // same rule handles: not rewritten, counters kept
    // A change whose notification the watch lost, after that listing: the next resync finds it.
    nft(inPlace.name, ['add', 'element', 'inet', 'trellis', 'nomasq_v4', '{ 203.0.113.0/24 }']);
    syncer.resync();
    expect(await syncer.sync(withCluster('10.244.2.0/24'))).toBe('applied');
    expect(nftSetHas(inPlace.name, 'nomasq_v4', '203.0.113.9')).toBe(false);
    await step(base, 'updated'); // as the next test expects it
  });

  it('a transaction the kernel refuses in part changes nothing; the syncer then applies the table whole', async () => {
    const before = setElements(inPlace.name);
    const err = await writer
      .update('trellis', [
        {
          set: 'nomasq_v4',
          family: 4,
          remove: [[0x0a630000n, 0x0a6300ffn]],
          add: [[0x0a640000n, 0x0a6400ffn]],
        },
      ])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).errno).toBe('ENOENT');
    expect(setElements(inPlace.name)).toEqual(before);
    // Someone removed the range the next change must move (the agent's table watch would have
    // invalidated the syncer already; here the kernel's refusal is all it has).
    nft(inPlace.name, ['delete', 'element', 'inet', 'trellis', 'nomasq_v4', '{ 10.244.0.0/23 }']);
    await step(withCluster('10.244.2.0/24'), 'applied');
    expect(syncer.lastInPlaceError).toMatch(/ENOENT/);
    await step(withCluster('10.244.2.0/24', '10.244.3.0/24'), 'updated');
    expect(syncer.lastInPlaceError).toBeUndefined();
  });

  it("the table watch takes the writer's transactions for ours and anyone else's element change for foreign", async () => {
    const watch = new MasqTableWatch({ ours: () => undefined, ourElements: (p) => syncer.wroteElements(p) });
    const commits = async (n: number): Promise<boolean[]> => {
      const deadline = Date.now() + 2000;
      while (events.filter((e) => e.type === 'generation').length < n && Date.now() < deadline)
        await sleep(10);
      const verdicts = events.flatMap((e) =>
        e.type === 'overflow' ? [] : [[e.type, watch.feed(e)] as const],
      );
      events.length = 0;
      return verdicts.filter(([t]) => t === 'generation').map(([, v]) => v);
    };
    await sleep(50);
    events.length = 0;
    expect(await syncer.sync(withCluster('10.244.5.0/24'))).toBe('updated');
    expect(await commits(1)).toEqual([false]);
    nft(inPlace.name, ['add', 'element', 'inet', 'trellis', 'nomasq_v4', '{ 198.51.100.0/24 }']);
    expect(await commits(1)).toEqual([true]);
    expect(events.some((e) => e.type === 'overflow')).toBe(false);
  });

  it('a batch the kernel refuses at its start fails whole instead of waiting for ACKs that never come', async () => {
    const sock = withNetns(inPlace.path, () => new RtnlSocket({ protocol: 12 /* NETLINK_NETFILTER */ }));
    try {
      // A batch for a subsystem that does not exist: the kernel answers its BEGIN and reads no further.
      const begin = {
        type: NFNL_MSG_BATCH_BEGIN,
        flags: 0,
        body: [Buffer.from([0, 0, 0, 99])],
        op: 'BEGIN 99',
      };
      const end = { type: NFNL_MSG_BATCH_END, flags: 0, body: [Buffer.from([0, 0, 0, 99])], op: 'END 99' };
      const element = {
        type: NFT_MSG_NEWSETELEM,
        flags: 0,
        body: setElementsBody('trellis', 'nomasq_v4', []),
        op: 'NEWSETELEM',
      };
      const err = await sock.transaction(begin, [element], end).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NetlinkError);
      expect((err as NetlinkError).op).toBe('BEGIN 99');
    } finally {
      sock.close();
    }
  });

  it('a socket closed while a transaction waits for its replies fails the transaction, and closes', async () => {
    const sock = withNetns(inPlace.path, () => new RtnlSocket({ protocol: 12 /* NETLINK_NETFILTER */ }));
    const guard = (type: number, op: string) => ({ type, flags: 0, body: [Buffer.from([0, 0, 0, 10])], op });
    const element = (op: string) => ({
      type: NFT_MSG_NEWSETELEM,
      flags: 0,
      body: setElementsBody('trellis', 'nomasq_v4', []),
      op,
    });
    const pending = sock
      .transaction(
        guard(NFNL_MSG_BATCH_BEGIN, 'BEGIN'),
        [element('first'), element('second')],
        guard(NFNL_MSG_BATCH_END, 'END'),
      )
      .catch((e: unknown) => e);
    // Sent, not yet answered: the replies are read on a later turn of the event loop.
    expect(() => sock.close()).not.toThrow();
    const err = await pending;
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).errno).toBe('ECANCELED');
  });

  it('with the table gone, the change is refused and the table applied again', async () => {
    nft(inPlace.name, ['delete', 'table', 'inet', 'trellis']);
    await step(withCluster('10.244.7.0/24'), 'applied');
    expect(syncer.lastInPlaceError).toMatch(/ENOENT/);
  });
});
