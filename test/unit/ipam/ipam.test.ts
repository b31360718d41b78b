import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { type Lease, openIpam, RangeChangeError } from '../../../pkg/ipam/index.ts';
import { openIpamWith } from '../../../pkg/ipam/ipam.ts';
import { realFs, type StoreFs } from '../../../pkg/ipam/store.ts';
import { catchCni, cleanupTempDirs, leaseFilesOnDisk, reservationsOnDisk, tempDir } from './helpers.ts';

afterEach(cleanupTempDirs);

const DUAL = ['10.244.1.0/24', 'fd00:10:244:1::/64'];
const key = (id: string, ifname = 'eth0') => ({ containerId: id, ifname });
const addrs = (lease: Lease | undefined): string[] => (lease?.addresses ?? []).map((a) => a.address);

/** The real file system, except that unlinking a path ending in what `refuse` was last given fails (EIO). */
function unlinkRefusingFs(): { fs: StoreFs; refuse: (suffix: string) => void } {
  let refused = '';
  const fs: StoreFs = {
    ...realFs,
    unlinkSync: (path) => {
      if (refused !== '' && path.endsWith(refused)) {
        throw Object.assign(new Error(`EIO: i/o error, unlink '${path}'`), { code: 'EIO' });
      }
      realFs.unlinkSync(path);
    },
  };
  return {
    fs,
    refuse: (suffix) => {
      refused = suffix;
    },
  };
}

describe('reservations that name no owner', () => {
  it('are kept at load and reported by path, never freed or handed out', () => {
    const dir = join(tempDir(), 'state');
    const ipam = openIpam({ dir, ranges: ['10.244.9.0/30'] });
    const a = ipam.allocate(key('aaa'));
    // A regular file and a symlink to something that is no owner, as a hand or a tool may leave.
    const plain = join(dir, 'addrs', '10.244.9.2');
    ipam.release(key('aaa'));
    writeFileSync(plain, 'x');
    expect(addrs(a)).toEqual(['10.244.9.2']);
    const reopened = openIpam({ dir, ranges: ['10.244.9.0/30'] });
    expect(reopened.loadReport.unowned).toEqual([plain]);
    // 10.244.9.1 is the gateway's, .2 is kept: the /30 has nothing left to hand out.
    expect(() => reopened.allocate(key('bbb'))).toThrow(/exhausted/);
    const clean = openIpam({ dir: join(tempDir(), 'state'), ranges: ['10.244.9.0/30'] });
    expect(clean.loadReport.unowned).toBeUndefined();
  });
});

