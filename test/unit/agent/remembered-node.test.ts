import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  leasesOutside,
  memoryRefusal,
  parseRememberedNode,
  REMEMBERED_NODE_FILE,
  type RememberedNode,
  RememberedNodeFile,
  readRememberedNode,
  rememberedMtu,
  rememberedPodCIDRs,
  renderRememberedNode,
  saveRememberedNode,
} from '../../../pkg/agent/remembered-node.ts';
import type { Lease } from '../../../pkg/ipam/types.ts';

const node: RememberedNode = {
  node: 'node-1',
  podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
  mtu: 1430,
  overhead: 70,
  mtuSource: 'link eth0 (holds InternalIP 172.18.0.2)',
  mode: 'vxlan',
  internalIPs: ['172.18.0.2', 'fc00:f853:ccd:e793::2'],
};

const text = (o: Record<string, unknown>): string => JSON.stringify({ ...node, ...o });

describe('parseRememberedNode', () => {
  it('reads back what renderRememberedNode wrote', () => {
    expect(parseRememberedNode(renderRememberedNode(node), 'node-1')).toEqual({ ok: true, node });
  });

  it('reads back an MTU below 576 that --mtu accepts (an IPv4-only cluster with TRELLIS_MTU=500)', () => {
    const small = { ...node, podCIDRs: ['10.244.1.0/24'], mtu: 500, overhead: 0 };
    expect(parseRememberedNode(renderRememberedNode(small), 'node-1')).toEqual({ ok: true, node: small });
  });

  it('gives the pod CIDRs in canonical form', () => {
    const r = parseRememberedNode(text({ podCIDRs: ['FD00:10:244:1:0::/64'] }), 'node-1');
    expect(r.ok && r.node.podCIDRs).toEqual(['fd00:10:244:1::/64']);
  });

  it.each([
    ['another node', text({ node: 'node-2' }), /written for node "node-2", not node-1/],
    ['not JSON', '{"node":', /not JSON/],
    ['an array', '[]', /not a JSON object/],
    ['no pod CIDRs', text({ podCIDRs: [] }), /podCIDRs is not a non-empty list/],
    ['pod CIDRs not a list', text({ podCIDRs: '10.244.1.0/24' }), /podCIDRs is not a non-empty list/],
    ['a CIDR with host bits', text({ podCIDRs: ['10.244.1.1/24'] }), /10\.244\.1\.1\/24/],
    ['two IPv4 ranges', text({ podCIDRs: ['10.244.1.0/24', '10.244.2.0/24'] }), /two IPv4 ranges/],
    ['an MTU too small', text({ mtu: 60 }), /mtu 60 is not an integer in 68-65535/],
    ['an MTU that is text', text({ mtu: '1500' }), /mtu "1500"/],
    ['a negative overhead', text({ overhead: -1 }), /overhead -1/],
    ['an unknown mode', text({ mode: 'ipip' }), /mode "ipip" is not one of host-gw, auto, vxlan/],
    ['no InternalIPs list', text({ internalIPs: undefined }), /internalIPs is not a list of IP addresses/],
    ['an InternalIP that is no address', text({ internalIPs: ['node-1'] }), /internalIPs is not a list/],
  ])('refuses %s, saying why', (_what, body, problem) => {
    const r = parseRememberedNode(body, 'node-1');
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(problem);
  });
});

describe('leasesOutside', () => {
  const lease = (...addrs: [string, string][]): Lease => ({
    containerId: `c${addrs.length}${addrs[0]?.[0]}`,
    ifname: 'eth0',
    addresses: addrs.map(([address, range]) => ({
      family: address.includes(':') ? 6 : 4,
      address,
      range,
    })),
    createdAt: '2026-11-30T00:00:00.000Z',
  });

  it('names the leases with any address outside the ranges', () => {
    const inside = lease(['10.244.1.5', '10.244.1.0/24'], ['fd00:10:244:1::5', 'fd00:10:244:1::/64']);
    const halfOut = lease(['10.244.1.6', '10.244.1.0/24'], ['fd00:10:244:9::6', 'fd00:10:244:9::/64']);
    const out = lease(['10.244.9.7', '10.244.9.0/24']);
    expect(leasesOutside([inside, halfOut, out], node.podCIDRs)).toEqual([halfOut, out]);
    expect(leasesOutside([inside], node.podCIDRs)).toEqual([]);
  });

  it('judges the address, not the range text it was leased in: as IPAM keeps and releases them', () => {
    // Leased in a /24 that later widened to a /23: IPAM kept it, its record still names the /24.
    const widened = lease(['10.244.1.5', '10.244.1.0/24']);
    expect(leasesOutside([widened], ['10.244.0.0/23'])).toEqual([]);
    // Shrunk to a block whose network or gateway the address now is: IPAM would release it.
    const network = lease(['10.244.1.128', '10.244.1.0/24']);
    const gateway = lease(['10.244.1.129', '10.244.1.0/24']);
    const kept = lease(['10.244.1.130', '10.244.1.0/24']);
    expect(leasesOutside([network, gateway, kept], ['10.244.1.128/25'])).toEqual([network, gateway]);
  });
});

