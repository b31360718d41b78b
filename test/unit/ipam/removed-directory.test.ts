import { existsSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openIpam, openIpamWith } from '../../../pkg/ipam/ipam.ts';
import { realFs, type StoreFs } from '../../../pkg/ipam/store.ts';
import {
  cleanupTempDirs,
  expectConsistent,
  leaseFilesOnDisk,
  reservationsOnDisk,
  tempDir,
} from './helpers.ts';

/**
 * A state directory removed under a running agent (a node cleanup's rm -rf): the next change writes
 * it back from memory, so ADD keeps working and a restart still finds every running pod's lease.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/28', 'fd00:9::/124'];
const key = (id: string) => ({ containerId: id, ifname: 'eth0' });

describe('IPAM state directory removed under the agent', () => {
  it('is written back by the next ADD, which then succeeds; a restart loads every lease', () => {
    const dir = tempDir('removed');
    const rewritten: [string, number][] = [];
    const ipam = openIpam({ dir, ranges: RANGES, onRewritten: (d, n) => rewritten.push([d, n]) });
    const a = ipam.allocate(key('aaaa'));
    const b = ipam.allocate(key('bbbb'));
    rmSync(dir, { recursive: true, force: true });

    const c = ipam.allocate(key('cccc'));
    expect(rewritten).toEqual([[dir, 2]]);
    // No address handed out twice: c's are new.
    const taken = [...a.addresses, ...b.addresses].map((x) => x.address);
    for (const x of c.addresses) expect(taken).not.toContain(x.address);
    expect(leaseFilesOnDisk(dir)).toEqual(['aaaa@eth0.json', 'bbbb@eth0.json', 'cccc@eth0.json']);
    expect(reservationsOnDisk(dir).size).toBe(6);
    expectConsistent(ipam, dir);

    const again = openIpam({ dir, ranges: RANGES });
    expect(again.loadReport.quarantined).toEqual([]);
    expect(
      again
        .list()
        .map((l) => l.containerId)
        .sort(),
    ).toEqual(['aaaa', 'bbbb', 'cccc']);
    expect(again.get(key('aaaa'))?.addresses).toEqual(a.addresses);
  });

  it('is written back by a DEL, which then releases durably', () => {
    const dir = tempDir('removed');
    const ipam = openIpam({ dir, ranges: RANGES });
    ipam.allocate(key('aaaa'));
    ipam.allocate(key('bbbb'));
    rmSync(join(dir, 'leases'), { recursive: true, force: true });

    expect(ipam.release(key('aaaa'))).toBe(true);
    expect(leaseFilesOnDisk(dir)).toEqual(['bbbb@eth0.json']);
    expect(reservationsOnDisk(dir).size).toBe(2);
    expectConsistent(ipam, dir);
  });

  it("keeps a quarantined record's held addresses held through the rewrite", () => {
    const dir = tempDir('removed');
    const first = openIpam({ dir, ranges: RANGES });
    const torn = first.allocate(key('aaaa'));
    writeFileSync(join(dir, 'leases', 'aaaa@eth0.json'), '{"tor');
    const ipam = openIpam({ dir, ranges: RANGES });
    expect(ipam.heldKeys()).toEqual([key('aaaa')]);
    rmSync(dir, { recursive: true, force: true });

    ipam.allocate(key('bbbb'));
    expect(readdirSync(join(dir, 'quarantine')).filter((f) => f.endsWith('.held'))).toHaveLength(1);
    const again = openIpam({ dir, ranges: RANGES });
    expect(again.heldAddresses(key('aaaa'))).toEqual(torn.addresses);
    // The held addresses are never handed out while held.
    for (let i = 0; i < 5; i++) {
      const l = again.allocate(key(`c${i}`));
      for (const x of l.addresses) expect(torn.addresses.map((t) => t.address)).not.toContain(x.address);
    }
  });

  it('a write-back that failed halfway (ENOSPC) is tried again until it completes, not taken as done', () => {
    const dir = tempDir('removed');
    let failures = 1;
    const fs: StoreFs = {
      ...realFs,
      openSync: (path, flags, mode) => {
        if (path.endsWith('.tmp') && failures-- > 0)
          throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        return realFs.openSync(path, flags, mode);
      },
    };
    failures = 0;
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key('aaaa'));
    ipam.allocate(key('bbbb'));
    rmSync(dir, { recursive: true, force: true });
    failures = 1;
    expect(() => ipam.keepLayout()).toThrow(/ENOSPC/);
    // The directories are back, the leases not yet: the next look writes them.
    expect(ipam.keepLayout()).toBe(true);
    expect(leaseFilesOnDisk(dir)).toEqual(['aaaa@eth0.json', 'bbbb@eth0.json']);
    expect(reservationsOnDisk(dir).size).toBe(4);
    expect(ipam.keepLayout()).toBe(false);
    expect(openIpam({ dir, ranges: RANGES }).list()).toHaveLength(2);
  });

  it('quarantine/ alone removed is written back too: a DEL of a quarantined attachment works', () => {
    const dir = tempDir('removed');
    const first = openIpam({ dir, ranges: RANGES });
    first.allocate(key('aaaa'));
    writeFileSync(join(dir, 'leases', 'aaaa@eth0.json'), '{"tor');
    const ipam = openIpam({ dir, ranges: RANGES });
    expect(ipam.heldKeys()).toEqual([key('aaaa')]);
    rmSync(join(dir, 'quarantine'), { recursive: true, force: true });
    expect(ipam.release(key('aaaa'))).toBe(true);
    expect(ipam.heldKeys()).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
  });

  it('does nothing while the layout is there', () => {
    const dir = tempDir('removed');
    const rewritten: number[] = [];
    const ipam = openIpam({ dir, ranges: RANGES, onRewritten: (_d, n) => rewritten.push(n) });
    ipam.allocate(key('aaaa'));
    ipam.release(key('aaaa'));
    expect(rewritten).toEqual([]);
    expect(existsSync(join(dir, 'leases'))).toBe(true);
  });
});

describe('lease records removed under the agent (keepRecords)', () => {
  it("writes back a lease file and a reservation removed by hand, and a restart loads them: the pod's addresses stay its own", () => {
    const dir = tempDir('records');
    const ipam = openIpam({ dir, ranges: RANGES });
    const a = ipam.allocate(key('aaaa'), { podName: 'web-0', mtu: 1300 });
    const b = ipam.allocate(key('bbbb'));
    ipam.allocate(key('cccc'));
    expect(ipam.keepRecords()).toEqual([]);
    rmSync(join(dir, 'leases', 'aaaa@eth0.json'));
    const bV6 = b.addresses[1]!.address;
    unlinkSync(join(dir, 'addrs', bV6)); // rmSync leaves a dangling symlink in place

    const repairs = ipam.keepRecords();
    expect(repairs.map((r) => [r.lease.containerId, r.missing])).toEqual([
      ['aaaa', ['lease file']],
      ['bbbb', [bV6]],
    ]);
    expect(leaseFilesOnDisk(dir)).toEqual(['aaaa@eth0.json', 'bbbb@eth0.json', 'cccc@eth0.json']);
    expect(reservationsOnDisk(dir).get(bV6)).toBe('bbbb@eth0');
    expectConsistent(ipam, dir);
    expect(ipam.keepRecords()).toEqual([]);

    const again = openIpam({ dir, ranges: RANGES });
    expect(again.loadReport.quarantined).toEqual([]);
    expect(again.get(key('aaaa'))).toEqual(a);
    // The written-back reservation holds: a new lease does not get b's address.
    const d = again.allocate(key('dddd'));
    expect(d.addresses.map((x) => x.address)).not.toContain(bV6);
  });

  it('points a reservation re-pointed to another attachment (an addrs/ restored from a backup) back at its lease: a restart keeps the pod its address', () => {
    const dir = tempDir('repointed');
    const ipam = openIpam({ dir, ranges: RANGES });
    const a = ipam.allocate(key('aaaa'));
    expect(ipam.keepRecords()).toEqual([]);
    const v4 = a.addresses[0]!.address;
    unlinkSync(join(dir, 'addrs', v4));
    symlinkSync('xxxx@eth0', join(dir, 'addrs', v4));

    expect(ipam.keepRecords().map((r) => [r.lease.containerId, r.missing])).toEqual([
      ['aaaa', [`${v4} (its reservation named another attachment)`]],
    ]);
    expect(reservationsOnDisk(dir).get(v4)).toBe('aaaa@eth0');
    expectConsistent(ipam, dir);
    expect(ipam.keepRecords()).toEqual([]);
    const again = openIpam({ dir, ranges: RANGES });
    expect(again.loadReport.quarantined).toEqual([]);
    expect(again.get(key('aaaa'))).toEqual(a);
  });
});

describe('keepRecords: the cost of a check', () => {
  it("reads no record while the directories' stamps stand still, and scans again once one moves", () => {
    const dir = tempDir('records');
    let reads = 0;
    const fs: StoreFs = {
      ...realFs,
      readlinkSync: (path) => {
        reads++;
        return realFs.readlinkSync(path);
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    for (const id of ['aaaa', 'bbbb', 'cccc']) ipam.allocate(key(id));
    expect(ipam.keepRecords()).toEqual([]);
    expect(reads).toBe(6); // each address's link, once
    reads = 0;
    expect(ipam.keepRecords()).toEqual([]);
    expect(ipam.keepRecords()).toEqual([]);
    expect(reads).toBe(0);
    // A removal moves the stamp of its directory: found at the next check.
    rmSync(join(dir, 'leases', 'bbbb@eth0.json'));
    expect(ipam.keepRecords().map((r) => r.missing)).toEqual([['lease file']]);
    // The write-back moved it too: one more scan, which finds nothing, then quiet again.
    expect(ipam.keepRecords()).toEqual([]);
    reads = 0;
    expect(ipam.keepRecords()).toEqual([]);
    expect(reads).toBe(0);
  });

  it('an fsync queued on a directory fd when the directory is written back runs on that fd, which closes after it', async () => {
    const dir = tempDir('removed');
    const held: (() => Promise<void>)[] = [];
    let holding = false;
    // Each open is its own generation: a number the kernel reuses is another file.
    const generation = new Map<number, number>();
    let opens = 0;
    const closes = new Map<string, number>();
    const synced: string[] = [];
    const fs: StoreFs = {
      ...realFs,
      openSync: (path, flags, mode) => {
        const fd = realFs.openSync(path, flags, mode);
        generation.set(fd, ++opens);
        return fd;
      },
      closeSync: (fd) => {
        const k = `${fd}#${generation.get(fd)}`;
        generation.delete(fd);
        closes.set(k, (closes.get(k) ?? 0) + 1);
        realFs.closeSync(fd);
      },
      // The directories' fsyncs on the thread pool wait, as a busy pool makes them.
      fsync: (fd) => {
        if (!holding) return realFs.fsync(fd);
        const k = `${fd}#${generation.get(fd)}`;
        return new Promise<void>((resolve, reject) => {
          held.push(() => {
            // Run on the same open file it was queued on, or on nothing (closed, number reused).
            synced.push(generation.has(fd) && `${fd}#${generation.get(fd)}` === k ? k : `${k} gone`);
            return realFs.fsync(fd).then(resolve, reject);
          });
        });
      },
    };
    const ipam = openIpamWith({ dir, ranges: RANGES }, fs);
    ipam.allocate(key('aaaa'));
    holding = true;
    const deferred = ipam.allocateDeferred(key('bbbb'));
    for (let i = 0; i < 20 && held.length < 3; i++) await new Promise((r) => setImmediate(r));
    expect(held.length).toBeGreaterThan(0);
    rmSync(dir, { recursive: true, force: true });
    // The write-back drops the directory fds it kept; the ones with an fsync queued stay open.
    ipam.allocate(key('cccc'));
    holding = false;
    for (const run of held.splice(0)) await run();
    await deferred.durable;
    expect(synced.length).toBeGreaterThan(0);
    expect(synced.filter((k) => k.endsWith('gone'))).toEqual([]);
    // Closed once their fsyncs were done (none leaked), and never twice.
    for (const k of synced) expect(closes.get(k)).toBe(1);
    expect([...closes].filter(([, n]) => n > 1)).toEqual([]);
    expect(leaseFilesOnDisk(dir)).toEqual(['aaaa@eth0.json', 'bbbb@eth0.json', 'cccc@eth0.json']);
  });
});
