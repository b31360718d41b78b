import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';

/**
 * The VXLAN backend's two device operations over netlink, against devices iproute2 made and reads:
 * every parameter trellis checks reads as `ip -d -j link show` reports it, and a MAC set shows there.
 */

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

interface IpVxlan {
  address: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: { id?: number; port?: number; local?: string; local6?: string; learning?: boolean };
  };
}

describe.skipIf(netnsSkipReason !== undefined)('VXLAN device parameters and MAC over netlink', () => {
  const pool = new NetnsPool();
  let ns: TestNetns;
  let h: NetlinkHandle;
  const show = (dev: string): IpVxlan => ipJson<IpVxlan[]>(ns.name, '-d', 'link', 'show', 'dev', dev)[0]!;

  beforeAll(() => {
    ns = pool.add('vx');
    const add = (spec: string): string => ip(ns.name, 'link', 'add', ...spec.split(' '));
    add('eth0 type veth peer name eth1');
    add('a4 type vxlan id 4096 local 192.168.10.2 dstport 8472 nolearning');
    add('a6 type vxlan id 16777215 local fd00:10::2 dstport 4789 learning');
    add('nolocal type vxlan id 1 dstport 0');
    h = port!.openNetlinkIn(ns.path);
  });
  afterAll(() => {
    h?.close();
    pool.cleanup();
  });

  it('reads what iproute2 reads: VNI, port, local or local6, learning', async () => {
    for (const dev of ['a4', 'a6', 'nolocal']) {
      const d = show(dev).linkinfo!.info_data!;
      expect(await h.vxlanParams!(dev), dev).toEqual({
        vni: d.id,
        port: d.port,
        localIp: d.local ?? d.local6,
        learning: d.learning === true,
      });
    }
    expect(await h.vxlanParams!('a6')).toEqual({
      vni: 16777215,
      port: 4789,
      localIp: 'fd00:10::2',
      learning: true,
    });
  });

  it('null for a link that is no VXLAN device, undefined for no link of that name', async () => {
    expect(await h.vxlanParams!('eth0')).toBeNull();
    expect(await h.vxlanParams!('lo')).toBeNull();
    expect(await h.vxlanParams!('missing0')).toBeUndefined();
  });

  it('sets a MAC that iproute2 then shows; an index that does not exist fails', async () => {
    const link = (await h.getLink('a4'))!;
    await h.setLinkMac!(link.index, '0e:74:72:6c:00:04');
    expect(show('a4').address).toBe('0e:74:72:6c:00:04');
    expect((await h.getLink('a4'))!.mac).toBe('0e:74:72:6c:00:04');
    await expect(h.setLinkMac!(99_999, '0e:74:72:6c:00:05')).rejects.toMatchObject({ errno: 'ENODEV' });
  });
});
