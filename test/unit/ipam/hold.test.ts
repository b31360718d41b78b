import { readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { openIpam } from '../../../pkg/ipam/ipam.ts';
import { allocateUntilExhausted, catchCni, cleanupTempDirs, reservationsOnDisk, tempDir } from './helpers.ts';

/**
 * Ipam.hold: the addresses of a running pod whose lease record was lost while the agent was down
 * (the kernel shows them), held like a quarantined record's until the lease is rebuilt or DEL comes.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/29', 'fd00:9::/125'];
const LOST = { containerId: 'lost', ifname: 'eth0' };

/** A state directory whose LOST lease file is gone (removed with its reservations, as rm would). */
function lostRecord(): { dir: string; addresses: string[] } {
  const dir = tempDir('hold');
  const first = openIpam({ dir, ranges: RANGES });
  first.allocate({ containerId: 'before', ifname: 'eth0' });
  const addresses = first.allocate(LOST).addresses.map((a) => a.address);
  rmSync(join(dir, 'leases', 'lost@eth0.json'));
  for (const a of addresses) unlinkSync(join(dir, 'addrs', a));
  return { dir, addresses };
}

const heldLists = (dir: string): string[] =>
  readdirSync(join(dir, 'quarantine')).filter((f) => f.endsWith('.held'));

describe('Ipam.hold', () => {
  it('holds the addresses durably: never handed out, held again after a reload, restorable', () => {
    const { dir, addresses } = lostRecord();
    const ipam = openIpam({ dir, ranges: RANGES });
    expect(ipam.heldKeys()).toEqual([]);
    // Non-canonical text is stored canonical.
    ipam.hold(LOST, [addresses[0]!, addresses[1]!.replace('fd00:9::', 'FD00:9:0::')]);
    expect(ipam.heldKeys()).toEqual([LOST]);
    expect(ipam.heldAddresses(LOST).map((a) => a.address)).toEqual(addresses);
    for (const a of addresses) expect(reservationsOnDisk(dir).get(a)).toBe('lost@eth0');
    expect(heldLists(dir)).toHaveLength(1);

    const handed = allocateUntilExhausted(ipam);
    expect(handed).toHaveLength(6); // the rest of both ranges: not vacuous
    for (const a of addresses) expect(handed).not.toContain(a);

    const again = openIpam({ dir, ranges: RANGES });
    expect(again.heldKeys()).toEqual([LOST]);
    const lease = again.restore(LOST, addresses);
    expect(lease.addresses.map((a) => a.address)).toEqual(addresses);
    expect(heldLists(dir)).toEqual([]);
    expect(again.release(LOST)).toBe(true);
    for (const a of addresses) expect(reservationsOnDisk(dir).has(a)).toBe(false);
  });

  it('is undone by release (a DEL before the rebuild), on disk too', () => {
    const { dir, addresses } = lostRecord();
    const ipam = openIpam({ dir, ranges: RANGES });
    ipam.hold(LOST, addresses);
    expect(ipam.release(LOST)).toBe(true);
    expect(ipam.heldKeys()).toEqual([]);
    expect(heldLists(dir)).toEqual([]);
    for (const a of addresses) expect(reservationsOnDisk(dir).has(a)).toBe(false);
    expect(openIpam({ dir, ranges: RANGES }).heldKeys()).toEqual([]);
  });

  it('refuses, changing nothing, an address another lease holds, a key with a lease, and no addresses', () => {
    const { dir, addresses } = lostRecord();
    const ipam = openIpam({ dir, ranges: RANGES });
    const taken = ipam.get({ containerId: 'before', ifname: 'eth0' })!.addresses[0]!.address;
    const before = reservationsOnDisk(dir);

    const stolen = catchCni(() => ipam.hold(LOST, [addresses[0]!, taken]));
    expect(stolen.code).toBe(CniCode.INVALID_CONFIG);
    expect(stolen.message).toBe(
      `cannot hold the addresses of lost@eth0: ${taken} is reserved by before@eth0`,
    );
    const leased = catchCni(() => ipam.hold({ containerId: 'before', ifname: 'eth0' }, addresses));
    expect(leased.message).toContain('it has a lease');
    expect(catchCni(() => ipam.hold(LOST, [])).message).toContain('no addresses given');
    expect(catchCni(() => ipam.hold(LOST, ['10.9.0.300'])).message).toContain('is not an IP address');

    expect(ipam.heldKeys()).toEqual([]);
    expect(reservationsOnDisk(dir)).toEqual(before);
    expect(heldLists(dir)).toEqual([]);
  });

  it('holds every address after a reload when it crashed between two of its reservations', () => {
    const { dir, addresses } = lostRecord();
    const ipam = openIpam({ dir, ranges: RANGES });
    ipam.hold(LOST, addresses);
    unlinkSync(join(dir, 'addrs', addresses[1]!)); // what a crash after the IPv4 symlink leaves
    const again = openIpam({ dir, ranges: RANGES });
    expect(again.heldKeys()).toEqual([LOST]);
    expect(again.heldAddresses(LOST).map((a) => a.address)).toEqual(addresses);
    expect(reservationsOnDisk(dir).get(addresses[1]!)).toBe('lost@eth0');
    const handed = allocateUntilExhausted(again);
    expect(handed.length).toBeGreaterThan(0); // not vacuous
    for (const a of addresses) expect(handed).not.toContain(a);
  });

  it('holds nothing after a reload when its reservations were never made (a crash between the two)', () => {
    const { dir, addresses } = lostRecord();
    const ipam = openIpam({ dir, ranges: RANGES });
    ipam.hold(LOST, addresses);
    for (const a of addresses) unlinkSync(join(dir, 'addrs', a)); // what a crash before the symlinks leaves
    const again = openIpam({ dir, ranges: RANGES });
    expect(again.heldKeys()).toEqual([]);
    expect(again.allocate({ containerId: 'next', ifname: 'eth0' }).addresses.length).toBe(2);
  });
});