describe('allocate / reopen', () => {
  it('hands out one address per family in range order and keeps them across a reopen', () => {
    const dir = join(tempDir(), 'state');
    const ipam = openIpam({ dir, ranges: DUAL });
    const a = ipam.allocate(key('aaa'), { podNamespace: 'default', podName: 'web-0', podUid: 'u1' });
    const b = ipam.allocate(key('bbb'), { netns: '/var/run/netns/cni-1' });
    expect(a.addresses).toEqual([
      { family: 4, address: '10.244.1.2', range: '10.244.1.0/24' },
      { family: 6, address: 'fd00:10:244:1::2', range: 'fd00:10:244:1::/64' },
    ]);
    expect(a).toMatchObject({
      containerId: 'aaa',
      ifname: 'eth0',
      podNamespace: 'default',
      podName: 'web-0',
    });
    expect(Number.isNaN(Date.parse(a.createdAt))).toBe(false);
    expect(addrs(b)).toEqual(['10.244.1.3', 'fd00:10:244:1::3']);

    const again = openIpam({ dir, ranges: DUAL });
    expect(again.loadReport.quarantined).toEqual([]);
    expect(again.get(key('aaa'))).toEqual(a);
    expect(again.get(key('bbb'))).toEqual(b);
    expect(again.list()).toHaveLength(2);
    expect(again.ranges()).toEqual(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    // The next allocation continues after the last one, even in a new process.
    expect(addrs(again.allocate(key('ccc')))).toEqual(['10.244.1.4', 'fd00:10:244:1::4']);
    expect(reservationsOnDisk(dir)).toEqual(
      new Map([
        ['10.244.1.2', 'aaa@eth0'],
        ['10.244.1.3', 'bbb@eth0'],
        ['10.244.1.4', 'ccc@eth0'],
        ['fd00:10:244:1::2', 'aaa@eth0'],
        ['fd00:10:244:1::3', 'bbb@eth0'],
        ['fd00:10:244:1::4', 'ccc@eth0'],
      ]),
    );
  });

  it('follows the order Kubernetes gives (IPv6 first) and canonicalizes ranges', () => {
    const ipam = openIpam({ dir: tempDir(), ranges: ['FD00:10:244:1:0::/120', '10.244.1.0/24'] });
    expect(ipam.ranges()).toEqual(['fd00:10:244:1::/120', '10.244.1.0/24']);
    expect(ipam.allocate(key('a')).addresses.map((a) => a.family)).toEqual([6, 4]);
  });

  it('is idempotent per key and fills in missing meta only', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    const first = ipam.allocate(key('aaa'), { podName: 'web-0' });
    const second = ipam.allocate(key('aaa'), { podName: 'other', podNamespace: 'ns1' });
    expect(second.addresses).toEqual(first.addresses);
    expect(second.createdAt).toBe(first.createdAt);
    expect(second.podName).toBe('web-0');
    expect(second.podNamespace).toBe('ns1');
    expect(ipam.list()).toHaveLength(1);
    // Same container, another interface: another lease.
    expect(addrs(ipam.allocate(key('aaa', 'net1')))).toEqual(['10.244.1.3', 'fd00:10:244:1::3']);
    // The filled-in meta is on disk too.
    expect(openIpam({ dir, ranges: DUAL }).get(key('aaa'))?.podNamespace).toBe('ns1');
  });

  it('moves an attachment added again in another namespace: netns follows, the addresses stay', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    const first = ipam.allocate(key('aaa'), {
      netns: '/var/run/netns/cni-a',
      podName: 'web-0',
      network: 'trellis',
    });
    const moved = ipam.allocate(key('aaa'), {
      netns: '/var/run/netns/cni-b',
      podName: 'web-1',
      network: 'other',
    });
    expect(moved.addresses).toEqual(first.addresses);
    // Only netns follows the call; the pod and the network it was added for stay as recorded.
    expect([moved.netns, moved.podName, moved.network]).toEqual(['/var/run/netns/cni-b', 'web-0', 'trellis']);
    expect(openIpam({ dir, ranges: DUAL }).get(key('aaa'))?.netns).toBe('/var/run/netns/cni-b');
  });

  it('keeps which namespace ADD used (netnsId): a repeated ADD replaces it, a move without one drops it', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    const a = { netns: '/proc/708/ns/net', netnsId: 'boot/4:4026532001' };
    expect(ipam.allocate(key('aaa'), a).netnsId).toBe('boot/4:4026532001');
    expect(openIpam({ dir, ranges: DUAL }).get(key('aaa'))?.netnsId).toBe('boot/4:4026532001');
    // The same path, another namespace (the ADD opened it): the record follows.
    expect(ipam.allocate(key('aaa'), { ...a, netnsId: 'boot/4:4026532099' }).netnsId).toBe(
      'boot/4:4026532099',
    );
    // An ADD that could not read one leaves it where the path is the same...
    expect(ipam.allocate(key('aaa'), { netns: a.netns }).netnsId).toBe('boot/4:4026532099');
    // ...and drops it where the path moved: it named the old path's namespace.
    const moved = ipam.allocate(key('aaa'), { netns: '/proc/900/ns/net' });
    expect([moved.netns, moved.netnsId]).toEqual(['/proc/900/ns/net', undefined]);
    expect(openIpam({ dir, ranges: DUAL }).get(key('aaa'))?.netnsId).toBeUndefined();
  });

  it("records a network config's own MTU, which follows a repeated ADD's", () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    expect(ipam.allocate(key('plain')).mtu).toBeUndefined();
    expect(ipam.allocate(key('aaa'), { mtu: 1300 }).mtu).toBe(1300);
    expect(openIpam({ dir, ranges: DUAL }).get(key('aaa'))?.mtu).toBe(1300);
    // ADD sets the kept pair to the call's MTU (or the node's, without one): the record says which.
    expect(ipam.allocate(key('aaa'), { mtu: 1400 }).mtu).toBe(1400);
    expect(ipam.allocate(key('aaa')).mtu).toBeUndefined();
    const reopened = openIpam({ dir, ranges: DUAL });
    expect(reopened.get(key('aaa'))?.mtu).toBeUndefined();
    expect(reopened.loadReport.quarantined).toEqual([]);
  });

  it('returns copies: callers cannot change the stored lease', () => {
    const ipam = openIpam({ dir: tempDir(), ranges: DUAL });
    const lease = ipam.allocate(key('a'));
    lease.addresses[0]!.address = '1.2.3.4';
    lease.podName = 'x';
    expect(ipam.get(key('a'))?.addresses[0]?.address).toBe('10.244.1.2');
    expect(ipam.get(key('a'))?.podName).toBeUndefined();
  });

  it('rejects unsafe keys before they reach a file name', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    for (const bad of [
      key('../../etc/passwd'),
      key('a/b'),
      key('.hidden'),
      key('a@b'),
      key(''),
      key('x'.repeat(193)),
      key('ok', '../x'),
      key('ok', 'eth0/x'),
      key('ok', 'a234567890123456'),
      key('ok', ''),
    ]) {
      expect(catchCni(() => ipam.allocate(bad)).code).toBe(CniCode.INVALID_ENV);
      expect(ipam.release(bad)).toBe(false);
      expect(ipam.get(bad)).toBeUndefined();
    }
    expect(leaseFilesOnDisk(dir)).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
  });
});

