import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { openIpamWith } from '../../../pkg/ipam/ipam.ts';
import { realFs, type StoreFs } from '../../../pkg/ipam/store.ts';
import {
  catchCni,
  cleanupTempDirs,
  expectConsistent,
  leaseFilesOnDisk,
  reservationsOnDisk,
  tempDir,
} from './helpers.ts';
import { SimFs } from './simfs.ts';

/**
 * releaseDeferred (DEL's release): the lease file and reservations are unlinked and the addresses
 * free in memory when it returns; the directory fsyncs run on the thread pool and `durable` resolves
 * once they are done. What must hold: after `durable`, no power loss brings the lease back; before
 * it, a power loss may bring it back but never hands an address out twice; no fsync runs on the JS
 * thread; an fsync failure rejects `durable` with the store's typed error.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.0.0.0/29', 'fd00::/125'];
const key = (n: number) => ({ containerId: `c${n}`, ifname: 'eth0' });

describe('IPAM releaseDeferred', () => {
  it('returns with the lease gone from memory and disk, durable once `durable` resolves even if all unsynced changes are lost', async () => {
    const dir = tempDir();
    const fs = new SimFs();
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    const lease = ipam.allocate(key(1));
    const kept = ipam.allocate(key(2));
    const { released, durable } = ipam.releaseDeferred(key(1));
    expect(released).toBe(true);
    expect(ipam.get(key(1))).toBeUndefined();
    expect(leaseFilesOnDisk(dir)).toEqual(['c2@eth0.json']);
    for (const a of lease.addresses) expect(reservationsOnDisk(dir).has(a.address)).toBe(false);
    // Unlinked, not yet synced: the removals are among the changes a power loss could undo.
    expect(fs.unsynced('\0').some((p) => p.endsWith('c1@eth0.json'))).toBe(true);
    await durable;
    expect(fs.unsynced('last.json')).toEqual([]);
    fs.powerLoss(
      () => true,
      () => 0,
    );
    const after = openIpamWith({ dir, ranges: RANGES }, new SimFs());
    expect(after.get(key(1))).toBeUndefined();
    expect(after.get(key(2))).toEqual(kept);
    expect(after.loadReport.quarantined).toEqual([]);
  });

  it('a power loss before `durable` resolves may bring the lease back whole, never an address twice', () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), fc.boolean(), (undo, reuse) => {
        const dir = tempDir();
        const fs = new SimFs();
        const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
        const kept = ipam.allocate(key(0));
        const gone = ipam.allocate(key(1));
        ipam.releaseDeferred(key(1)).durable.catch(() => undefined); // the power goes out first
        // Sometimes allocations made meanwhile fill the range (5 IPv4 addresses), so that one of them
        // takes the address the release freed.
        if (reuse) for (let n = 2; n < 6; n++) ipam.allocate(key(n));
        fs.powerLoss(
          (i) => undo[i % undo.length]!,
          () => 0,
        );
        const after = openIpamWith({ dir, ranges: RANGES }, new SimFs());
        expect(after.get(key(0))).toEqual(kept);
        const back = after.get(key(1));
        if (back !== undefined) expect(back.addresses).toEqual(gone.addresses);
        for (let n = 7; n < 9; n++) {
          try {
            after.allocate(key(n));
          } catch (err) {
            // A full range is an answer too; a duplicate address never is.
            if (!(err instanceof CniError) || err.code !== CniCode.IPAM_EXHAUSTED) throw err;
          }
        }
        expectConsistent(after, dir);
        cleanupTempDirs();
      }),
      { numRuns: 150 },
    );
  });

  it('syncs leases/ and addrs/ on the thread pool: no fsync on the JS thread', async () => {
    const dir = tempDir();
    const onThread: string[] = [];
    const pooled: string[] = [];
    const paths = new Map<number, string>();
    const fs: StoreFs = {
      ...realFs,
      openSync: (path, flags, mode) => {
        const fd = realFs.openSync(path, flags, mode);
        paths.set(fd, path.slice(dir.length));
        return fd;
      },
      fsyncSync: (fd) => {
        onThread.push(paths.get(fd)!);
        realFs.fsyncSync(fd);
      },
      fsync: (fd) => {
        pooled.push(paths.get(fd)!);
        return realFs.fsync(fd);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    onThread.length = 0;
    const { durable } = ipam.releaseDeferred(key(1));
    expect(onThread).toEqual([]);
    await durable;
    expect(onThread).toEqual([]);
    expect(pooled.sort()).toEqual(['/addrs', '/leases']);
  });

  it('an fsync failure rejects `durable` with IPAM_STORE_FAILED; the release itself stands', async () => {
    const dir = tempDir();
    let fail = false;
    const fs: StoreFs = {
      ...realFs,
      fsync: (fd) =>
        fail ? Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })) : realFs.fsync(fd),
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    fail = true;
    const err = await ipam.releaseDeferred(key(1)).durable.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.IPAM_STORE_FAILED);
    expect((err as CniError).message).toContain('EIO');
    expect(ipam.get(key(1))).toBeUndefined();
    expect(leaseFilesOnDisk(dir)).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
  });

  it('an unknown key: released false, durable at once, nothing synced', async () => {
    const dir = tempDir();
    let synced = 0;
    const fs: StoreFs = {
      ...realFs,
      fsync: (fd) => {
        synced++;
        return realFs.fsync(fd);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    const { released, durable } = ipam.releaseDeferred(key(9));
    expect(released).toBe(false);
    await durable;
    expect(synced).toBe(0);
  });

  it('a lease file that cannot be removed throws at once and keeps the lease', () => {
    const dir = tempDir();
    const fs: StoreFs = {
      ...realFs,
      unlinkSync: (path) => {
        if (path === join(dir, 'leases', 'c1@eth0.json'))
          throw Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' });
        realFs.unlinkSync(path);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    const lease = ipam.allocate(key(1));
    expect(catchCni(() => ipam.releaseDeferred(key(1))).code).toBe(CniCode.IPAM_STORE_FAILED);
    expect(ipam.get(key(1))).toEqual(lease);
    expect(leaseFilesOnDisk(dir)).toEqual(['c1@eth0.json']);
  });
});
