import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { openNetlink } from '../../../pkg/netlink/index.ts';
import {
  createNetnsPort,
  isNetns,
  LockHeldError,
  lockFile,
  NetnsNotFoundError,
  readSysctlSync,
  SysctlError,
  withNetns,
  withNetnsFd,
} from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, nsExec } from '../../support/netns.ts';

const threadNs = () => readlinkSync('/proc/thread-self/ns/net');
const inodeOf = (path: string) => `net:[${statSync(path).ino}]`;

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags: string[];
  address: string;
}

describe.skipIf(netnsSkipReason !== undefined)('pkg/netns (root, real namespaces)', () => {
  const pool = new NetnsPool();
  const port = createNetnsPort();
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'trl-netns-'));
  });
  afterEach(() => pool.cleanup());
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a veth pair from inside A with the peer directly in B, and comes back home', async () => {
    const a = pool.add('a');
    const b = pool.add('b');
    const before = threadNs();
    const inside = withNetns(a.path, threadNs);
    expect(inside).toBe(inodeOf(a.path));
    expect(threadNs()).toBe(before);

    const h = port.openNetlinkIn(a.path);
    expect(threadNs()).toBe(before);
    const bFd = port.openNetnsFd(b.path);
    try {
      await h.createVeth({ name: 'va0', mtu: 1400, peerName: 'vb0', peerNetnsFd: bFd, peerMtu: 1380 });
    } finally {
      port.closeFd(bFd);
    }
    const va = await h.getLink('va0');
    expect(va).toBeDefined();
    await h.setLinkUp(va!.index);

    const [ipA] = ipJson<IpLink[]>(a.name, 'link', 'show', 'va0');
    const [ipB] = ipJson<IpLink[]>(b.name, 'link', 'show', 'vb0');
    expect(ipA).toMatchObject({ ifname: 'va0', mtu: 1400, ifindex: va!.index });
    expect(ipA!.flags).toContain('UP');
    expect(ipB).toMatchObject({ ifname: 'vb0', mtu: 1380 });
    expect(ipB!.flags).not.toContain('UP');
    // The peer never appeared in A (nor on the host): it was created in B.
    expect(ipJson<IpLink[]>(a.name, 'link').map((l) => l.ifname)).not.toContain('vb0');

    const listedA = (await h.listLinks()).find((l) => l.name === 'va0')!;
    expect(listedA).toMatchObject({
      kind: 'veth',
      mac: ipA!.address,
      mtu: 1400,
      up: true,
      peerIndex: ipB!.ifindex,
    });

    const hb = port.openNetlinkIn(b.path);
    const listedB = (await hb.listLinks()).find((l) => l.name === 'vb0')!;
    expect(listedB).toMatchObject({
      kind: 'veth',
      mac: ipB!.address,
      mtu: 1380,
      up: false,
      peerIndex: va!.index,
    });
    h.close();
    hb.close();
    expect(threadNs()).toBe(before);
  });

  it('nests: A inside the home namespace, B inside A, back to A, back home', () => {
    const a = pool.add('na');
    const b = pool.add('nb');
    const home = threadNs();
    const seen = withNetns(a.path, () => {
      const inA = threadNs();
      const inB = withNetns(b.path, threadNs);
      return [inA, inB, threadNs()];
    });
    expect(seen).toEqual([inodeOf(a.path), inodeOf(b.path), inodeOf(a.path)]);
    expect(threadNs()).toBe(home);
  });

  it('switches back when the callback throws, and refuses async callbacks', async () => {
    const a = pool.add('t');
    const home = threadNs();
    expect(() =>
      withNetns(a.path, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(threadNs()).toBe(home);
    expect(() => withNetns(a.path, async () => 1)).toThrow(TypeError);
    expect(threadNs()).toBe(home);
  });

  it('aborts the process when it cannot switch back (never runs on in the wrong namespace)', () => {
    const a = pool.add('abort');
    const netnsModule = new URL('../../../pkg/netns/index.ts', import.meta.url).pathname;
    // The child closes the saved home-namespace fd while inside, so the switch back must fail.
    const script = `
      import { closeSync, readdirSync, readlinkSync } from 'node:fs';
      import { withNetns } from ${JSON.stringify(netnsModule)};
      const home = readlinkSync('/proc/thread-self/ns/net');
      withNetns(${JSON.stringify(a.path)}, () => {
        for (const fd of readdirSync('/proc/self/fd')) {
          try { if (readlinkSync('/proc/self/fd/' + fd) === home) closeSync(Number(fd)); } catch {}
        }
      });
      console.log('still running');
    `;
    const r = spawnSync(
      'sh',
      ['-c', 'ulimit -c 0; exec "$0" "$@"', process.execPath, '--input-type=module', '-e', script],
      {
        encoding: 'utf8',
      },
    );
    expect(r.signal).toBe('SIGABRT');
    expect(r.stderr).toContain('cannot switch back to the original network namespace');
    expect(r.stdout).not.toContain('still running');
  });

  it('tells network namespaces from files, directories, missing paths and other namespace types', () => {
    const a = pool.add('is');
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    expect(isNetns(a.path)).toBe(true);
    expect(isNetns('/proc/self/ns/net')).toBe(true);
    expect(isNetns(file)).toBe(false);
    expect(isNetns(dir)).toBe(false);
    expect(isNetns(join(dir, 'missing'))).toBe(false);
    expect(isNetns('/proc/self/ns/uts')).toBe(false);
    expect(port.isNetns(a.path)).toBe(true);
  });

  it('throws NetnsNotFoundError (CNI code 102) for a missing path or a non-netns file', () => {
    const file = join(dir, 'not-a-netns');
    writeFileSync(file, '');
    for (const path of [join(dir, 'missing'), file, dir, '/proc/self/ns/uts']) {
      expect(() => withNetns(path, () => 1)).toThrow(NetnsNotFoundError);
      expect(() => port.openNetlinkIn(path)).toThrow(NetnsNotFoundError);
      expect(() => port.openNetnsFd(path)).toThrow(NetnsNotFoundError);
    }
    try {
      port.openNetnsFd(join(dir, 'missing'));
    } catch (e) {
      expect((e as NetnsNotFoundError).code).toBe(CniCode.NETNS_NOT_FOUND);
    }
  });

  it('writes a sysctl inside a namespace only, and refuses keys that could escape /proc/sys', () => {
    const a = pool.add('sy');
    const key = 'net/ipv4/conf/all/forwarding';
    const root = readSysctlSync(key);
    const want = root === '1' ? '0' : '1';
    port.writeSysctlIn(a.path, key, want);
    expect(nsExec(a.name, 'sysctl', ['-n', 'net.ipv4.conf.all.forwarding']).trim()).toBe(want);
    expect(withNetns(a.path, () => port.readSysctl(key))).toBe(want);
    // The root namespace did not change (read only, never written here).
    expect(readFileSync(`/proc/sys/${key}`, 'utf8').trim()).toBe(root);
    expect(port.readSysctl(key)).toBe(root);

    for (const bad of ['../../etc/passwd', 'net/../../x', '/etc/passwd', 'net/ipv4/conf/a b/x', '']) {
      expect(() => port.writeSysctlIn(a.path, bad, '1')).toThrow(SysctlError);
      expect(() => port.readSysctl(bad)).toThrow(SysctlError);
    }
    expect(() => port.writeSysctlIn(a.path, 'net/ipv4/conf/nosuchdev/forwarding', '1')).toThrow(SysctlError);
  });

  it('serves a socket and a sysctl through one namespace fd, which stays open and usable', async () => {
    const a = pool.add('fd');
    const before = threadNs();
    const fd = port.openNetnsFd(a.path);
    try {
      const h = port.openPodNetlink(fd, a.path);
      expect(threadNs()).toBe(before);
      try {
        // The socket answers from the namespace it was opened in, not the test's.
        expect(await h.getLink('lo')).toMatchObject({ name: 'lo', index: 1 });
        expect(await h.getLink('eth0')).toBeUndefined();
      } finally {
        h.close();
      }
      const key = 'net/ipv4/conf/all/forwarding';
      const want = readSysctlSync(key) === '1' ? '0' : '1';
      port.writeSysctlsInFd(fd, a.path, [[key, want]]);
      expect(threadNs()).toBe(before);
      expect(nsExec(a.name, 'sysctl', ['-n', 'net.ipv4.conf.all.forwarding']).trim()).toBe(want);
      // The caller's fd: still open, still the namespace, after both uses.
      expect(withNetnsFd(fd, a.path, threadNs)).toBe(inodeOf(a.path));
      expect(() => port.writeSysctlsInFd(fd, a.path, [['../x', '1']])).toThrow(SysctlError);
      expect(threadNs()).toBe(before);
    } finally {
      port.closeFd(fd);
    }
  });

  it("lists a pod's routes through its ADD socket: filtered, both families, a dump of many datagrams read to its end", async () => {
    const a = pool.add('routes');
    ip(a.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    for (const dev of ['eth0', 'eth1']) ip(a.name, 'link', 'set', dev, 'up');
    ip(a.name, '-4', 'route', 'add', 'default', 'dev', 'eth0', 'metric', '100');
    ip(a.name, '-6', 'route', 'add', 'default', 'dev', 'eth0', 'metric', '2048');
    ip(a.name, '-4', 'route', 'add', '10.9.0.0/16', 'dev', 'eth0', 'table', '200');
    ip(a.name, '-4', 'route', 'add', '10.8.0.0/16', 'nexthop', 'dev', 'eth0', 'nexthop', 'dev', 'eth1');
    // Far more than one datagram of the dump (a few KiB each): the socket reads on to NLMSG_DONE.
    const many = Array.from(
      { length: 600 },
      (_, i) => `route add 10.${100 + (i >> 8)}.${i & 255}.0/24 dev eth0`,
    );
    nsExec(a.name, 'ip', ['-batch', '-'], { input: `${many.join('\n')}\n` });
    const eth0 = ipJson<IpLink[]>(a.name, 'link', 'show', 'eth0')[0]!.ifindex;
    const fd = port.openNetnsFd(a.path);
    try {
      const h = port.openPodNetlink(fd, a.path);
      try {
        const main = await h.listRoutes();
        expect(main.filter((r) => r.dst.startsWith('10.1'))).toHaveLength(600);
        expect(main).toContainEqual(
          expect.objectContaining({ family: 4, dst: '0.0.0.0/0', ifindex: eth0, metric: 100 }),
        );
        expect(main).toContainEqual(
          expect.objectContaining({ family: 6, dst: '::/0', ifindex: eth0, metric: 2048 }),
        );
        // Main table only, and the multipath route left out unless asked for.
        expect(main.map((r) => r.dst)).not.toContain('10.9.0.0/16');
        expect(main.map((r) => r.dst)).not.toContain('10.8.0.0/16');
        expect(await h.listRoutes({ unreadable: true, family: 4 })).toContainEqual(
          expect.objectContaining({ dst: '10.8.0.0/16', unreadable: true }),
        );
        const v6 = await h.listRoutes({ family: 6 });
        expect(v6.every((r) => r.family === 6)).toBe(true);
        expect(v6.map((r) => r.dst)).toContain('::/0');
        expect((await h.listRoutes({ table: 200 })).map((r) => r.dst)).toEqual(['10.9.0.0/16']);
        // The socket still answers a request after the dump: nothing of it was left unread.
        expect(await h.getLink('eth0')).toMatchObject({ index: eth0 });
      } finally {
        h.close();
      }
    } finally {
      port.closeFd(fd);
    }
  });

  it('keeps a netlink socket opened inside bound to that namespace', async () => {
    const a = pool.add('bind');
    const h = withNetns(a.path, openNetlink);
    try {
      const names = (await h.listLinks()).map((l) => l.name);
      expect(names).toEqual(['lo']);
    } finally {
      h.close();
    }
  });
});

describe.skipIf(netnsSkipReason !== undefined)('lockFile (flock)', () => {
  it('holds an exclusive lock until released, against this process and others', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trl-lock-'));
    const path = join(dir, 'agent.lock');
    const otherProcess = () => spawnSync('flock', ['-n', path, 'true']).status;
    try {
      const lock = lockFile(path);
      expect(() => lockFile(path)).toThrow(LockHeldError);
      expect(otherProcess()).toBe(1);
      lock.release();
      lock.release();
      expect(otherProcess()).toBe(0);
      const again = lockFile(path);
      again.release();
      expect(statSync(path).mode & 0o777).toBe(0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is released by the kernel when the holding process dies', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trl-lock-'));
    const path = join(dir, 'agent.lock');
    // Another process holds the lock (as a SIGKILLed agent did): refused while it lives, free once
    // the kernel has closed its file on death, with no unlock ever run.
    // One process that holds it (flock(1) would leave its command holding the inherited fd).
    const holder = spawn('bash', ['-c', 'exec 9>>"$0"; flock 9; exec sleep 60', path], { stdio: 'ignore' });
    try {
      for (const deadline = Date.now() + 5000; ; ) {
        try {
          lockFile(path).release();
        } catch (err) {
          expect(err).toBeInstanceOf(LockHeldError);
          break;
        }
        if (Date.now() > deadline) throw new Error('flock never took the lock');
        await new Promise((r) => setTimeout(r, 20));
      }
      const exited = new Promise((r) => holder.once('exit', r));
      holder.kill('SIGKILL');
      await exited;
      const lock = lockFile(path);
      expect(() => lockFile(path)).toThrow(LockHeldError);
      lock.release();
    } finally {
      holder.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
