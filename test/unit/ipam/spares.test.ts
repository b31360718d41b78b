import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { SPARE_TARGET } from '../../../pkg/ipam/spares.ts';
import { LeaseStore, realFs } from '../../../pkg/ipam/store.ts';
import { cleanupTempDirs, tempDir } from './helpers.ts';

afterEach(cleanupTempDirs);

const lease = (id: string) => ({
  containerId: id,
  ifname: 'eth0',
  addresses: [{ family: 4 as const, address: '10.0.0.2', range: '10.0.0.0/24' }],
  createdAt: new Date(0).toISOString(),
});

describe('spare lease files', () => {
  it('are made empty and 0600 up to the target, and a new lease file is a spare renamed into place', async () => {
    const dir = tempDir();
    const store = new LeaseStore(dir, realFs);
    store.load();
    await store.spares.topUp();
    const spareDir = join(dir, 'spare');
    const names = readdirSync(spareDir);
    expect(names).toHaveLength(SPARE_TARGET);
    for (const n of names) {
      const st = statSync(join(spareDir, n));
      expect(st.size).toBe(0);
      expect(st.mode & 0o777).toBe(0o600);
    }
    const inodes = new Set(names.map((n) => statSync(join(spareDir, n)).ino));

    store.createLease(lease('c1'));
    const path = join(dir, 'leases', 'c1@eth0.json');
    // The same inode as one of the spares: nothing was allocated for it.
    expect(inodes.has(statSync(path).ino)).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toMatchObject({ version: 1, containerId: 'c1' });
    expect(readdirSync(spareDir)).toHaveLength(SPARE_TARGET - 1);
    expect(store.spares.count).toBe(SPARE_TARGET - 1);
  });

  it('left by a previous run are used after a restart; without any, lease files are created as before', async () => {
    const dir = tempDir();
    const first = new LeaseStore(dir, realFs);
    first.load();
    await first.spares.topUp();
    const second = new LeaseStore(dir, realFs);
    second.load();
    expect(second.spares.count).toBe(SPARE_TARGET);

    // Spares that vanished behind the store's back: the rename fails, the file is created instead.
    rmSync(join(dir, 'spare'), { recursive: true });
    second.createLease(lease('c2'));
    expect(JSON.parse(readFileSync(join(dir, 'leases', 'c2@eth0.json'), 'utf8'))).toMatchObject({
      containerId: 'c2',
    });
    expect(second.spares.count).toBe(0);
  });

  it('each take one spare, and leave leases that a reopened store loads whole', async () => {
    const dir = tempDir();
    const store = new LeaseStore(dir, realFs);
    store.load();
    await store.spares.topUp();
    const ipam = openIpam({ dir, ranges: ['10.0.0.0/29'] });
    const a = ipam.allocate({ containerId: 'a', ifname: 'eth0' });
    const { lease: b, durable } = ipam.allocateDeferred({ containerId: 'b', ifname: 'eth0' });
    await durable;
    const again = openIpam({ dir, ranges: ['10.0.0.0/29'] });
    expect(again.list()).toEqual([a, b]);
    expect(again.loadReport.quarantined).toEqual([]);
    expect(readdirSync(join(dir, 'leases')).sort()).toEqual(['a@eth0.json', 'b@eth0.json']);
    expect(readdirSync(join(dir, 'spare'))).toHaveLength(SPARE_TARGET - 2);
  });
});