describe('release', () => {
  it('frees the addresses durably; an unknown key returns false without throwing', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    ipam.allocate(key('a'));
    ipam.allocate(key('b'));
    expect(ipam.release(key('nope'))).toBe(false);
    expect(ipam.release(key('a'))).toBe(true);
    expect(ipam.release(key('a'))).toBe(false);
    expect(ipam.get(key('a'))).toBeUndefined();
    expect([
      ipam.isLeased('10.244.1.2'),
      ipam.isLeased('10.244.1.3'),
      ipam.isLeased('fd00:10:244:1::3'),
    ]).toEqual([false, true, true]);
    expect(leaseFilesOnDisk(dir)).toEqual(['b@eth0.json']);
    expect([...reservationsOnDisk(dir).keys()]).toEqual(['10.244.1.3', 'fd00:10:244:1::3']);
    expect(
      openIpam({ dir, ranges: DUAL })
        .list()
        .map((l) => l.containerId),
    ).toEqual(['b']);
  });

  it('does not give a crash-looping pod its just-released address back, even across a restart', () => {
    const dir = tempDir();
    let ipam = openIpam({ dir, ranges: ['10.244.1.0/29'] });
    const first = addrs(ipam.allocate(key('try1')));
    ipam.release(key('try1'));
    ipam = openIpam({ dir, ranges: ['10.244.1.0/29'] });
    const second = addrs(ipam.allocate(key('try2')));
    expect(first).toEqual(['10.244.1.2']);
    expect(second).toEqual(['10.244.1.3']);
    // A torn pointer file only resets round-robin.
    writeFileSync(join(dir, 'last.json'), '{"10.244.1.0/29": "10.24');
    expect(addrs(openIpam({ dir, ranges: ['10.244.1.0/29'] }).allocate(key('try3')))).toEqual(['10.244.1.2']);
  });
});

