import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openIpam } from '../../../pkg/ipam/ipam.ts';
import { cleanupTempDirs, tempDir } from './helpers.ts';

/**
 * quarantine/ keeps a torn record (and why) while its attachment lives, as a diagnosis and as hints
 * for rebuilding the lease; once the attachment is released or its lease restored, nothing of it
 * stays there. Other owners' records stay.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/28', 'fd00:9::/124'];
const quarantine = (dir: string): string[] => readdirSync(join(dir, 'quarantine')).sort();

/** Two attachments whose lease files were torn while the agent was down, reopened. */
function twoTorn() {
  const dir = tempDir('qclean');
  const first = openIpam({ dir, ranges: RANGES });
  const a = first.allocate({ containerId: 'aaaa', ifname: 'eth0' }).addresses.map((x) => x.address);
  first.allocate({ containerId: 'bbbb', ifname: 'eth0' });
  for (const owner of ['aaaa@eth0', 'bbbb@eth0'])
    writeFileSync(join(dir, 'leases', `${owner}.json`), '{"tor');
  const ipam = openIpam({ dir, ranges: RANGES });
  expect(ipam.loadReport.quarantined).toHaveLength(2);
  // Per owner: the record, its .reason and its .held list.
  expect(quarantine(dir)).toHaveLength(6);
  return { dir, ipam, a };
}

describe('quarantine/ is cleaned with the attachment', () => {
  it('release of one held attachment removes its records, not the other one’s', () => {
    const { dir, ipam } = twoTorn();
    expect(ipam.release({ containerId: 'aaaa', ifname: 'eth0' })).toBe(true);
    const left = quarantine(dir);
    expect(left).toHaveLength(3);
    expect(left.every((f) => f.startsWith('bbbb@eth0.json.'))).toBe(true);
    // And a reload still holds the other one.
    expect(openIpam({ dir, ranges: RANGES }).heldKeys()).toEqual([{ containerId: 'bbbb', ifname: 'eth0' }]);
  });

  it('a restored lease takes its records with it; after a reload, release still cleans the rest', () => {
    const { dir, ipam, a } = twoTorn();
    ipam.restore({ containerId: 'aaaa', ifname: 'eth0' }, a);
    expect(quarantine(dir)).toHaveLength(3); // bbbb's record, .held and .reason
    expect(quarantine(dir).every((f) => f.startsWith('bbbb@eth0.json.'))).toBe(true);
    const again = openIpam({ dir, ranges: RANGES });
    expect(again.release({ containerId: 'bbbb', ifname: 'eth0' })).toBe(true);
    expect(quarantine(dir)).toEqual([]);
  });
});
