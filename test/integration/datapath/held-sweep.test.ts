import { execFileSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { releaseHeldWithoutVeth } from '../../../pkg/agent/held-sweep.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { attachmentKey, hostVethName } from '../../../pkg/datapath/names.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { capturedLog } from '../../support/captured-log.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

const RANGE = '10.244.1.0/29';

/**
 * A held attachment (its lease record torn) whose pod goes away without a DEL reaching the agent:
 * its addresses must not stay reserved until the agent restarts. The sweep releases them once the
 * host veth is gone, and leaves them while it exists or while a CNI call for the key is in flight.
 * Real namespaces, a real veth pair, IPAM on disk.
 */
describe.skipIf(netnsSkipReason !== undefined)('held addresses of a pod gone (real namespaces)', () => {
  const pool = new NetnsPool();
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const c of closers.splice(0)) c();
    pool.cleanup();
  });

  it('are released once the host veth is gone, not while it exists or a call is in flight', async () => {
    const host = pool.add('host');
    const deps = inProcessDeps(host, [RANGE], closers, { echo: false });
    const key = { containerId: 'c-held', ifname: 'eth0' };
    const att = await addAttachment(deps, { ...key, netns: pool.add('pod').path, mtu: 1500 });
    const address = att.addresses[0]!.address;
    const dir = join(deps.leaseDir, 'leases');
    for (const f of readdirSync(dir)) writeFileSync(join(dir, f), '{"containerId": "c-he'); // torn
    const ipam = openIpam({ dir: deps.leaseDir, ranges: [RANGE] });
    expect(ipam.heldKeys()).toEqual([key]);

    const { log, lines } = capturedLog();
    const sweep = (busy: ReadonlySet<string> = new Set()) =>
      releaseHeldWithoutVeth({ ipam, host: deps.host, busy, log });

    // The pod still runs: its veth is there.
    expect(await sweep()).toBe(0);
    expect(ipam.heldKeys()).toEqual([key]);

    // The pod's sandbox goes (its DEL lost): the pair dies with it.
    execFileSync('ip', ['-n', host.name, 'link', 'del', hostVethName(key.containerId, key.ifname)]);
    expect(await sweep(new Set([attachmentKey(key)]))).toBe(0); // a call for it in flight: left to it
    expect(ipam.heldKeys()).toEqual([key]);
    expect(await sweep()).toBe(1);
    expect(ipam.heldKeys()).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'quarantined lease released: no pod holds its addresses',
        containerId: 'c-held',
        ifname: 'eth0',
      }),
    );

    // The address is free again, on disk too: a reopened IPAM hands it out.
    const reopened = openIpam({ dir: deps.leaseDir, ranges: [RANGE] });
    expect(reopened.heldKeys()).toEqual([]);
    const taken = [1, 2, 3, 4, 5].map(
      (i) => reopened.allocate({ containerId: `next-${i}`, ifname: 'eth0' }).addresses[0]!.address,
    );
    expect(taken).toContain(address);
  });
});