describe('round-robin across a pod CIDR change', () => {
  it('a widened range goes on after the last address of the old one, across a restart and in place', () => {
    const dir = tempDir();
    let ipam = openIpam({ dir, ranges: ['10.99.0.0/28'] });
    expect(addrs(ipam.allocate(key('a')))).toEqual(['10.99.0.2']);
    expect(addrs(ipam.allocate(key('b')))).toEqual(['10.99.0.3']);
    ipam.release(key('a'));
    // The agent restarted with the Node's new pod CIDR: .2, just freed, is not the next one.
    ipam = openIpam({ dir, ranges: ['10.99.0.0/27'] });
    expect(ipam.setRanges(['10.99.0.0/27'])).toEqual([]);
    expect(addrs(ipam.allocate(key('c')))).toEqual(['10.99.0.4']);
    // In place, both families, and the old ranges' pointers leave last.json.
    ipam.setRanges(['10.99.0.0/26', 'fd00::/120']);
    expect(addrs(ipam.allocate(key('d')))).toEqual(['10.99.0.5', 'fd00::2']);
    expect(JSON.parse(readFileSync(join(dir, 'last.json'), 'utf8'))).toEqual({
      '10.99.0.0/26': '10.99.0.5',
      'fd00::/120': 'fd00::2',
    });
  });

  it('a range that holds none of the last addresses starts at its first, as a new node’s does', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: ['10.99.0.0/28'] });
    ipam.allocate(key('a'));
    ipam.setRanges(['10.98.0.0/28']);
    expect(addrs(ipam.allocate(key('b')))).toEqual(['10.98.0.2']);
  });
});

describe('exhaustion and all-or-nothing', () => {
  it('fails with IPAM_EXHAUSTED naming the range and keeps nothing of the other family', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: ['10.244.1.0/24', 'fd00::/126'] });
    ipam.allocate(key('a'));
    ipam.allocate(key('b'));
    const before = reservationsOnDisk(dir);
    const err = catchCni(() => ipam.allocate(key('c')));
    expect(err.code).toBe(CniCode.IPAM_EXHAUSTED);
    expect(err.message).toBe('IPv6 range fd00::/126 is exhausted (2 of 2 addresses in use)');
    expect(reservationsOnDisk(dir)).toEqual(before);
    expect(leaseFilesOnDisk(dir)).toEqual(['a@eth0.json', 'b@eth0.json']);
    expect(ipam.get(key('c'))).toBeUndefined();
    expect(ipam.usage()).toEqual([
      { family: 4, range: '10.244.1.0/24', capacity: 253, used: 2 },
      { family: 6, range: 'fd00::/126', capacity: 2, used: 2 },
    ]);
    // The IPv4 address tried for c was not kept: after a release c gets the next one in turn.
    ipam.release(key('a'));
    expect(addrs(ipam.allocate(key('c')))).toEqual(['10.244.1.4', 'fd00::2']);
  });

  it('exhausts the /29 with the exact message and reports usage', () => {
    const ipam = openIpam({ dir: tempDir(), ranges: ['10.244.1.0/29'] });
    for (let i = 0; i < 5; i++) ipam.allocate(key(`p${i}`));
    const err = catchCni(() => ipam.allocate(key('p5')));
    expect(err.code).toBe(CniCode.IPAM_EXHAUSTED);
    expect(err.message).toBe('IPv4 range 10.244.1.0/29 is exhausted (5 of 5 addresses in use)');
    expect(ipam.usage()).toEqual([{ family: 4, range: '10.244.1.0/29', capacity: 5, used: 5 }]);
  });

  it('reports a /64 capacity as a bigint', () => {
    const ipam = openIpam({ dir: tempDir(), ranges: ['fd00:10:244:1::/64'] });
    ipam.allocate(key('a'));
    expect(ipam.usage()).toEqual([
      { family: 6, range: 'fd00:10:244:1::/64', capacity: (1n << 64n) - 2n, used: 1 },
    ]);
  });
});

