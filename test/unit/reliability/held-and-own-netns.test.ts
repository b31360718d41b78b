/**
 * Two guards the reliability suite found missing, at unit level (no root):
 * - a lease file corrupted on disk is quarantined at load, its addresses stay held, and
 *   Ipam.heldKeys() names its attachment (the start-up sweep keeps that pod's veth) until release;
 * - isOwnNetns recognises the process's own network namespace (ADD refuses to configure it).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode, type CniError } from '../../../pkg/cni/errors.ts';
import { isOwnNetns } from '../../../pkg/datapath/own-netns.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'trl-rel-unit-'));
  dirs.push(d);
  return d;
}

describe('Ipam.heldKeys after a corrupted lease file', () => {
  it('names the attachment while its addresses are held, and forgets it after release', () => {
    const dir = tempDir();
    const ranges = ['10.9.0.0/29', 'fd00:9::/125'];
    const first = openIpam({ dir, ranges });
    const victim = first.allocate({ containerId: 'victim', ifname: 'eth0' });
    first.allocate({ containerId: 'other', ifname: 'eth0' });
    expect(first.heldKeys()).toEqual([]);

    writeFileSync(join(dir, 'leases', 'victim@eth0.json'), '{"containerId":"vic');
    const second = openIpam({ dir, ranges });
    expect(second.loadReport.quarantined.map((q) => q.file)).toEqual([
      join(dir, 'leases', 'victim@eth0.json'),
    ]);
    expect(second.get({ containerId: 'victim', ifname: 'eth0' })).toBeUndefined();
    expect(second.heldKeys()).toEqual([{ containerId: 'victim', ifname: 'eth0' }]);

    // Held across another load too (the quarantine is not re-reported, the hold stays).
    const third = openIpam({ dir, ranges });
    expect(third.loadReport.quarantined).toEqual([]);
    expect(third.heldKeys()).toEqual([{ containerId: 'victim', ifname: 'eth0' }]);
    // Allocate until the ranges are exhausted: every free address is handed out, never a held one.
    const handed = new Set<string>();
    let exhausted = false;
    for (let i = 0; i < 10 && !exhausted; i++) {
      try {
        for (const a of third.allocate({ containerId: `p${i}`, ifname: 'eth0' }).addresses)
          handed.add(a.address);
      } catch (err) {
        expect((err as CniError).code).toBe(CniCode.IPAM_EXHAUSTED);
        exhausted = true;
      }
    }
    expect(exhausted).toBe(true);
    expect(handed.size).toBeGreaterThan(0);
    for (const a of victim.addresses) expect(handed.has(a.address)).toBe(false);

    expect(third.release({ containerId: 'victim', ifname: 'eth0' })).toBe(true);
    expect(third.heldKeys()).toEqual([]);
    expect(openIpam({ dir, ranges }).heldKeys()).toEqual([]);
  });
});

describe('isOwnNetns', () => {
  it('is true only for the namespace this process is in', () => {
    expect(isOwnNetns('/proc/self/ns/net')).toBe(true);
    expect(isOwnNetns(`/proc/${process.pid}/ns/net`)).toBe(true);
    expect(isOwnNetns('/proc/self/ns/uts')).toBe(false);
    expect(isOwnNetns('/nonexistent/netns')).toBe(false);
    const f = join(tempDir(), 'file');
    writeFileSync(f, 'x');
    expect(isOwnNetns(f)).toBe(false);
  });
});
