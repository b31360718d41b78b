import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import type { Ipam } from '../../../pkg/ipam/ipam.ts';
import { parseOwnerName } from '../../../pkg/ipam/key.ts';

/** Fresh temp directories, removed by cleanupTempDirs() (call it in afterEach). */
const made: string[] = [];

export function tempDir(tag = 'ipam'): string {
  const dir = mkdtempSync(join(tmpdir(), `trellis-${tag}-`));
  made.push(dir);
  return dir;
}

export function cleanupTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** The reservations on disk: address -> owner (the symlink target). */
export function reservationsOnDisk(stateDir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(join(stateDir, 'addrs')).sort()) {
    out.set(name, readlinkSync(join(stateDir, 'addrs', name)));
  }
  return out;
}

export function leaseFilesOnDisk(stateDir: string): string[] {
  return readdirSync(join(stateDir, 'leases')).sort();
}

export function catchCni(fn: () => unknown): CniError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CniError) return err;
    throw err;
  }
  throw new Error('expected a CniError, got none');
}

/**
 * Every lease's address has its reservation on disk, owned by that lease, and no address is in two
 * leases; every reservation on disk belongs to a lease that names it or is held for its owner's
 * quarantined record (ipam.heldAddresses): none leaked.
 */
export function expectConsistent(ipam: Ipam, dir: string): void {
  const seen = new Map<string, string>();
  const onDisk = reservationsOnDisk(dir);
  for (const lease of ipam.list()) {
    const owner = `${lease.containerId}@${lease.ifname}`;
    for (const a of lease.addresses) {
      expect(seen.has(a.address), `${a.address} in two leases`).toBe(false);
      seen.set(a.address, owner);
      expect(onDisk.get(a.address)).toBe(owner);
    }
  }
  for (const [address, owner] of onDisk) {
    const key = parseOwnerName(owner);
    const held = key === undefined ? [] : ipam.heldAddresses(key).map((a) => a.address);
    const ok = seen.get(address) === owner || (!seen.has(address) && held.includes(address));
    expect(ok, `leaked reservation ${address} -> ${owner}`).toBe(true);
  }
}

/** Allocates for new attachments (p0, p1, …) until the ranges run out (at most `max`): every address handed out. */
export function allocateUntilExhausted(ipam: Ipam, max = 10): string[] {
  const handed: string[] = [];
  for (let i = 0; i < max; i++) {
    try {
      handed.push(...ipam.allocate({ containerId: `p${i}`, ifname: 'eth0' }).addresses.map((a) => a.address));
    } catch (err) {
      expect((err as { code?: number }).code).toBe(CniCode.IPAM_EXHAUSTED);
      break;
    }
  }
  return handed;
}