describe('ranges', () => {
  it('rejects bad range lists with INVALID_CONFIG before touching anything', () => {
    const dir = join(tempDir(), 'state');
    for (const ranges of [['10.244.1.0/24', '10.244.2.0/24'], ['10.244.1.5/24'], ['10.244.1.0/31'], ['x']]) {
      expect(catchCni(() => openIpam({ dir, ranges })).code).toBe(CniCode.INVALID_CONFIG);
    }
    expect(existsSync(dir)).toBe(false);
    const ipam = openIpam({ dir, ranges: [] });
    expect(catchCni(() => ipam.allocate(key('a'))).code).toBe(CniCode.INVALID_CONFIG);
    expect(catchCni(() => ipam.setRanges(['fd00::/64', 'fd01::/64'])).message).toContain('two IPv6 ranges');
    expect(ipam.ranges()).toEqual([]);
  });

  it('setRanges releases and returns the leases outside the new ranges', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: ['10.244.1.0/29', 'fd00:1::/120'] });
    const a = ipam.allocate(key('a'));
    const b = ipam.allocate(key('b'));
    // IPv4 grows (both stay inside), IPv6 moves away: every lease has an address outside.
    const released = ipam.setRanges(['10.244.0.0/16', 'fd00:2::/120']);
    expect(released).toEqual([a, b]);
    expect(ipam.list()).toEqual([]);
    expect(leaseFilesOnDisk(dir)).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
    expect(ipam.ranges()).toEqual(['10.244.0.0/16', 'fd00:2::/120']);

    const c = ipam.allocate(key('c'));
    // IPv4 goes on after the old range's last address (.3, inside the new range), IPv6 starts afresh.
    expect(addrs(c)).toEqual(['10.244.1.4', 'fd00:2::2']);
    // Shrinking to a range that still holds c keeps it; dropping IPv6 keeps it too (its IPv6
    // address is no longer inside any range, so it is released).
    expect(ipam.setRanges(['10.244.1.0/24', 'fd00:2::/120'])).toEqual([]);
    expect(ipam.setRanges(['10.244.1.0/24'])).toEqual([c]);
    expect(ipam.usage()).toEqual([{ family: 4, range: '10.244.1.0/24', capacity: 253, used: 0 }]);
  });

  it('setRanges releases a lease that the new range reserves: its network (the VTEP) or gateway address', () => {
    const ipam = openIpam({ dir: tempDir(), ranges: ['10.244.0.0/28'] });
    // .2 to .14: in the /28, .8 and .9 are ordinary addresses; in 10.244.0.8/29 they are its network
    // and gateway address, and .15 its broadcast.
    const leases = Array.from({ length: 13 }, (_, i) => ipam.allocate(key(`p${i}`)));
    expect(addrs(leases[6]!)).toEqual(['10.244.0.8']);
    const released = ipam.setRanges(['10.244.0.8/29']);
    expect(released.map((l) => addrs(l)[0])).toEqual(leases.slice(0, 8).map((l) => addrs(l)[0]));
    expect(ipam.list().map((l) => addrs(l)[0])).toEqual([
      '10.244.0.10',
      '10.244.0.11',
      '10.244.0.12',
      '10.244.0.13',
      '10.244.0.14',
    ]);
    expect(ipam.usage()).toEqual([{ family: 4, range: '10.244.0.8/29', capacity: 5, used: 5 }]);
  });

  it('setRanges releases every lease it can when one cannot go, says which went, and retries the rest', () => {
    const dir = tempDir();
    const { fs, refuse } = unlinkRefusingFs();
    const ipam = openIpamWith({ dir, ranges: ['10.244.1.0/29'] }, fs);
    const [a, b, c] = ['a', 'b', 'c'].map((k) => ipam.allocate(key(k)));
    refuse('b@eth0.json');
    const err = catchCni(() => ipam.setRanges(['10.244.2.0/29']));
    expect(err).toBeInstanceOf(RangeChangeError);
    expect(err.code).toBe(CniCode.IPAM_STORE_FAILED);
    expect((err as RangeChangeError).released).toEqual([a, c]);
    expect(ipam.list()).toEqual([b]);
    expect(leaseFilesOnDisk(dir)).toEqual(['b@eth0.json']);
    // The store works again: the same ranges release what is left.
    refuse('');
    expect(ipam.setRanges(['10.244.2.0/29'])).toEqual([b]);
    expect(ipam.list()).toEqual([]);
    expect(leaseFilesOnDisk(dir)).toEqual([]);
    expect(reservationsOnDisk(dir).size).toBe(0);
  });

  it("an address whose unlink failed is freed by the key's next release (the runtime's retried DEL), not kept until a restart", () => {
    const dir = tempDir();
    const { fs, refuse } = unlinkRefusingFs();
    // Room for one pod.
    const ipam = openIpamWith({ dir, ranges: ['10.244.1.0/30'] }, fs);
    const address = addrs(ipam.allocate(key('a')))[0]!;
    expect(() => ipam.allocate(key('full'))).toThrow();
    refuse(`addrs/${address}`);
    expect(() => ipam.release(key('a'))).toThrow(/EIO/);
    expect(ipam.get(key('a'))).toBeUndefined();
    expect(reservationsOnDisk(dir).has(address)).toBe(true);
    refuse('');
    expect(ipam.release(key('a'))).toBe(true);
    expect(reservationsOnDisk(dir).has(address)).toBe(false);
    expect(addrs(ipam.allocate(key('b')))).toEqual([address]);
    // Freed once: a further DEL of 'a' finds nothing.
    expect(ipam.release(key('a'))).toBe(false);
  });

  it('keeps leases outside the ranges at open, for the agent to prune with setRanges', () => {
    const dir = tempDir();
    const old = openIpam({ dir, ranges: ['10.244.1.0/24'] });
    const a = old.allocate(key('a'));
    const reopened = openIpam({ dir, ranges: ['10.244.2.0/24'] });
    expect(reopened.list()).toEqual([a]);
    expect(reopened.setRanges(reopened.ranges())).toEqual([a]);
    expect(openIpam({ dir, ranges: ['10.244.2.0/24'] }).list()).toEqual([]);
  });
});

