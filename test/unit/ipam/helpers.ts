import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import type { Ipam } from '../../../pkg/ipam/ipam.ts';

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

/** Every reservation on disk belongs to a lease on disk that names it, and no address twice. */
export function expectConsistent(ipam: Ipam, dir: string): void {
  const seen = new Set<string>();
  for (const lease of ipam.list()) {
    for (const a of lease.addresses) {
      expect(seen.has(a.address)).toBe(false);
      seen.add(a.address);
      expect(reservationsOnDisk(dir).get(a.address)).toBe(`${lease.containerId}@${lease.ifname}`);
    }
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
