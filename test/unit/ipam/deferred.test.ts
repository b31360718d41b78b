import { readFileSync } from 'node:fs';
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
 * allocateDeferred: the lease is written when it returns and durable once `durable` resolves (the
 * fsyncs run on the thread pool meanwhile). What must hold: a resolved `durable` survives any power
 * loss; before it resolves, a power loss may lose the lease but never hands its addresses out twice;
 * an fsync failure rejects `durable` with the store's typed error, and release() then leaves nothing.
 *
 * releaseDeferred (DEL's release): the lease file and reservations are unlinked and the addresses
 * free in memory when it returns; the directory fsyncs run on the thread pool. What must hold: after
 * `durable`, no power loss brings the lease back; before it, a power loss may bring it back but
 * never hands an address out twice; no fsync runs on the JS thread; an fsync failure rejects
 * `durable` with the store's typed error.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.0.0.0/29', 'fd00::/125'];
const key = (n: number) => ({ containerId: `c${n}`, ifname: 'eth0' });

/** An fsync that fails the way a dying disk does. */
const eioError = (): Error => Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
const eio = (): Promise<never> => Promise.reject(eioError());

/** The real file system, whose fsyncs fail with EIO while `failing()` says so. */
function fsyncFailingWhen(failing: () => boolean): StoreFs {
  return { ...realFs, fsync: (fd) => (failing() ? eio() : realFs.fsync(fd)) };
}

/** The real file system, its JS-thread fsyncs counted and failing with EIO while `fail` is set. */
function countedFsyncSync(): { fs: StoreFs; state: { fail: boolean; synced: number } } {
  const state = { fail: false, synced: 0 };
  const fs: StoreFs = {
    ...realFs,
    fsyncSync: (fd) => {
      state.synced++;
      if (state.fail) throw eioError();
      realFs.fsyncSync(fd);
    },
  };
  return { fs, state };
}

/**
 * The real file system, its fsyncs (thread pool and JS thread) handed the path each fd was opened
 * with, and every open path reported to `opened`.
 */
function byPath(hooks: {
  fsync?: (fd: number, path: string) => Promise<void>;
  fsyncSync?: (fd: number, path: string) => void;
  opened?: (path: string) => void;
}): StoreFs {
  const paths = new Map<number, string>();
  return {
    ...realFs,
    openSync: (path, flags, mode) => {
      const fd = realFs.openSync(path, flags, mode);
      paths.set(fd, path);
      hooks.opened?.(path);
      return fd;
    },
    fsync: (fd) => (hooks.fsync ?? realFs.fsync)(fd, paths.get(fd)!),
    fsyncSync: (fd) => (hooks.fsyncSync ?? realFs.fsyncSync)(fd, paths.get(fd)!),
  };
}