describe('on-disk layout and modes', () => {
  it('creates directories 0700 and files 0600, tightening a pre-existing directory', () => {
    const dir = join(tempDir(), 'state');
    mkdirSync(dir, { mode: 0o755 });
    const ipam = openIpam({ dir, ranges: DUAL });
    ipam.allocate(key('a'), { podName: 'p' });
    const mode = (p: string) => statSync(p).mode & 0o777;
    expect(mode(dir)).toBe(0o700);
    for (const sub of ['leases', 'addrs', 'quarantine', 'spare']) expect(mode(join(dir, sub))).toBe(0o700);
    expect(mode(join(dir, 'leases', 'a@eth0.json'))).toBe(0o600);
    expect(mode(join(dir, 'last.json'))).toBe(0o600);
    const record = JSON.parse(readFileSync(join(dir, 'leases', 'a@eth0.json'), 'utf8'));
    expect(record).toMatchObject({ version: 1, containerId: 'a', ifname: 'eth0', podName: 'p' });
    expect(readdirSync(dir).sort()).toEqual(['addrs', 'last.json', 'leases', 'quarantine', 'spare']);
  });
});

describe('corrupt and crash-left records', () => {
  for (const [what, damage] of [
    ['truncated to zero', (p: string) => truncateSync(p, 0)],
    ['torn in the middle', (p: string) => truncateSync(p, 40)],
    ['garbage', (p: string) => writeFileSync(p, '\u0000\u0001garbage')],
    ['for another key', (p: string) => writeFileSync(p, readFileSync(p, 'utf8').replace('"b"', '"z"'))],
    [
      'with a bad MTU',
      (p: string) => writeFileSync(p, readFileSync(p, 'utf8').replace('{', '{"mtu":"1500",')),
    ],
    [
      // Followed, the read of a FIFO would never end: the agent would never start.
      'replaced by a symbolic link to a FIFO',
      (p: string) => {
        const fifo = join(p, '..', '..', 'b.fifo'); // beside the store's directories, not in leases/
        execFileSync('mkfifo', [fifo]);
        unlinkSync(p);
        symlinkSync(fifo, p);
      },
    ],
    [
      'replaced by a FIFO',
      (p: string) => {
        unlinkSync(p);
        execFileSync('mkfifo', [p]);
      },
    ],
  ] as const) {
    it(`quarantines a lease file ${what} and never hands its addresses out again`, () => {
      const dir = tempDir();
      const ranges = ['10.244.1.0/29', 'fd00::/125'];
      const ipam = openIpam({ dir, ranges });
      ipam.allocate(key('a'));
      const b = ipam.allocate(key('b'));
      damage(join(dir, 'leases', 'b@eth0.json'));

      const reopened = openIpam({ dir, ranges });
      expect(reopened.loadReport.quarantined).toHaveLength(1);
      expect(reopened.loadReport.quarantined[0]?.file).toBe(join(dir, 'leases', 'b@eth0.json'));
      expect(reopened.loadReport.quarantined[0]?.reason).not.toBe('');
      expect(reopened.get(key('b'))).toBeUndefined();
      // Its record, as the lease rebuild asks for it: read when it is a regular file, never followed
      // or waited on otherwise.
      expect(reopened.quarantinedRecords(key('b')).length).toBeLessThanOrEqual(1);
      expect(leaseFilesOnDisk(dir)).toEqual(['a@eth0.json']);
      const q = readdirSync(join(dir, 'quarantine'));
      // The file, why, and the addresses kept reserved for it.
      expect(q.filter((n) => n.startsWith('b@eth0.json.')).length).toBe(3);
      const heldFile = q.find((n) => n.endsWith('.held'))!;
      expect(
        readFileSync(join(dir, 'quarantine', heldFile), 'utf8')
          .trim()
          .split('\n')
          .sort(),
      ).toEqual(addrs(b).sort());

      // Fill both ranges: b's addresses never come back.
      const handed: string[] = [];
      for (let i = 0; ; i++) {
        try {
          handed.push(...addrs(reopened.allocate(key(`n${i}`))));
        } catch (err) {
          expect((err as { code: number }).code).toBe(CniCode.IPAM_EXHAUSTED);
          break;
        }
      }
      expect(handed.length).toBeGreaterThan(0);
      for (const taken of addrs(b)) expect(handed).not.toContain(taken);
      // Still held after another restart (the quarantine file keeps its owner known).
      const third = openIpam({ dir, ranges });
      expect(third.loadReport.quarantined).toEqual([]);
      // IPv4 /29: 5 of 5; IPv6 /125: 5 of 6 (the IPv4 range ran out first).
      expect(third.usage().map((u) => u.used)).toEqual([5, 5]);
      // DEL for b is what frees them.
      expect(third.release(key('b'))).toBe(true);
      expect(third.release(key('b'))).toBe(false);
      expect(third.usage().map((u) => u.used)).toEqual([4, 4]);
      expect(addrs(third.allocate(key('later')))[0]).toBe(addrs(b)[0]);
    });
  }

  it('quarantines a lease file it cannot read (EIO), its addresses held, instead of failing to load', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    ipam.allocate(key('a'));
    const b = ipam.allocate(key('b'));
    const failing: StoreFs = {
      ...realFs,
      readFileSync: (path) => {
        if (path.endsWith('b@eth0.json'))
          throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
        return realFs.readFileSync(path);
      },
    };
    const reopened = openIpamWith({ dir, ranges: DUAL }, failing);
    expect(reopened.loadReport.quarantined.map((q) => q.reason)).toEqual([
      'unreadable: EIO: i/o error, read',
    ]);
    expect(reopened.list().map((l) => l.containerId)).toEqual(['a']);
    expect(reopened.heldAddresses(key('b')).map((a) => a.address)).toEqual(addrs(b));
  });

  it("an owner's .held list it cannot read (a directory in its place) keeps every address the owner reserves", () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    const b = ipam.allocate(key('b'));
    truncateSync(join(dir, 'leases', 'b@eth0.json'), 0);
    expect(openIpam({ dir, ranges: DUAL }).loadReport.quarantined).toHaveLength(1);
    const heldFile = readdirSync(join(dir, 'quarantine')).find((n) => n.endsWith('.held'))!;
    unlinkSync(join(dir, 'quarantine', heldFile));
    mkdirSync(join(dir, 'quarantine', heldFile));
    const reopened = openIpam({ dir, ranges: DUAL });
    expect(reopened.heldAddresses(key('b')).map((a) => a.address)).toEqual(addrs(b));
  });

  it('cleans what a crash leaves: tmp files, reservations without lease; restores missing reservations', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: DUAL });
    ipam.allocate(key('a'));
    ipam.allocate(key('b'));
    // Crash mid-allocate of c: reservations and a torn tmp file, no lease file.
    symlinkSync('c@eth0', join(dir, 'addrs', '10.244.1.4'));
    symlinkSync('c@eth0', join(dir, 'addrs', 'fd00:10:244:1::4'));
    writeFileSync(join(dir, 'leases', '.c@eth0.json.tmp'), '{"version":1,"contai');
    // A lease whose reservation did not make it to disk.
    unlinkSync(join(dir, 'addrs', 'fd00:10:244:1::2'));

    const reopened = openIpam({ dir, ranges: DUAL });
    expect(reopened.loadReport.quarantined).toEqual([]);
    expect(reopened.list().map((l) => l.containerId)).toEqual(['a', 'b']);
    expect(leaseFilesOnDisk(dir)).toEqual(['a@eth0.json', 'b@eth0.json']);
    expect(reservationsOnDisk(dir)).toEqual(
      new Map([
        ['10.244.1.2', 'a@eth0'],
        ['10.244.1.3', 'b@eth0'],
        ['fd00:10:244:1::2', 'a@eth0'],
        ['fd00:10:244:1::3', 'b@eth0'],
      ]),
    );
  });

  it('quarantines a stale lease whose address is reserved by someone else', () => {
    const dir = tempDir();
    // A /30 has one address, so b gets the address a had.
    const ipam = openIpam({ dir, ranges: ['10.244.1.0/30'] });
    ipam.allocate(key('a'));
    const stale = readFileSync(join(dir, 'leases', 'a@eth0.json'));
    ipam.release(key('a'));
    const b = ipam.allocate(key('b'));
    expect(addrs(b)).toEqual(['10.244.1.2']);
    // a's record comes back (e.g. its unlink was lost): the reservation says the address is b's.
    writeFileSync(join(dir, 'leases', 'a@eth0.json'), stale);
    const again = openIpam({ dir, ranges: ['10.244.1.0/30'] });
    expect(again.loadReport.quarantined).toEqual([
      { file: join(dir, 'leases', 'a@eth0.json'), reason: 'address 10.244.1.2 is reserved by b@eth0' },
    ]);
    expect(again.list()).toEqual([b]);
    expect(reservationsOnDisk(dir)).toEqual(new Map([['10.244.1.2', 'b@eth0']]));
  });

  it('skips an address reserved on disk behind its back (EEXIST) instead of sharing it', () => {
    const dir = tempDir();
    const ipam = openIpam({ dir, ranges: ['10.244.1.0/29'] });
    ipam.allocate(key('a'));
    symlinkSync('intruder@eth0', join(dir, 'addrs', '10.244.1.3'));
    expect(addrs(ipam.allocate(key('b')))).toEqual(['10.244.1.4']);
    expect(reservationsOnDisk(dir).get('10.244.1.3')).toBe('intruder@eth0');
  });
});
