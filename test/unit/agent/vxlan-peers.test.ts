import { describe, expect, it } from 'vitest';
import { tunnelledPeers, vxlanInKinds } from '../../../pkg/agent/vxlan-peers.ts';
import type { PeerDecision } from '../../../pkg/routes/types.ts';

const tunnel = (node: string, nodeIP: string): PeerDecision => ({
  node,
  family: nodeIP.includes(':') ? 6 : 4,
  path: 'vxlan',
  nodeIP,
  vtepIP: '10.244.9.0',
  vtepMac: '02:00:00:00:00:01',
  ifindex: 9,
  linkName: 'trellis.v4',
  podCIDRs: [],
});

describe('tunnelledPeers', () => {
  it('the underlay addresses of the VXLAN decisions, per family, each once; direct peers are not', () => {
    const decisions: PeerDecision[] = [
      tunnel('a', '10.100.1.12'),
      tunnel('b', 'fd00:100:1::12'),
      tunnel('a', '10.100.1.12'),
      {
        node: 'c',
        family: 4,
        path: 'direct',
        nodeIP: '10.100.0.13',
        ifindex: 2,
        linkName: 'eth0',
        podCIDRs: [],
      },
    ];
    expect(tunnelledPeers(decisions)).toEqual(
      new Map([
        [4, ['10.100.1.12']],
        [6, ['fd00:100:1::12']],
      ]),
    );
  });
});

describe('vxlanInKinds', () => {
  it('the devices of the routes to a sample of at most 8 peers, by name; no peers, no lookups', async () => {
    const asked: string[] = [];
    const host = {
      listLinks: async () => [
        { index: 2, name: 'eth0', kind: undefined, mac: '', mtu: 1500, up: true },
        { index: 3, name: 'eth1', kind: undefined, mac: '', mtu: 1500, up: true },
      ],
      routeTo: async (ip: string) => {
        asked.push(ip);
        return { family: 4 as const, dst: '0.0.0.0/0', ifindexes: ip.endsWith('.7') ? [2, 3] : [2] };
      },
    };
    const peers = Array.from({ length: 20 }, (_, i) => `10.100.1.${i}`);
    const kinds = await vxlanInKinds(host, new Map([[4, peers]]), 8472);
    expect(kinds).toEqual([{ family: 4, port: 8472, sources: peers, devices: ['eth0', 'eth1'] }]);
    expect(asked).toHaveLength(8);
    expect(await vxlanInKinds(host, new Map(), 8472)).toEqual([]);
  });
});
