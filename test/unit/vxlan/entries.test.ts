import { describe, expect, it } from 'vitest';
import type { FdbEntry, NeighbourEntry } from '../../../pkg/datapath/ports.ts';
import type { PeerDecision } from '../../../pkg/routes/types.ts';
import { desiredEntries, diffFdb, diffNeighbours } from '../../../pkg/vxlan/entries.ts';

const MAC_B = '0a:00:00:00:00:0b';
const MAC_C = '0a:00:00:00:00:0c';
const vx = (
  node: string,
  family: 4 | 6,
  vtepIP: string,
  mac: string,
  nodeIP: string,
  ifindex: number,
): PeerDecision => ({
  node,
  family,
  path: 'vxlan',
  nodeIP,
  vtepIP,
  vtepMac: mac,
  ifindex,
  linkName: family === 4 ? 'trellis.v4' : 'trellis.v6',
  podCIDRs: [],
});
const decisions: PeerDecision[] = [
  vx('node-b', 4, '10.244.2.0', MAC_B, '192.168.20.2', 7),
  vx('node-b', 6, 'fd00:244:2::', MAC_B, 'fd00:20::2', 8),
  {
    node: 'node-x',
    family: 4,
    path: 'direct',
    nodeIP: '192.168.10.3',
    ifindex: 2,
    linkName: 'eth0',
    podCIDRs: [],
  },
  { node: 'node-y', family: 4, path: 'unreachable', nodeIP: '203.0.113.1', podCIDRs: [], reason: 'x' },
];

describe('desiredEntries', () => {
  it('one permanent neighbour (VTEP IP -> MAC) and one FDB entry (MAC -> node IP) per VXLAN decision only', () => {
    expect(desiredEntries(decisions)).toEqual({
      neighbours: [
        { family: 4, ifindex: 7, address: '10.244.2.0', mac: MAC_B, permanent: true },
        { family: 6, ifindex: 8, address: 'fd00:244:2::', mac: MAC_B, permanent: true },
      ],
      fdb: [
        { ifindex: 7, mac: MAC_B, dst: '192.168.20.2' },
        { ifindex: 8, mac: MAC_B, dst: 'fd00:20::2' },
      ],
    });
  });
});

describe('diffNeighbours', () => {
  const ours = new Set([7, 8]);
  const want = desiredEntries(decisions).neighbours;

  it('nothing to do when the kernel has exactly ours (addresses compared canonically, MAC case-insensitively)', () => {
    const listed: NeighbourEntry[] = [
      { family: 4, ifindex: 7, address: '10.244.2.0', mac: MAC_B.toUpperCase(), permanent: true },
      { family: 6, ifindex: 8, address: 'fd00:244:2:0:0:0:0:0', mac: MAC_B, permanent: true },
    ];
    expect(diffNeighbours(want, listed, ours)).toEqual({ write: [], replaced: [], remove: [], unchanged: 2 });
  });

  it('rewrites a wrong MAC or a non-permanent entry, removes stale unicast entries on our devices only', () => {
    const listed: NeighbourEntry[] = [
      { family: 4, ifindex: 7, address: '10.244.2.0', mac: MAC_C, permanent: true },
      { family: 6, ifindex: 8, address: 'fd00:244:2::', mac: MAC_B, permanent: false },
      { family: 4, ifindex: 7, address: '10.244.9.0', mac: MAC_C, permanent: true }, // a removed node
      { family: 4, ifindex: 2, address: '192.168.10.3', mac: MAC_C, permanent: false }, // eth0: not ours
      { family: 6, ifindex: 8, address: 'ff02::16', mac: '33:33:00:00:00:16', permanent: false }, // kernel multicast
      { family: 4, ifindex: 7, address: '224.0.0.1', mac: '01:00:5e:00:00:01', permanent: false },
    ];
    const d = diffNeighbours(want, listed, ours);
    expect(d.write).toEqual(want);
    expect(d.remove).toEqual([listed[2]]);
    expect(d.unchanged).toBe(0);
  });
});

describe('diffFdb', () => {
  const ours = new Set([7, 8]);
  const want = desiredEntries(decisions).fdb;

  it('adds missing entries, keeps present ones', () => {
    const listed: FdbEntry[] = [{ ifindex: 7, mac: MAC_B, dst: '192.168.20.2' }];
    expect(diffFdb(want, listed, ours)).toEqual({ write: [want[1]], replaced: [], remove: [], unchanged: 1 });
  });

  it("a node whose IP changed: the old remote of its MAC is 'replaced' (removed at once); a gone node's is 'remove'", () => {
    const listed: FdbEntry[] = [
      { ifindex: 7, mac: MAC_B, dst: '192.168.20.99' }, // node-b's old address
      { ifindex: 7, mac: MAC_C, dst: '192.168.30.2' }, // node-c left
      { ifindex: 2, mac: MAC_C, dst: '192.168.30.2' }, // another device: never ours
      { ifindex: 8, mac: MAC_B, dst: 'fd00:20:0::2' }, // same as desired, other spelling
    ];
    const d = diffFdb(want, listed, ours);
    expect(d.write).toEqual([want[0]]);
    expect(d.replaced).toEqual([listed[0]]);
    expect(d.remove).toEqual([listed[1]]);
    expect(d.unchanged).toBe(1);
  });
});
