import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { type Ipam, openIpam } from '../../../pkg/ipam/ipam.ts';
import {
  allocateUntilExhausted,
  catchCni,
  cleanupTempDirs,
  leaseFilesOnDisk,
  reservationsOnDisk,
  tempDir,
} from './helpers.ts';

/** Ipam.restore: a quarantined (held) attachment turned back into a normal lease. */

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/29', 'fd00:9::/125'];
const VICTIM = { containerId: 'victim', ifname: 'eth0' };
const OTHER = { containerId: 'other', ifname: 'eth0' };

/** A state directory where VICTIM's lease file was corrupted: reopened, VICTIM is held. */
function heldVictim(): { dir: string; ipam: Ipam; victim: string[]; other: string[] } {
  const dir = tempDir('restore');
  const first = openIpam({ dir, ranges: RANGES });
  const victim = first.allocate(VICTIM).addresses.map((a) => a.address);
  const other = first.allocate(OTHER).addresses.map((a) => a.address);
  writeFileSync(join(dir, 'leases', 'victim@eth0.json'), '{"containerId":"vic');
  const ipam = openIpam({ dir, ranges: RANGES });
  expect(ipam.heldKeys()).toEqual([VICTIM]);
  return { dir, ipam, victim, other };
}

const heldLists = (dir: string): string[] =>
  readdirSync(join(dir, 'quarantine')).filter((f) => f.endsWith('.held'));

describe('Ipam.restore', () => {
  it('turns the held key into a durable lease with exactly those addresses, which survives a reload', () => {
    const { dir, ipam, victim } = heldVictim();
    expect(heldLists(dir)).toHaveLength(1);
    // Given in another order and non-canonical text: stored canonical, in range order.
    const lease = ipam.restore(VICTIM, [victim[1]!.replace('fd00:9::', 'FD00:9:0::'), victim[0]!], {
      podName: 'web',
    });
    expect(lease.addresses).toEqual([
      { family: 4, address: victim[0], range: '10.9.0.0/29' },
      { family: 6, address: victim[1], range: 'fd00:9::/125' },
    ]);
    expect(lease.podName).toBe('web');
    expect(ipam.heldKeys()).toEqual([]);
    expect(ipam.get(VICTIM)).toEqual(lease);
    expect(heldLists(dir)).toEqual([]);
    expect(leaseFilesOnDisk(dir)).toContain('victim@eth0.json');
    for (const a of victim) expect(reservationsOnDisk(dir).get(a)).toBe('victim@eth0');

    const again = openIpam({ dir, ranges: RANGES });
    expect(again.loadReport.quarantined).toEqual([]);
    expect(again.heldKeys()).toEqual([]);
    expect(again.get(VICTIM)).toEqual(lease);
    // A normal lease now: allocate is idempotent on it, release frees it.
    expect(again.allocate(VICTIM).addresses).toEqual(lease.addresses);
    expect(again.release(VICTIM)).toBe(true);
    for (const a of victim) expect(reservationsOnDisk(dir).has(a)).toBe(false);
  });

  it('never hands a restored address out to another attachment', () => {
    const { ipam, victim } = heldVictim();
    ipam.restore(VICTIM, victim);
    const handed = allocateUntilExhausted(ipam);
    expect(handed.length).toBeGreaterThan(0);
    for (const a of victim) expect(handed).not.toContain(a);
  });

  it('refuses an address leased to someone else, and changes nothing', () => {
    const { dir, ipam, victim, other } = heldVictim();
    const before = reservationsOnDisk(dir);
    const err = catchCni(() => ipam.restore(VICTIM, [other[0]!, victim[1]!]));
    expect(err.code).toBe(CniCode.INVALID_CONFIG);
    expect(err.message).toContain(`${other[0]} is reserved by other@eth0`);
    expect(reservationsOnDisk(dir)).toEqual(before);
    expect(ipam.heldKeys()).toEqual([VICTIM]);
    expect(ipam.get(OTHER)?.addresses.map((a) => a.address)).toEqual(other);
    expect(heldLists(dir)).toHaveLength(1);
  });

  it('refuses to drop a held address, a key that is not held, and addresses outside the ranges', () => {
    const { ipam, victim } = heldVictim();
    expect(catchCni(() => ipam.restore(VICTIM, [victim[0]!])).message).toMatch(
      new RegExp(`held address\\(es\\) ${victim[1]} would be dropped`),
    );
    expect(catchCni(() => ipam.restore(OTHER, victim)).message).toMatch(/has a lease already/);
    expect(catchCni(() => ipam.restore({ containerId: 'nobody', ifname: 'eth0' }, victim)).message).toMatch(
      /holds no addresses for it/,
    );
    expect(catchCni(() => ipam.restore(VICTIM, [...victim, '10.99.0.1'])).message).toMatch(
      /10\.99\.0\.1 is outside the pod CIDRs/,
    );
    // The network address and the gateway are never pod addresses.
    expect(catchCni(() => ipam.restore(VICTIM, [victim[1]!, '10.9.0.0'])).message).toMatch(
      /not a usable address/,
    );
    expect(catchCni(() => ipam.restore(VICTIM, [...victim, '10.9.0.6'])).message).toMatch(
      /more than one IPv4 address/,
    );
    expect(catchCni(() => ipam.restore(VICTIM, [])).message).toMatch(/no addresses given/);
    expect(catchCni(() => ipam.restore(VICTIM, ['not-an-ip'])).message).toMatch(/not an IP address/);
    expect(ipam.heldKeys()).toEqual([VICTIM]);
  });

  it('accepts a free address next to the held ones (a held list that lost an entry)', () => {
    const { dir, victim } = heldVictim();
    // Free the held IPv6 reservation as a crash could: the .held list then holds only the IPv4 one.
    const held = heldLists(dir)[0]!;
    writeFileSync(join(dir, 'quarantine', held), `${victim[0]}\n`);
    const reopened = openIpam({ dir, ranges: RANGES });
    expect(reservationsOnDisk(dir).has(victim[1]!)).toBe(false);
    const lease = reopened.restore(VICTIM, victim);
    expect(lease.addresses.map((a) => a.address)).toEqual(victim);
    expect(reservationsOnDisk(dir).get(victim[1]!)).toBe('victim@eth0');
  });
});

describe('Ipam.quarantinedRecords', () => {
  it('returns the raw text of the key’s quarantined lease files, newest first, and nothing for others', () => {
    const { dir, ipam } = heldVictim();
    expect(ipam.quarantinedRecords(VICTIM)).toEqual(['{"containerId":"vic']);
    expect(ipam.quarantinedRecords(OTHER)).toEqual([]);
    expect(ipam.quarantinedRecords({ containerId: '../x', ifname: 'eth0' })).toEqual([]);
    // A second corrupt record of the same key (after a re-ADD) comes first.
    ipam.allocate(VICTIM);
    writeFileSync(join(dir, 'leases', 'victim@eth0.json'), 'second');
    const reopened = openIpam({ dir, ranges: RANGES });
    expect(reopened.quarantinedRecords(VICTIM)).toEqual(['second', '{"containerId":"vic']);
  });
});
