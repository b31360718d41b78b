import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { openIpamWith } from '../../../pkg/ipam/ipam.ts';
import { realFs, type StoreFs } from '../../../pkg/ipam/store.ts';
import { catchCni, cleanupTempDirs, reservationsOnDisk, tempDir } from './helpers.ts';

/**
 * A corrupt lease record that load could not move to quarantine/ (no room for its .held list) stays
 * in leases/ and is, on disk, the only thing holding its addresses: a reload quarantines it again
 * with its owner's reservations kept. Nothing but a release may destroy it before a .held list has
 * taken over; otherwise the next load frees the address of a pod that may still use it.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.244.1.0/24', 'fd00:10:244:1::/64'];
const TORN = { containerId: 'torn', ifname: 'eth0' };
const OWNER = 'torn@eth0';

type Op = 'open' | 'write' | 'unlink' | 'readdir';

/** The real file system, failing with `errno` each operation on a path that `refuse` matches. */
function faultyFs(): { fs: StoreFs; refuse: (rule?: { op: Op; path: RegExp; errno: string }) => void } {
  let rule: { op: Op; path: RegExp; errno: string } | undefined;
  const paths = new Map<number, string>();
  const check = (op: Op, path: string): void => {
    if (rule !== undefined && rule.op === op && rule.path.test(path)) {
      throw Object.assign(new Error(`${rule.errno}: injected, ${op} '${path}'`), { code: rule.errno });
    }
  };
  const fs: StoreFs = {
    ...realFs,
    openSync: (path, flags, mode) => {
      check('open', path);
      const fd = realFs.openSync(path, flags, mode);
      paths.set(fd, path);
      return fd;
    },
    writeSync: (fd, data, offset) => {
      check('write', paths.get(fd) ?? '');
      return realFs.writeSync(fd, data, offset);
    },
    unlinkSync: (path) => {
      check('unlink', path);
      realFs.unlinkSync(path);
    },
    readdirSync: (path) => {
      check('readdir', path);
      return realFs.readdirSync(path);
    },
  };
  return {
    fs,
    refuse: (r) => {
      rule = r;
    },
  };
}

