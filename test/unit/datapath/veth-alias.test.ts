import { describe, expect, it } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { ownerOfAlias, vethAlias } from '../../../pkg/datapath/veth-alias.ts';

const ID = '3f9c0a5e8b7d6c4f2a1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a';

describe('a host veth alias', () => {
  it('names the attachment, network and pod, and reads back as the same owner', () => {
    const owner = {
      containerId: ID,
      ifname: 'eth0',
      network: 'trellis',
      pod: { namespace: 'default', name: 'web-7d4b9c-x2x', uid: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' },
    };
    const alias = vethAlias(owner)!;
    expect(alias).toBe(
      `trellis id=${ID} if=eth0 net=trellis pod=default/web-7d4b9c-x2x uid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0`,
    );
    expect(ownerOfAlias(hostVethName(ID, 'eth0'), alias)).toEqual(owner);
  });

  it('leaves out what is unknown, unsafe or too long, never the attachment', () => {
    expect(vethAlias({ containerId: ID, ifname: 'net1' })).toBe(`trellis id=${ID} if=net1`);
    // CNI_ARGS are the runtime's text: a space or '=' would let it forge fields.
    expect(
      vethAlias({
        containerId: ID,
        ifname: 'eth0',
        pod: { namespace: 'a b', name: 'x id=evil' },
        network: 'n=1 if=x',
      }),
    ).toBe(`trellis id=${ID} if=eth0`);
    const long = 'p'.repeat(200);
    const alias = vethAlias({
      containerId: ID,
      ifname: 'eth0',
      pod: { namespace: 'default', name: long, uid: 'u1' },
    })!;
    expect(alias).toBe(`trellis id=${ID} if=eth0 uid=u1`);
    expect(Buffer.byteLength(alias)).toBeLessThanOrEqual(255);
    expect(vethAlias({ containerId: 'c'.repeat(250), ifname: 'eth0' })).toBeUndefined();
  });

  it("is believed only when it is trellis's and names the veth it is on", () => {
    const alias = vethAlias({ containerId: ID, ifname: 'eth0' });
    expect(ownerOfAlias(hostVethName(ID, 'eth0'), alias)).toEqual({ containerId: ID, ifname: 'eth0' });
    expect(ownerOfAlias(hostVethName(ID, 'net1'), alias)).toBeUndefined(); // copied onto another veth
    expect(ownerOfAlias(hostVethName(ID, 'eth0'), `other id=${ID} if=eth0`)).toBeUndefined();
    expect(ownerOfAlias(hostVethName(ID, 'eth0'), `trellis id=${ID}`)).toBeUndefined();
    expect(ownerOfAlias(hostVethName(ID, 'eth0'), undefined)).toBeUndefined();
  });
});
