import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { uninstallTrellis } from '../../../pkg/agent/host-setup.ts';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * `trellis-agent uninstall`'s steps on a real kernel: a pod deleted while it runs (the kubelet tearing
 * pods down meanwhile) takes its veth with it, which is done, not a failure; a step that does fail
 * does not stop the others, and is reported; and it removes its own files wherever they are: the
 * admin socket, a spool directory outside the state directory, an install-cni temp file.
 */
const title = 'uninstall runs every step and removes its own files (real kernel, test namespace)';
describe.skipIf(netnsSkipReason !== undefined)(title, () => {
  const pool = new NetnsPool();
  const dir = mkdtempSync(join(tmpdir(), 'trl-uninst-'));
  const handles: NetlinkHandle[] = [];
  afterAll(() => {
    for (const h of handles) h.close();
    pool.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a veth gone since the listing is done; a failing step is listed and the rest still run', async () => {
    const host = pool.add('uhost');
    const pods = pool.add('upods');
    // Three pods' veths and a pair prepared for a pod whose ADD had not come (prepared-pairs.ts).
    const names = ['trl0123456789ab', 'trl0123456789ac', 'trl0123456789ad', 'trlp0123456789a'];
    for (const [i, name] of names.entries()) {
      ip(host.name, 'link', 'add', name, 'type', 'veth', 'peer', 'name', `eth${i}`, 'netns', pods.name);
    }
    ip(host.name, 'link', 'set', names[0]!, 'up');
    ip(host.name, 'route', 'add', '10.244.1.5/32', 'dev', names[0]!, 'proto', '126');
    const real = createNetnsPort().openNetlinkIn(host.path);
    handles.push(real);
    // The first deletion finds its link gone: the pods' namespace went between listing and deleting.
    let raced = false;
    const racing: NetlinkHandle = Object.create(real, {
      deleteLink: {
        value: async (index: number) => {
          if (!raced) {
            raced = true;
            ip(host.name, 'link', 'del', names[0]!); // its peer in `pods` goes with it
          }
          return real.deleteLink(index);
        },
      },
    });
    const cniConfDir = join(dir, 'net.d');
    const cniBinDir = join(dir, 'bin');
    const stateDir = join(dir, 'state');
    const spoolDir = join(dir, 'spool-elsewhere');
    const runDir = join(dir, 'run');
    for (const d of [cniConfDir, cniBinDir, stateDir, spoolDir, runDir]) mkdirSync(d, { recursive: true });
    writeFileSync(join(cniBinDir, 'trellis'), 'binary');
    writeFileSync(join(cniBinDir, '.trellis.4242.0a1b2c3d.tmp'), 'half a binary'); // install-cni cut short
    writeFileSync(join(cniBinDir, 'portmap'), 'the node’s own');
    writeFileSync(join(cniBinDir, '.bridge.4242.0a1b2c3d.tmp'), 'not ours');
    writeFileSync(join(spoolDir, 'c1@eth0.json'), '{}');
    writeFileSync(join(runDir, 'admin.sock'), '');
    writeFileSync(join(runDir, 'cni.sock'), '');

    const report = await uninstallTrellis({
      host: racing,
      cniConfDir,
      cniBinDir,
      stateDir,
      socket: join(runDir, 'cni.sock'),
      adminSocket: join(runDir, 'admin.sock'),
      spoolDir,
      isTrellisDevice: () => false,
      deleteNftTable: async () => {
        throw new Error('nft: Could not process rule: Device or resource busy');
      },
      deleteForwardAccepts: async () => 0,
    });
    expect(raced).toBe(true);
    expect(report.links.sort()).toEqual(names);
    expect(report.routes).toBe(1);
    expect(report.failed).toEqual([
      'deleting the nftables table: nft: Could not process rule: Device or resource busy',
    ]);
    expect(ipJson<{ ifname: string }[]>(host.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
    expect(existsSync(join(cniBinDir, 'trellis'))).toBe(false);
    expect(existsSync(join(cniBinDir, '.trellis.4242.0a1b2c3d.tmp'))).toBe(false);
    expect(existsSync(join(cniBinDir, 'portmap'))).toBe(true);
    expect(existsSync(join(cniBinDir, '.bridge.4242.0a1b2c3d.tmp'))).toBe(true);
    for (const gone of [stateDir, spoolDir, join(runDir, 'admin.sock'), join(runDir, 'cni.sock')]) {
      expect(existsSync(gone), gone).toBe(false);
    }
  });

  it('routes a dump left out (an IPv6 dump the table changed under) are found by the next dump and removed too', async () => {
    const host = pool.add('uroutes');
    ip(host.name, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    ip(host.name, 'link', 'set', 'v0', 'up');
    ip(host.name, '-6', 'addr', 'add', 'fd00:88::1/64', 'dev', 'v0', 'nodad');
    for (const n of [1, 2, 3]) {
      ip(host.name, '-6', 'route', 'add', `fd00:244:${n}::/64`, 'via', `fd00:88::${n + 10}`, 'proto', '126');
    }
    const real = createNetnsPort().openNetlinkIn(host.path);
    handles.push(real);
    let omitted = 0;
    const omitting: NetlinkHandle = Object.create(real, {
      listRoutes: {
        value: async (filter: Parameters<NetlinkHandle['listRoutes']>[0]) =>
          (await real.listRoutes(filter)).filter((r) => {
            if (omitted > 0 || r.dst !== 'fd00:244:2::/64') return true;
            omitted++;
            return false;
          }),
      },
    });
    const empty = mkdtempSync(join(dir, 'routes-'));
    const report = await uninstallTrellis({
      host: omitting,
      cniConfDir: join(empty, 'net.d'),
      cniBinDir: join(empty, 'bin'),
      stateDir: join(empty, 'state'),
      socket: join(empty, 'cni.sock'),
      isTrellisDevice: () => false,
      deleteNftTable: async () => false,
    });
    expect(omitted).toBe(1);
    expect(report.failed).toEqual([]);
    expect(report.routes).toBe(3);
    expect(ipJson<unknown[]>(host.name, '-6', 'route', 'show', 'proto', '126')).toEqual([]);
  });

  it('a state directory that cannot be removed does not leave the sockets and the ready mark behind', async (ctx) => {
    const host = pool.add('uhost2');
    const real = createNetnsPort().openNetlinkIn(host.path);
    handles.push(real);
    const base = join(dir, 'stuck');
    const stateDir = join(base, 'state');
    const runDir = join(base, 'run');
    for (const d of [stateDir, runDir]) mkdirSync(d, { recursive: true });
    // A file rm cannot unlink (immutable: EPERM even for root), as a mount point there gives EBUSY.
    const pinned = join(stateDir, 'pinned');
    writeFileSync(pinned, '');
    if (spawnSync('chattr', ['+i', pinned]).status !== 0) ctx.skip();
    try {
      const socket = join(runDir, 'cni.sock');
      for (const f of [socket, join(runDir, 'admin.sock'), `${socket}.ready`]) writeFileSync(f, '');
      const report = await uninstallTrellis({
        host: real,
        cniConfDir: join(base, 'net.d'),
        cniBinDir: join(base, 'bin'),
        stateDir,
        socket,
        adminSocket: join(runDir, 'admin.sock'),
        isTrellisDevice: () => false,
        deleteNftTable: async () => false,
      });
      expect(report.failed).toEqual([expect.stringMatching(/^removing the state directory: .*EPERM/)]);
      expect(readdirSync(runDir)).toEqual([]);
    } finally {
      spawnSync('chattr', ['-i', pinned]);
    }
  });

  it('keeps the binary when the config list naming it cannot be removed', async () => {
    const host = pool.add('uhost3');
    const real = createNetnsPort().openNetlinkIn(host.path);
    handles.push(real);
    const base = join(dir, 'list-stays');
    const cniConfDir = join(base, 'net.d');
    const cniBinDir = join(base, 'bin');
    // A directory under the list's name: unlink(2) refuses it (EISDIR), for root too.
    mkdirSync(join(cniConfDir, '10-trellis.conflist'), { recursive: true });
    mkdirSync(cniBinDir, { recursive: true });
    writeFileSync(join(cniBinDir, 'trellis'), 'binary');
    const report = await uninstallTrellis({
      host: real,
      cniConfDir,
      cniBinDir,
      stateDir: join(base, 'state'),
      socket: join(base, 'run', 'cni.sock'),
      adminSocket: join(base, 'run', 'admin.sock'),
      isTrellisDevice: () => false,
      deleteNftTable: async () => false,
    });
    expect(report.failed).toEqual([
      expect.stringMatching(/^removing the config list: .*10-trellis\.conflist/),
      'removing the binary: kept: the config list naming it could not be removed',
    ]);
    expect(report.binary).toBe(false);
    expect(existsSync(join(cniBinDir, 'trellis'))).toBe(true);
  });
});
