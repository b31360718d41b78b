import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { catchCni, cleanupTempDirs, leaseFilesOnDisk, reservationsOnDisk, tempDir } from './helpers.ts';

/**
 * Real disk failures. As root, chmod does not stop writes, so these use what stops root too: an
 * immutable directory (chattr +i), and, in a private mount namespace of a child process, a tmpfs
 * with a handful of inodes (ENOSPC) and a read-only bind mount (EROFS). Nothing is mounted in the
 * test's own namespace; the mounts vanish with the child.
 */

afterEach(cleanupTempDirs);

const RANGES = ['10.244.1.0/24', 'fd00:10:244:1::/64'];
const isRoot = process.getuid?.() === 0;
const CHILD = join(import.meta.dirname, 'fixtures', 'store-child.ts');

function can(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const canUnshare = isRoot && can('unshare', ['-m', '--propagation', 'private', 'true']);
const UNSHARE_SKIP = 'needs root and unshare(1) for a private mount namespace';
/** As root, an immutable directory is what refuses writes; not every file system has the flag. */
const canRefuseWrites = ((): boolean => {
  if (!isRoot) return true; // chmod does it
  const probe = mkdtempSync(join(tmpdir(), 'trellis-chattr-'));
  try {
    return can('chattr', ['+i', probe]) && can('chattr', ['-i', probe]);
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
})();

interface ChildResult {
  dir: string;
  allocated: number;
  error?: { code: number; message: string };
  inMemory: number;
  after: {
    quarantined: unknown[];
    leases: { owner: string; addresses: string[] }[];
    reservations: Record<string, string>;
    files: string[];
  };
}

/** Runs the child under `unshare -m` after the given shell setup (mounts inside the new namespace). */
function inPrivateMounts<T = ChildResult[]>(setup: string, args: string[]): T {
  const r = spawnSync(
    'unshare',
    [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-ec',
      `${setup}\nexec "$@"`,
      'sh',
      process.execPath,
      CHILD,
      ...args,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Every reservation belongs to a lease with that address, and every lease has its reservations. */
function expectConsistent(after: ChildResult['after']): void {
  const fromLeases: Record<string, string> = {};
  for (const l of after.leases) for (const a of l.addresses) fromLeases[a] = l.owner;
  expect(after.reservations).toEqual(fromLeases);
  expect(after.files).toEqual(after.leases.map((l) => `${l.owner}.json`).sort());
  expect(after.quarantined).toEqual([]);
}

describe('IPAM store on a failing disk', () => {
  it('fails with IPAM_STORE_FAILED naming the directory when the state directory cannot be created', () => {
    const file = join(tempDir(), 'not-a-dir');
    writeFileSync(file, '');
    const dir = join(file, 'state');
    const err = catchCni(() => openIpam({ dir, ranges: RANGES }));
    expect(err.code).toBe(CniCode.IPAM_STORE_FAILED);
    expect(err.message).toContain(dir);
    expect(err.message).toContain('ENOTDIR');
  });

  it.skipIf(!canRefuseWrites)(
    `leaves no partial lease when the lease directory refuses writes, and recovers after${canRefuseWrites ? '' : ` (skipped: chattr +i does not work under ${tmpdir()})`}`,
    () => {
      const dir = tempDir();
      const ipam = openIpam({ dir, ranges: RANGES });
      const first = ipam.allocate({ containerId: 'first', ifname: 'eth0' });
      const before = reservationsOnDisk(dir);
      const leases = join(dir, 'leases');
      // Root ignores permission bits; an immutable directory stops root too.
      if (isRoot) execFileSync('chattr', ['+i', leases]);
      else execFileSync('chmod', ['0500', leases]);
      let err: ReturnType<typeof catchCni>;
      try {
        err = catchCni(() => ipam.allocate({ containerId: 'second', ifname: 'eth0' }));
      } finally {
        if (isRoot) execFileSync('chattr', ['-i', leases]);
        else execFileSync('chmod', ['0700', leases]);
      }
      expect(err.code).toBe(CniCode.IPAM_STORE_FAILED);
      expect(err.message).toContain(dir);
      expect(err.message).toMatch(isRoot ? /EPERM/ : /EACCES/);
      // The addresses reserved before the lease write failed were rolled back.
      expect(reservationsOnDisk(dir)).toEqual(before);
      expect(leaseFilesOnDisk(dir)).toEqual(['first@eth0.json']);
      expect(ipam.get({ containerId: 'second', ifname: 'eth0' })).toBeUndefined();
      // Writable again: the same instance goes on, and a reload agrees.
      const second = ipam.allocate({ containerId: 'second', ifname: 'eth0' });
      const reopened = openIpam({ dir, ranges: RANGES });
      expect(reopened.list()).toEqual([first, second]);
      expect(reopened.loadReport.quarantined).toEqual([]);
    },
  );

  it.skipIf(!canUnshare)(
    `fills a tiny tmpfs to ENOSPC at every step of an allocation without a partial lease${canUnshare ? '' : ` (skipped: ${UNSHARE_SKIP})`}`,
    () => {
      // 1 root + 4 directories + last.json + 3 inodes per allocation (2 symlinks, 1 lease file):
      // inode limits 20, 21, 22 make the first failing allocation stop at its lease file, its first
      // and its second symlink.
      const base = tempDir('enospc');
      const points = [20, 21, 22].map((n) => ({ n, mnt: join(base, `m${n}`) }));
      for (const p of points) mkdirSync(p.mnt);
      const setup = points.map((p) => `mount -t tmpfs -o size=4m,nr_inodes=${p.n},mode=0700 tmpfs ${p.mnt}`);
      const results = inPrivateMounts(setup.join('\n'), ['fill', ...points.map((p) => join(p.mnt, 'state'))]);
      expect(results).toHaveLength(3);
      for (const r of results) {
        expect(r.allocated).toBeGreaterThan(0);
        expect(r.error?.code).toBe(CniCode.IPAM_STORE_FAILED);
        expect(r.error?.message).toContain(r.dir);
        expect(r.error?.message).toContain('ENOSPC');
        // Exactly the returned leases survive, each with its reservations and nothing else.
        expect(r.inMemory).toBe(r.allocated);
        expect(r.after.leases).toHaveLength(r.allocated);
        expectConsistent(r.after);
      }
      // Different limits, different numbers of successful allocations before the first failure.
      expect(new Set(results.map((r) => r.allocated)).size).toBeGreaterThan(1);
    },
  );

  it.skipIf(!canUnshare)(
    `loads with a torn lease on a full disk: the record stays in place, its addresses held, and DEL frees it${canUnshare ? '' : ` (skipped: ${UNSHARE_SKIP})`}`,
    () => {
      const base = tempDir('tornfull');
      const out = inPrivateMounts<{
        load: { quarantined: { file: string; reason: string; leftInPlace?: string }[]; leases: number };
        tornAddresses: string[];
        reservedForTorn: string[];
        releaseTorn: { ok?: boolean };
        releaseFine: { ok?: boolean };
        after: { leases: unknown[]; reservations: Record<string, string>; files: string[] };
        quarantineDir: string[];
      }>(`mount -t tmpfs -o size=256k,nr_inodes=64,mode=0700 tmpfs ${base}`, [
        'tornfull',
        join(base, 'state'),
      ]);
      // The agent starts: the torn record could not be moved aside (no room for its .held list).
      expect(out.load.leases).toBe(1);
      expect(out.load.quarantined).toEqual([
        expect.objectContaining({
          file: expect.stringMatching(/torn@eth0\.json$/),
          leftInPlace: expect.stringContaining('ENOSPC'),
        }),
      ]);
      // Its addresses stay reserved on disk, so nothing hands them out; and DEL works, for both.
      expect(out.reservedForTorn.sort()).toEqual([...out.tornAddresses].sort());
      expect(out.releaseTorn).toEqual({ ok: true });
      expect(out.releaseFine).toEqual({ ok: true });
      expect(out.after).toMatchObject({ leases: [], reservations: {}, files: [] });
      // No partial .held or .reason file left behind by the failed attempt.
      expect(out.quarantineDir).toEqual([]);
    },
  );

  it.skipIf(!canUnshare)(
    `refuses to allocate on a read-only state directory (EROFS) and keeps what was there${canUnshare ? '' : ` (skipped: ${UNSHARE_SKIP})`}`,
    () => {
      const dir = tempDir('erofs');
      const existing = openIpam({ dir, ranges: RANGES }).allocate({
        containerId: 'existing',
        ifname: 'eth0',
      });
      const before = reservationsOnDisk(dir);
      const [r] = inPrivateMounts(`mount --bind ${dir} ${dir}\nmount -o remount,bind,ro ${dir}`, [
        'rofs',
        dir,
      ]);
      expect(r?.allocated).toBe(0);
      expect(r?.error?.code).toBe(CniCode.IPAM_STORE_FAILED);
      expect(r?.error?.message).toContain(dir);
      expect(r?.error?.message).toContain('EROFS');
      expect(r?.after.leases).toEqual([
        { owner: 'existing@eth0', addresses: existing.addresses.map((a) => a.address) },
      ]);
      // And outside the namespace, the state is as it was.
      expect(reservationsOnDisk(dir)).toEqual(before);
      expect(openIpam({ dir, ranges: RANGES }).list()).toEqual([existing]);
    },
  );
});
