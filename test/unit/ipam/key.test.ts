import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_CONTAINER_ID_LENGTH, parseCniEnv } from '../../../pkg/cni/env.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { keyProblem, ownerName, parseOwnerName } from '../../../pkg/ipam/key.ts';
import { cleanupTempDirs, leaseFilesOnDisk, reservationsOnDisk, tempDir } from './helpers.ts';

afterEach(cleanupTempDirs);

const RANGES = ['10.9.0.0/24', 'fd00:9::/120'];

/**
 * Interface names Linux and the CNI spec accept that the lease store once refused, and ones that
 * look like the store's own file name parts ('@', '.json', '.held', a quarantine stamp).
 */
const NAMES = [
  '_x',
  'e@1',
  'a+b',
  'e@1@2',
  'x.json',
  'x.json.5',
  'x.json.1.held',
  '...',
  '-',
  'a$(id)`x`',
  'é',
];

function envAccepts(containerId: string, ifname: string): boolean {
  try {
    parseCniEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: containerId, CNI_IFNAME: ifname, CNI_NETNS: '/x' });
    return true;
  } catch {
    return false;
  }
}

describe('lease keys follow the CNI environment check', () => {
  it('accept exactly the container ids and interface names ADD accepts', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.string({ unit: 'grapheme', maxLength: 8 }),
      fc.string({ unit: fc.constantFrom(...'aZ9_.-@+$:/ \0é'), maxLength: 16 }),
      fc.constantFrom(...NAMES, '.', '..', 'c'.repeat(MAX_CONTAINER_ID_LENGTH + 1), 'a\ud800'),
    );
    fc.assert(
      fc.property(text, text, (containerId, ifname) => {
        expect(keyProblem({ containerId, ifname }) === undefined).toBe(envAccepts(containerId, ifname));
      }),
      { numRuns: 5000 },
    );
  });

  it('split at the first "@" back into the key they came from (a container id never holds one)', () => {
    for (const ifname of NAMES) {
      const key = { containerId: 'c0ffee', ifname };
      expect(parseOwnerName(ownerName(key))).toEqual(key);
    }
    expect(parseOwnerName('c0ffee')).toBeUndefined();
    expect(parseOwnerName('c0@ffee@..')).toEqual({ containerId: 'c0', ifname: 'ffee@..' });
    expect(parseOwnerName('c0ffee@..')).toBeUndefined();
    expect(parseOwnerName('../x@eth0')).toBeUndefined();
  });
});

describe('leases of such interface names on disk', () => {
  const key = (ifname: string) => ({ containerId: 'c0ffee', ifname });

  it('load back after a restart: nothing quarantined, same addresses, reservations owned by them', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: RANGES });
    const leases = NAMES.map((ifname) => ipam.allocate(key(ifname)));
    expect(leaseFilesOnDisk(dir)).toEqual(NAMES.map((n) => `c0ffee@${n}.json`).sort());

    const again = openIpam({ dir, ranges: RANGES });
    expect(again.loadReport.quarantined).toEqual([]);
    for (const lease of leases) expect(again.get(key(lease.ifname))).toEqual(lease);
    const owners = new Set(reservationsOnDisk(dir).values());
    expect(owners).toEqual(new Set(NAMES.map((n) => `c0ffee@${n}`)));
    expect(again.release(key('e@1'))).toBe(true);
    expect(again.get(key('e@1'))).toBeUndefined();
    expect(again.get(key('e@1@2'))).toBeDefined();
  });

  it('quarantined, keep their addresses held by their own key, which DEL (release) frees', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: RANGES });
    const addrs = new Map(
      NAMES.map((n) => [n, ipam.allocate(key(n)).addresses.map((a) => a.address)] as const),
    );
    // Corrupt the names whose owner text is a prefix of another's ("x.json" of "x.json.5") or looks
    // like a quarantine file's stamp ("x.json.1.held"), and one with '@'.
    const corrupt = ['x.json', 'x.json.1.held', 'e@1'];
    for (const n of corrupt) writeFileSync(join(dir, 'leases', `c0ffee@${n}.json`), `{"torn ${n}`);

    const reopened = openIpam({ dir, ranges: RANGES });
    expect(reopened.loadReport.quarantined.map((q) => q.file).sort()).toEqual(
      corrupt.map((n) => join(dir, 'leases', `c0ffee@${n}.json`)).sort(),
    );
    expect(
      reopened
        .heldKeys()
        .map((k) => k.ifname)
        .sort(),
    ).toEqual([...corrupt].sort());
    // Each key gets its own record back, none of another's.
    for (const n of corrupt) expect(reopened.quarantinedRecords(key(n))).toEqual([`{"torn ${n}`]);
    expect(reopened.quarantinedRecords(key('x.json.5'))).toEqual([]);
    // Their .held lists name their own addresses; the others' leases loaded as they were.
    const held = readdirSync(join(dir, 'quarantine')).filter((f) => f.endsWith('.held'));
    expect(held).toHaveLength(corrupt.length);
    for (const n of corrupt) {
      // <owner>.json.<ms>.held, the stamp all digits
      const prefix = `c0ffee@${n}.json.`;
      const list = held.find((f) => f.startsWith(prefix) && /^\d+\.held$/.test(f.slice(prefix.length)));
      expect(
        readFileSync(join(dir, 'quarantine', list!), 'utf8')
          .trim()
          .split('\n')
          .sort(),
      ).toEqual([...addrs.get(n)!].sort());
    }
    for (const n of NAMES.filter((x) => !corrupt.includes(x))) {
      expect(reopened.get(key(n))?.addresses.map((a) => a.address)).toEqual(addrs.get(n));
    }

    // Still held after another restart, by the same keys; DEL of one frees its addresses only.
    const third = openIpam({ dir, ranges: RANGES });
    expect(
      third
        .heldKeys()
        .map((k) => k.ifname)
        .sort(),
    ).toEqual([...corrupt].sort());
    expect(third.release(key('x.json'))).toBe(true);
    expect(
      third
        .heldKeys()
        .map((k) => k.ifname)
        .sort(),
    ).toEqual(['e@1', 'x.json.1.held']);
    const reserved = reservationsOnDisk(dir);
    for (const a of addrs.get('x.json')!) expect(reserved.has(a)).toBe(false);
    for (const a of addrs.get('x.json.1.held')!) expect(reserved.get(a)).toBe('c0ffee@x.json.1.held');
    for (const a of addrs.get('x.json.5')!) expect(reserved.get(a)).toBe('c0ffee@x.json.5');
  });
});
