import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openIpam } from '../../../pkg/ipam/ipam.ts';
import { cleanupTempDirs, tempDir } from './helpers.ts';

/** heldAddresses: what a quarantined record keeps held for its key, i.e. what the key's DEL frees. */

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/28', 'fd00:9::/124'];
const KEY = { containerId: 'aaaa', ifname: 'eth0' };

function torn() {
  const dir = tempDir('held');
  const first = openIpam({ dir, ranges: RANGES });
  const lease = first.allocate(KEY);
  first.allocate({ containerId: 'bbbb', ifname: 'eth0' });
  writeFileSync(join(dir, 'leases', 'aaaa@eth0.json'), '{"tor');
  return { dir, addresses: lease.addresses, ipam: openIpam({ dir, ranges: RANGES }) };
}

describe('Ipam.heldAddresses', () => {
  it('gives the held addresses of a quarantined key in range order, and nothing for other keys', () => {
    const { addresses, ipam } = torn();
    expect(addresses.map((a) => a.range)).toEqual(RANGES);
    expect(ipam.heldAddresses(KEY)).toEqual(addresses);
    // A key with a lease, an unknown key, a malformed key: nothing held.
    expect(ipam.heldAddresses({ containerId: 'bbbb', ifname: 'eth0' })).toEqual([]);
    expect(ipam.heldAddresses({ containerId: 'cccc', ifname: 'eth0' })).toEqual([]);
    expect(ipam.heldAddresses({ containerId: '../x', ifname: 'eth0' })).toEqual([]);
  });

  it('is empty once the key is released or its lease restored', () => {
    const released = torn();
    expect(released.ipam.release(KEY)).toBe(true);
    expect(released.ipam.heldAddresses(KEY)).toEqual([]);
    const restored = torn();
    restored.ipam.restore(
      KEY,
      restored.addresses.map((a) => a.address),
    );
    expect(restored.ipam.heldAddresses(KEY)).toEqual([]);
  });

  it("names no range for a held address outside the node's current pod CIDRs", () => {
    const { dir, addresses } = torn();
    // The node's IPv6 CIDR changed while the agent was down: the held IPv6 address is outside it.
    const ipam = openIpam({ dir, ranges: [RANGES[0]!, 'fd00:8::/124'] });
    expect(ipam.heldAddresses(KEY)).toEqual([addresses[0], { ...addresses[1], range: '' }]);
  });
});
