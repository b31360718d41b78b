import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardBlocks, readForwardRuleset, readOnChange } from '../../../pkg/firewall/index.ts';
import { NftRunner } from '../../../pkg/masq/index.ts';
import { NftSetWriter } from '../../../pkg/netlink/index.ts';
import { withNetns } from '../../../pkg/netns/index.ts';
import { NetnsPool, netnsSkipReason, nsExec, type TestNetns } from '../../support/netns.ts';

/**
 * The periodic firewall check's reading, skipped while the nf_tables ruleset generation stands still
 * (pkg/firewall/read-on-change.ts), against the real kernel and nft in a test namespace: an unchanged
 * host firewall is not listed again, and a change to it (iptables-nft's policy) is read at the next
 * check.
 */
const PODS = ['10.244.1.0/24'];

const title = 'the host firewall read again only after a transaction (root, real kernel, test namespace)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let writer: NftSetWriter;

  beforeAll(() => {
    ns = pool.add('fwgen');
    writer = withNetns(ns.path, () => new NftSetWriter());
  });
  afterAll(() => {
    writer?.close();
    pool.cleanup();
  });

  it('lists nothing while nothing was committed, and reads the policy changed since', async () => {
    nsExec(ns.name, 'iptables-nft', ['-P', 'FORWARD', 'DROP']);
    const runner = new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', ns.name] });
    const ran: string[] = [];
    const read = readOnChange({
      read: (podCIDRs, vxlan) =>
        readForwardRuleset(
          (args) => {
            ran.push(args.join(' '));
            return runner.run(args);
          },
          podCIDRs,
          'trellis',
          { vxlan },
        ),
      generation: () => writer.generation(),
      legacyTables: () => [],
    });

    const first = await read(PODS, []);
    expect(forwardBlocks(first, PODS).length).toBeGreaterThan(0); // Docker-like: policy drop
    const listings = ran.length;
    expect(listings).toBeGreaterThan(0);
    expect(await read(PODS, [])).toBe(first);
    expect(ran).toHaveLength(listings); // no nft run

    nsExec(ns.name, 'iptables-nft', ['-P', 'FORWARD', 'ACCEPT']);
    const after = await read(PODS, []);
    expect(ran.length).toBeGreaterThan(listings);
    expect(forwardBlocks(after, PODS)).toEqual([]);
  });
});