describe('rememberedMtu', () => {
  it('serves the remembered MTU for the same mode', () => {
    expect(rememberedMtu(node, 'vxlan')).toEqual({
      mtu: 1430,
      overhead: 70,
      source: 'remembered from the last run (link eth0 (holds InternalIP 172.18.0.2))',
    });
  });

  it("takes another mode's overhead from the link MTU the last run saw", () => {
    // 1500 on the link: host-gw and auto have no overhead; vxlan IPv6's 70 with an IPv6 InternalIP.
    expect(rememberedMtu(node, 'host-gw')).toMatchObject({ mtu: 1500, overhead: 0 });
    expect(rememberedMtu(node, 'auto')).toMatchObject({ mtu: 1500, overhead: 0 });
    expect(rememberedMtu({ ...node, mode: 'host-gw', mtu: 1500, overhead: 0 }, 'vxlan')).toMatchObject({
      mtu: 1430,
      overhead: 70,
      source: expect.stringMatching(/host-gw mode .* less vxlan mode's overhead \(70\)/),
    });
    const v4only = { ...node, mode: 'host-gw' as const, mtu: 1500, overhead: 0, internalIPs: ['172.18.0.2'] };
    expect(rememberedMtu(v4only, 'vxlan')).toMatchObject({ mtu: 1450, overhead: 50 });
    // A tiny MTU the last run was given (--mtu 100): never below what a link takes.
    expect(rememberedMtu({ ...v4only, mtu: 100 }, 'vxlan')).toMatchObject({ mtu: 68, overhead: 50 });
  });

  it('an older run in auto mode subtracted the overhead: the same mode now gets the link MTU', () => {
    const older = { ...node, mode: 'auto' as const, mtu: 1430, overhead: 70 };
    expect(rememberedMtu(older, 'auto')).toMatchObject({
      mtu: 1500,
      overhead: 0,
      source: expect.stringMatching(/in auto mode .* less auto mode's overhead \(0\)/),
    });
  });
});

describe('rememberedMtu of a fallback', () => {
  it('stays a fallback (never kept later as an MTU found)', () => {
    const fell = { ...node, mtu: 1430, mtuSource: 'fallback 1500 minus 70 bytes of encapsulation' };
    expect(rememberedMtu(fell, 'vxlan')).toMatchObject({ mtu: 1430, fallback: true });
    expect(rememberedMtu(fell, 'host-gw')).toMatchObject({ mtu: 1500, fallback: true });
    expect(rememberedMtu(node, 'vxlan').fallback).toBeUndefined();
  });
});

describe('memoryRefusal', () => {
  const basis = { listed: false, rangesKnown: false, leases: [], podCIDRs: node.podCIDRs };
  it('allows memory only before any list, with no ranges, releasing nothing', () => {
    expect(memoryRefusal(basis)).toBeUndefined();
    expect(memoryRefusal({ ...basis, listed: true })).toBe('the API has listed Nodes');
    expect(memoryRefusal({ ...basis, rangesKnown: true })).toBe('the pod CIDRs are known already');
    const out: Lease = {
      containerId: 'c1',
      ifname: 'eth0',
      addresses: [{ family: 4, address: '10.244.9.7', range: '10.244.9.0/24' }],
      createdAt: '2026-11-30T00:00:00.000Z',
    };
    expect(memoryRefusal({ ...basis, leases: [out] })).toBe('1 lease(s) lie outside them');
  });
});

describe('the node.json file', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('is written for root alone, skipped when unchanged, and read back', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-remembered-'));
    expect(readRememberedNode(dir, 'node-1')).toBeUndefined();
    expect(await saveRememberedNode(dir, node)).toBe('written');
    expect(statSync(join(dir, REMEMBERED_NODE_FILE)).mode & 0o777).toBe(0o600);
    expect(await saveRememberedNode(dir, node)).toBe('unchanged');
    expect(readRememberedNode(dir, 'node-1')).toEqual({ ok: true, node });
    expect(await saveRememberedNode(dir, { ...node, mtu: 1500, overhead: 0 })).toBe('written');
    expect(JSON.parse(readFileSync(join(dir, REMEMBERED_NODE_FILE), 'utf8')).mtu).toBe(1500);
  });

  it("gives doctor the pod CIDRs without the node's name, and nothing from a damaged file", async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-remembered-'));
    expect(rememberedPodCIDRs(dir)).toBeUndefined();
    await saveRememberedNode(dir, node);
    expect(rememberedPodCIDRs(dir)).toEqual(node.podCIDRs);
    writeFileSync(join(dir, REMEMBERED_NODE_FILE), '{"node":"node-1"}');
    expect(rememberedPodCIDRs(dir)).toBeUndefined();
  });

  it('is written again when removed under the agent (keep), and only once something was saved', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-remembered-'));
    const file = new RememberedNodeFile(dir, 'node-1', pino({ level: 'silent' }));
    await file.keep();
    expect(readRememberedNode(dir, 'node-1')).toBeUndefined();
    await file.save(node);
    rmSync(join(dir, REMEMBERED_NODE_FILE));
    await file.save(node); // unchanged: save alone does not look at the disk
    expect(readRememberedNode(dir, 'node-1')).toBeUndefined();
    await file.keep();
    expect(readRememberedNode(dir, 'node-1')).toEqual({ ok: true, node });
    expect(statSync(join(dir, REMEMBERED_NODE_FILE)).mode & 0o777).toBe(0o600);
  });

  it('says why a damaged file cannot be used', () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-remembered-'));
    writeFileSync(join(dir, REMEMBERED_NODE_FILE), '{"node":"node-1","podCIDRs":');
    const r = readRememberedNode(dir, 'node-1');
    expect(r).toEqual({ ok: false, problem: expect.stringMatching(/^not JSON \(/) });
  });
});