const QUARANTINE_FULL = { op: 'open', path: /\/quarantine\//, errno: 'ENOSPC' } as const;
const LEASE_WRITE_FAILS = { op: 'write', path: /\/leases\/torn@eth0\.json$/, errno: 'ENOSPC' } as const;

/**
 * A state directory with a torn record for TORN (and a valid lease for another pod), opened while
 * quarantine/ refuses new files: the record is left in place, its addresses held.
 */
function loadWithRecordLeftInPlace() {
  const dir = join(tempDir(), 'state');
  const first = openIpam({ dir, ranges: RANGES });
  const tornAddresses = first.allocate(TORN).addresses.map((a) => a.address);
  first.allocate({ containerId: 'fine', ifname: 'eth0' });
  const record = join(dir, 'leases', `${OWNER}.json`);
  writeFileSync(record, '{"version": 1, "contai'); // a torn write
  const { fs, refuse } = faultyFs();
  refuse(QUARANTINE_FULL);
  const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
  expect(ipam.loadReport.quarantined).toEqual([
    expect.objectContaining({ leftInPlace: expect.stringContaining('ENOSPC') }),
  ]);
  expect(ipam.heldAddresses(TORN).map((a) => a.address)).toEqual(tornAddresses);
  return { dir, ipam, refuse, record, tornAddresses };
}

/** What a reload (the agent restarted, the disk fine again) holds for TORN's old addresses. */
function heldAfterReload(dir: string, tornAddresses: string[]): string[] {
  const leased =
    openIpam({ dir, ranges: RANGES })
      .get(TORN)
      ?.addresses.map((a) => a.address) ?? [];
  const onDisk = reservationsOnDisk(dir);
  return tornAddresses.filter((a) => onDisk.get(a) === OWNER && !leased.includes(a));
}

describe('a lease record left in place at load', () => {
  it('survives a restore that fails while quarantine/ is still full: refused, the record untouched', () => {
    const { dir, ipam, record, tornAddresses } = loadWithRecordLeftInPlace();
    const before = readFileSync(record);
    const err = catchCni(() => ipam.restore(TORN, tornAddresses));
    expect(err.code).toBe(CniCode.IPAM_STORE_FAILED);
    expect(err.message).toContain('ENOSPC');
    expect(readFileSync(record)).toEqual(before);
    expect(heldAfterReload(dir, tornAddresses)).toEqual(tornAddresses);
  });

  it('keeps its addresses held across a reload when a restore fails writing the new lease', () => {
    const { dir, ipam, refuse, tornAddresses } = loadWithRecordLeftInPlace();
    refuse(LEASE_WRITE_FAILS); // quarantine/ has room again; the lease file's write fails
    const err = catchCni(() => ipam.restore(TORN, tornAddresses));
    expect(err.message).toContain('ENOSPC');
    refuse(undefined);
    // Restarted: the addresses are still held for TORN, never handed to another pod.
    expect(heldAfterReload(dir, tornAddresses)).toEqual(tornAddresses);
    const reloaded = openIpam({ dir, ranges: RANGES });
    expect(reloaded.heldAddresses(TORN).map((a) => a.address)).toEqual(tornAddresses);
    const next = reloaded.allocate({ containerId: 'next', ifname: 'eth0' }).addresses.map((a) => a.address);
    expect(next.filter((a) => tornAddresses.includes(a))).toEqual([]);
    // And the retried restore works.
    expect(reloaded.restore(TORN, tornAddresses).addresses.map((a) => a.address)).toEqual(tornAddresses);
  });

  it('refuses an ADD of its key while quarantine/ is full, leaving the record and reservations as they were', () => {
    const { dir, ipam, record, tornAddresses } = loadWithRecordLeftInPlace();
    const before = readFileSync(record);
    const reservations = reservationsOnDisk(dir);
    expect(catchCni(() => ipam.allocate(TORN)).code).toBe(CniCode.IPAM_STORE_FAILED);
    expect(readFileSync(record)).toEqual(before);
    expect(reservationsOnDisk(dir)).toEqual(reservations);
    expect(heldAfterReload(dir, tornAddresses)).toEqual(tornAddresses);
  });

  it('answers an ADD of its key with a store error when quarantine/ cannot be listed', () => {
    const { dir, ipam, refuse, record, tornAddresses } = loadWithRecordLeftInPlace();
    const before = readFileSync(record);
    refuse({ op: 'readdir', path: /\/quarantine$/, errno: 'EIO' });
    const err = catchCni(() => ipam.allocate(TORN));
    expect(err.code).toBe(CniCode.IPAM_STORE_FAILED);
    expect(err.message).toContain('listing quarantine/ failed: EIO');
    refuse(undefined);
    expect(readFileSync(record)).toEqual(before);
    expect(heldAfterReload(dir, tornAddresses)).toEqual(tornAddresses);
  });

  it('is left in place, not a failed load, when quarantine/ cannot be listed to name it', () => {
    const dir = join(tempDir(), 'state');
    const first = openIpam({ dir, ranges: RANGES });
    const tornAddresses = first.allocate(TORN).addresses.map((a) => a.address);
    const record = join(dir, 'leases', `${OWNER}.json`);
    writeFileSync(record, '{"version": 1, "contai');
    const { fs, refuse } = faultyFs();
    // The load's first listing of quarantine/ (its .held lists) works; naming the record fails.
    let listings = 0;
    const countingFs: StoreFs = {
      ...fs,
      readdirSync: (path) => {
        if (/\/quarantine$/.test(path) && ++listings === 2)
          refuse({ op: 'readdir', path: /\/quarantine$/, errno: 'EIO' });
        try {
          return fs.readdirSync(path);
        } finally {
          refuse(undefined);
        }
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, countingFs);
    expect(listings).toBeGreaterThanOrEqual(2);
    expect(ipam.loadReport.quarantined).toEqual([
      expect.objectContaining({ leftInPlace: expect.stringContaining('listing quarantine/ failed: EIO') }),
    ]);
    expect(ipam.heldAddresses(TORN).map((a) => a.address)).toEqual(tornAddresses);
    expect(readFileSync(record, 'utf8')).toBe('{"version": 1, "contai');
  });

  it('keeps the old addresses held after an ADD of its key writes a new lease over the record', () => {
    const { dir, ipam, refuse, tornAddresses } = loadWithRecordLeftInPlace();
    refuse(undefined);
    const fresh = ipam.allocate(TORN).addresses.map((a) => a.address);
    expect(fresh.filter((a) => tornAddresses.includes(a))).toEqual([]);
    expect(heldAfterReload(dir, tornAddresses)).toEqual(tornAddresses);
    // DEL frees both the new lease and the held addresses.
    const reloaded = openIpam({ dir, ranges: RANGES });
    expect(reloaded.release(TORN)).toBe(true);
    const left = reservationsOnDisk(dir);
    for (const a of [...tornAddresses, ...fresh]) expect(left.has(a)).toBe(false);
  });

  it('is still released by a DEL retried after the disk refused to remove the record', () => {
    const { dir, ipam, refuse, tornAddresses } = loadWithRecordLeftInPlace();
    refuse({ op: 'unlink', path: /\/leases\/torn@eth0\.json$/, errno: 'EIO' });
    expect(catchCni(() => ipam.release(TORN)).message).toContain('EIO');
    refuse(undefined);
    // The retry finds the key still held and frees its addresses, on disk and in memory.
    expect(ipam.release(TORN)).toBe(true);
    const left = reservationsOnDisk(dir);
    for (const a of tornAddresses) expect(left.has(a)).toBe(false);
    expect(ipam.heldKeys()).toEqual([]);
    ipam.hold({ containerId: 'other', ifname: 'eth0' }, tornAddresses); // free in memory too
  });
});