describe('IPAM allocateDeferred', () => {
  it('returns before the fsyncs and is durable once `durable` resolves, even if all unsynced changes are lost', async () => {
    const dir = tempDir();
    const fs = new SimFs();
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    const { lease, durable } = ipam.allocateDeferred(key(1), { podName: 'p1' });
    // Written, not yet synced: the lease file is among the changes a power loss could drop.
    expect(fs.unsynced('\0').some((p) => p.endsWith('c1@eth0.json'))).toBe(true);
    await durable;
    expect(fs.unsynced('last.json')).toEqual([]); // last.json is best effort by design
    fs.powerLoss(
      () => true,
      () => 0,
    );
    const after = openIpamWith({ dir, ranges: RANGES }, new SimFs());
    expect(after.get(key(1))).toEqual(lease);
    expect(after.loadReport.quarantined).toEqual([]);
  });

  it('a power loss before `durable` resolves may lose the lease, never duplicates an address', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
        fc.array(fc.nat(200), { minLength: 4, maxLength: 4 }),
        (undo, tears) => {
          const dir = tempDir();
          const fs = new SimFs();
          const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
          const kept = ipam.allocate(key(0));
          const pending = ipam.allocateDeferred(key(1));
          pending.durable.catch(() => undefined); // the power goes out before it is awaited
          fs.powerLoss(
            (i) => undo[i % undo.length]!,
            (i) => tears[i % tears.length]!,
          );
          const after = openIpamWith({ dir, ranges: RANGES }, new SimFs());
          // The synchronously allocated lease is untouched; the pending one is there whole or absent.
          expect(after.get(key(0))).toEqual(kept);
          const lost = after.get(key(1));
          if (lost !== undefined) expect(lost.addresses).toEqual(pending.lease.addresses);
          // Whatever survived, the next allocations never reuse an address still reserved.
          for (let n = 2; n < 5; n++) after.allocate(key(n));
          expectConsistent(after, dir);
          cleanupTempDirs();
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a crash at any file system call of a deferred allocation leaves a loadable, consistent store', async () => {
    const crashedAt: number[] = [];
    for (let at = 1; at <= 12; at++) {
      const dir = tempDir();
      const fs = new SimFs();
      const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
      ipam.allocate(key(0));
      fs.arm(at, 5);
      let resolved = false;
      try {
        const { durable } = ipam.allocateDeferred(key(1));
        await durable;
        resolved = true;
      } catch (err) {
        // Only the simulated crash may stop it (the store wraps it in its typed error).
        if (!fs.dead) throw err;
      }
      if (fs.dead) crashedAt.push(at);
      fs.powerLoss(
        () => true,
        () => 0,
      );
      const after = openIpamWith({ dir, ranges: RANGES }, new SimFs());
      if (resolved) expect(after.get(key(1))).toBeDefined();
      for (let n = 2; n < 5; n++) after.allocate(key(n));
      expectConsistent(after, dir);
      cleanupTempDirs();
    }
    // The crash points reached: every call of the allocation up to its last (one that never fires
    // would test nothing).
    expect(crashedAt.length).toBeGreaterThan(0);
    expect(crashedAt).toEqual(Array.from({ length: crashedAt.length }, (_, i) => i + 1));
  });

  it('an fsync failure rejects `durable` with IPAM_STORE_FAILED naming the file; release leaves nothing', async () => {
    const dir = tempDir();
    let failFsync = false;
    const fs = fsyncFailingWhen(() => failFsync);
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    failFsync = true;
    const { durable } = ipam.allocateDeferred(key(1));
    const err = await durable.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(CniCode.IPAM_STORE_FAILED);
    expect((err as CniError).message).toContain('c1@eth0.json');
    expect((err as CniError).message).toContain('EIO');
    expect(ipam.release(key(1))).toBe(true);
    expect(leaseFilesOnDisk(dir)).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
  });

  it('a directory fd a failed sync closed is never closed again by a sync that was in flight on it', async () => {
    const dir = tempDir();
    const isDir = (path: string) => path === join(dir, 'leases') || path === join(dir, 'addrs');
    const inFlight: (() => void)[] = [];
    let failSync = false;
    const base = byPath({
      // The directories' fsyncs on the thread pool wait until the test fails them.
      fsync: (fd, path) =>
        isDir(path) ? new Promise((_, reject) => inFlight.push(() => reject(eioError()))) : realFs.fsync(fd),
      fsyncSync: (fd, path) => {
        if (failSync && isDir(path)) throw eioError();
        realFs.fsyncSync(fd);
      },
    });
    // Each open is its own generation: a number the kernel reuses is another file.
    const generation = new Map<number, number>();
    const closes = new Map<string, number>();
    let opens = 0;
    const fs: StoreFs = {
      ...base,
      openSync: (path, flags, mode) => {
        const fd = base.openSync(path, flags, mode);
        generation.set(fd, ++opens);
        return fd;
      },
      closeSync: (fd) => {
        const k = `${fd}#${generation.get(fd)}`;
        closes.set(k, (closes.get(k) ?? 0) + 1);
        base.closeSync(fd);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    const first = ipam.allocateDeferred(key(1));
    for (let i = 0; i < 50 && inFlight.length < 2; i++) await new Promise((r) => setImmediate(r));
    expect(inFlight.length).toBeGreaterThan(0);
    // A synchronous sync of the same directories fails first (a release flushes on the JS thread)...
    failSync = true;
    expect(() => ipam.release(key(1))).toThrow(/EIO/);
    // ...then the syncs in flight fail on the fds it already closed.
    for (const fail of inFlight) fail();
    await first.durable.catch(() => undefined);
    const twice = [...closes].filter(([, n]) => n > 1).map(([k]) => k);
    expect(twice).toEqual([]);
  });

  it("runs the lease file's and both directories' fsyncs at once, and is durable only after all three", async () => {
    const dir = tempDir();
    const held: { path: string; done: () => Promise<void> }[] = [];
    let holding = false;
    const fs = byPath({
      fsync: (fd, path) =>
        holding
          ? new Promise<void>((resolve) => {
              held.push({ path, done: () => realFs.fsync(fd).then(resolve) });
            })
          : realFs.fsync(fd),
    });
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    holding = true;
    const { durable } = ipam.allocateDeferred(key(1));
    let resolved = false;
    void durable.then(() => {
      resolved = true;
    });
    await new Promise((r) => setImmediate(r));
    // All three were started before any finished: no round trip through the JS thread in between.
    expect(held.map((h) => h.path.slice(dir.length)).sort()).toEqual([
      '/addrs',
      '/leases',
      '/leases/c1@eth0.json',
    ]);
    await Promise.all(held.slice(0, 2).map((h) => h.done()));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    await held[2]!.done();
    await durable;
    expect(resolved).toBe(true);
  });

  it("allocations made together share their directories' fsyncs: one running, one shared after it", async () => {
    const dir = tempDir();
    const synced: string[] = [];
    const fs = byPath({
      fsync: (fd, path) => {
        synced.push(path.slice(dir.length));
        return realFs.fsync(fd);
      },
    });
    const ipam = openIpamWith({ dir, ranges: ['10.0.0.0/24'] }, fs);
    synced.length = 0;
    const pending = [1, 2, 3, 4, 5].map((n) => ipam.allocateDeferred(key(n)));
    await Promise.all(pending.map((p) => p.durable));
    // Five lease files; each directory twice: the run the first allocation started, and one run for
    // the other four, started after it ended (so after their entries were made).
    expect(synced.filter((p) => p.startsWith('/leases/'))).toHaveLength(5);
    expect(synced.filter((p) => p === '/leases')).toHaveLength(2);
    expect(synced.filter((p) => p === '/addrs')).toHaveLength(2);
    const after = openIpamWith({ dir, ranges: ['10.0.0.0/24'] }, realFs);
    expect(after.list().map((l) => l.containerId)).toEqual(['c1', 'c2', 'c3', 'c4', 'c5']);
  });

  it('fsyncs a lease file through the fd that wrote it and opens each directory once for the store', async () => {
    const dir = tempDir();
    const opened: { path: string; flags: number }[] = [];
    const synced: number[] = [];
    const fs: StoreFs = {
      ...realFs,
      openSync: (path, flags, mode) => {
        opened.push({ path: path.slice(dir.length), flags });
        return realFs.openSync(path, flags, mode);
      },
      fsync: (fd) => {
        synced.push(fd);
        return realFs.fsync(fd);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    opened.length = 0;
    for (const n of [1, 2, 3]) await ipam.allocateDeferred(key(n)).durable;
    const opens = (path: string) => opened.filter((o) => o.path === path);
    expect(opens('/leases')).toHaveLength(1);
    expect(opens('/addrs')).toHaveLength(1);
    for (const n of [1, 2, 3]) {
      // One open per lease file, for writing: its fsync went through that fd.
      const lease = opens(`/leases/c${n}@eth0.json`);
      expect(lease).toHaveLength(1);
      expect(lease[0]!.flags & 3).not.toBe(0);
    }
    expect(synced).toHaveLength(9); // three per allocation, none of them on an fd opened again
    const after = openIpamWith({ dir, ranges: RANGES }, realFs);
    expect(after.list().map((l) => l.containerId)).toEqual(['c1', 'c2', 'c3']);
  });

  it('a failed directory fsync closes its fd: the next fsync opens that directory again, the other stays open', async () => {
    const dir = tempDir();
    const dirOpens: string[] = [];
    let failDir: string | undefined;
    const fs = byPath({
      opened: (path) => {
        if (path === join(dir, 'leases') || path === join(dir, 'addrs'))
          dirOpens.push(path.slice(dir.length));
      },
      fsync: (fd, path) => (path.slice(dir.length) === failDir ? eio() : realFs.fsync(fd)),
    });
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    dirOpens.length = 0;
    failDir = '/addrs';
    const err = await ipam.allocateDeferred(key(1)).durable.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as CniError).code).toBe(CniCode.IPAM_STORE_FAILED);
    expect((err as CniError).message).toContain(`${dir}/addrs`);
    expect(dirOpens.sort()).toEqual(['/addrs', '/leases']);
    failDir = undefined;
    dirOpens.length = 0;
    ipam.release(key(1)); // its fsyncs of both directories: only the one that failed is opened again
    await ipam.allocateDeferred(key(2)).durable;
    expect(dirOpens).toEqual(['/addrs']);
    expect(
      openIpamWith({ dir, ranges: RANGES }, realFs)
        .list()
        .map((l) => l.containerId),
    ).toEqual(['c2']);
  });

  it('keeps last.json exact while its text grows and shrinks (rewritten in place)', async () => {
    const dir = tempDir();
    const ipam = openIpamWith({ dir, ranges: ['10.0.0.0/28'] }, realFs);
    // Round robin over .1-.14 twice: "10.0.0.9" -> "10.0.0.10" grows the text, the wrap shrinks it.
    for (let n = 1; n <= 20; n++) {
      const { lease, durable } = ipam.allocateDeferred(key(n));
      await durable;
      const last = JSON.parse(readFileSync(join(dir, 'last.json'), 'utf8')) as Record<string, string>;
      expect(last).toEqual({ '10.0.0.0/28': lease.addresses[0]!.address });
      ipam.release(key(n));
    }
  });

  it('an existing key answers with its lease, already durable', async () => {
    const dir = tempDir();
    const ipam = openIpamWith({ dir, ranges: RANGES }, realFs);
    const first = ipam.allocate(key(1));
    const again = ipam.allocateDeferred(key(1));
    expect(again.lease).toEqual(first);
    await expect(again.durable).resolves.toBeUndefined();
  });
});

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
    const fs = byPath({
      fsyncSync: (fd, path) => {
        onThread.push(path.slice(dir.length));
        realFs.fsyncSync(fd);
      },
      fsync: (fd, path) => {
        pooled.push(path.slice(dir.length));
        return realFs.fsync(fd);
      },
    });
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
    const fs = fsyncFailingWhen(() => fail);
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

  it('a retried release after failed fsyncs is durable only once they succeed (the runtime retries the failed DEL)', async () => {
    const dir = tempDir();
    let fail = false;
    let synced = 0;
    const failing = fsyncFailingWhen(() => fail);
    const fs: StoreFs = {
      ...failing,
      fsync: (fd) => {
        synced++;
        return failing.fsync(fd);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    fail = true;
    await expect(ipam.releaseDeferred(key(1)).durable).rejects.toBeInstanceOf(CniError);
    // Still failing: the retry fails too rather than answer success with nothing synced.
    const again = ipam.releaseDeferred(key(1));
    expect(again.released).toBe(false);
    await expect(again.durable).rejects.toBeInstanceOf(CniError);
    fail = false;
    synced = 0;
    const third = ipam.releaseDeferred(key(1));
    await third.durable;
    expect(synced).toBeGreaterThan(0);
    // Durable now: a fourth release of the key is an unknown key's, nothing synced.
    synced = 0;
    await ipam.releaseDeferred(key(1)).durable;
    expect(synced).toBe(0);
  });

  it('release (synchronous) after failed fsyncs: the retry syncs again and throws while they fail', () => {
    const dir = tempDir();
    const { fs, state } = countedFsyncSync();
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    state.fail = true;
    expect(() => ipam.release(key(1))).toThrow(CniError);
    expect(() => ipam.release(key(1))).toThrow(CniError);
    state.fail = false;
    state.synced = 0;
    expect(ipam.release(key(1))).toBe(false);
    expect(state.synced).toBeGreaterThan(0);
    state.synced = 0;
    expect(ipam.release(key(1))).toBe(false);
    expect(state.synced).toBe(0);
  });

  it('a later release that syncs makes the earlier failed ones durable: their retries sync nothing', () => {
    const dir = tempDir();
    const { fs, state } = countedFsyncSync();
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    ipam.allocate(key(2));
    state.fail = true;
    expect(() => ipam.release(key(1))).toThrow(CniError);
    state.fail = false;
    expect(ipam.release(key(2))).toBe(true);
    state.synced = 0;
    expect(ipam.release(key(1))).toBe(false);
    expect(state.synced).toBe(0);
  });

  it("a pod CIDR change whose release fails to sync: the pod's DEL syncs again rather than answer success", () => {
    const dir = tempDir();
    const { fs, state } = countedFsyncSync();
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key(1));
    state.fail = true;
    expect(() => ipam.setRanges(['10.1.0.0/29', 'fd01::/125'])).toThrow();
    expect(ipam.get(key(1))).toBeUndefined();
    expect(() => ipam.release(key(1))).toThrow(CniError);
    state.fail = false;
    state.synced = 0;
    expect(ipam.release(key(1))).toBe(false);
    expect(state.synced).toBeGreaterThan(0);
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
