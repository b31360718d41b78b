import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { type CniResult, convertResult, errorJson, parseResult } from '../../../pkg/cni/result.ts';
import { SPEC1_ERROR, SPEC1_RESULT } from './spec-examples.ts';
import { thrown } from './thrown.ts';

/** A 1.1 result using every field, dual-stack. */
const FULL_11: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'veth1a2b3c4d', mac: '0a:58:0a:f4:01:01' },
    {
      name: 'eth0',
      mac: '0a:58:0a:f4:01:05',
      mtu: 1450,
      sandbox: '/var/run/netns/cni-1',
      socketPath: '/run/x.sock',
      pciID: '0000:00:1f.6',
    },
  ],
  ips: [
    { address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 },
    { address: 'fd00:10:244:1::5/64', gateway: 'fd00:10:244:1::1', interface: 1 },
  ],
  routes: [
    { dst: '0.0.0.0/0', gw: '10.244.1.1', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 },
    { dst: '::/0', gw: 'fd00:10:244:1::1' },
  ],
  dns: {
    nameservers: ['10.96.0.10'],
    domain: 'cluster.local',
    search: ['svc.cluster.local'],
    options: ['ndots:5'],
  },
};

describe('parseResult', () => {
  it('accepts the spec 1.x result example unchanged', () => {
    expect(parseResult(SPEC1_RESULT, '1.1.0')).toEqual(SPEC1_RESULT);
  });

  it('accepts a result using every 1.1 field', () => {
    expect(parseResult(JSON.parse(JSON.stringify(FULL_11)), '1.1.0')).toEqual(FULL_11);
  });

  it("uses the result's own cniVersion for the shape, else the given one", () => {
    const legacy = parseResult(
      { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.0.0.5/32' }] },
      '1.0.0',
    );
    expect(legacy).toEqual({ cniVersion: '0.4.0', ips: [{ version: '4', address: '10.0.0.5/32' }] });
    const given = parseResult({ ips: [{ address: '10.0.0.5/32' }] }, '0.3.1');
    expect(given).toEqual({ cniVersion: '0.3.1', ips: [{ version: '4', address: '10.0.0.5/32' }] });
  });

  it('drops `version` from 1.x ips and unknown keys everywhere', () => {
    const r = parseResult(
      { ips: [{ version: '4', address: '10.0.0.5/32', extra: 1 }], extra: true },
      '1.0.0',
    );
    expect(r).toEqual({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/32' }] });
  });

  it('names every problem with its path', () => {
    const err = thrown(() =>
      parseResult(
        {
          interfaces: [{ mac: 5 }, 'x'],
          ips: [
            { address: '10.0.0.5' },
            { address: '10.0.0.6/32', gateway: 'nope', interface: 7 },
            { version: '6', address: '10.0.0.7/32' },
          ],
          routes: [{ dst: '10.0.0.0/8', gw: '1.2.3', table: -1, scope: 256 }],
          dns: { nameservers: ['x'], search: 'a' },
        },
        '0.4.0',
        { path: 'prevResult' },
      ),
    );
    expect(err.code).toBe(CniCode.INVALID_CONFIG);
    for (const part of [
      'prevResult.interfaces[0].name is required',
      'prevResult.interfaces[0].mac must be a string, not number',
      'prevResult.interfaces[1] must be an object, not string',
      'prevResult.ips[0].address "10.0.0.5" is not an IP address in CIDR form',
      'prevResult.ips[1].gateway "nope" is not an IP address',
      'prevResult.ips[1].interface 7 does not index the 2 interfaces',
      'prevResult.ips[2].version "6" does not match address "10.0.0.7/32"',
      'prevResult.routes[0].gw "1.2.3" is not an IP address',
      'prevResult.routes[0].table must be an integer from 0 to 4294967295, not -1',
      'prevResult.routes[0].scope must be an integer from 0 to 255, not 256',
      'prevResult.dns.nameservers entry "x" is not an IP address',
      'prevResult.dns.search must be an array of strings',
    ]) {
      expect(err.message).toContain(part);
    }
  });

  it('reads an empty gateway or gw as unset, as Go does', () => {
    const r = parseResult(
      {
        cniVersion: '1.0.0',
        ips: [{ address: '10.0.0.5/24', gateway: '' }],
        routes: [{ dst: '0.0.0.0/0', gw: '' }],
      },
      '1.0.0',
    );
    expect(r).toEqual({
      cniVersion: '1.0.0',
      ips: [{ address: '10.0.0.5/24' }],
      routes: [{ dst: '0.0.0.0/0' }],
    });
  });

  it('uses the code the caller asks for', () => {
    expect(thrown(() => parseResult([], '1.0.0', { code: CniCode.DECODE_FAILED })).code).toBe(
      CniCode.DECODE_FAILED,
    );
  });

  it('rejects unsupported result versions with code 1', () => {
    expect(thrown(() => parseResult({ cniVersion: '0.2.0', ip4: { ip: '10.0.0.5/32' } }, '1.0.0')).code).toBe(
      CniCode.INCOMPATIBLE_VERSION,
    );
  });
});

describe('convertResult (Go types100/types040 rules)', () => {
  it('1.1 -> 0.4.0 adds ip versions and drops 1.1-only interface fields', () => {
    expect(convertResult(FULL_11, '0.4.0')).toEqual({
      cniVersion: '0.4.0',
      interfaces: [
        { name: 'veth1a2b3c4d', mac: '0a:58:0a:f4:01:01' },
        { name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/cni-1' },
      ],
      ips: [
        { version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 },
        { version: '6', address: 'fd00:10:244:1::5/64', gateway: 'fd00:10:244:1::1', interface: 1 },
      ],
      // Go shares types.Route between 040 and 100, so route fields are copied as they are.
      routes: [
        { dst: '0.0.0.0/0', gw: '10.244.1.1', mtu: 1400, advmss: 1360, priority: 10, table: 100 },
        { dst: '::/0', gw: 'fd00:10:244:1::1' },
      ],
      dns: FULL_11.dns,
    });
  });

  it('1.1 -> 1.0.0 only changes cniVersion (the types did not change), dropping zero values', () => {
    const out = convertResult(FULL_11, '1.0.0');
    expect(out.cniVersion).toBe('1.0.0');
    expect(out.interfaces).toEqual(FULL_11.interfaces);
    expect(out.routes?.[0]).toEqual({
      dst: '0.0.0.0/0',
      gw: '10.244.1.1',
      mtu: 1400,
      advmss: 1360,
      priority: 10,
      table: 100,
    });
  });

  it('round-trips 1.0 -> 0.4.0 -> 1.0 for 1.0 content', () => {
    const r10 = parseResult(SPEC1_RESULT, '1.0.0');
    const r10b = { ...r10, cniVersion: '1.0.0' };
    expect(convertResult(convertResult(r10b, '0.4.0'), '1.0.0')).toEqual(r10b);
  });

  it('round-trips between 0.3.0, 0.3.1 and 0.4.0 unchanged except cniVersion', () => {
    const r = parseResult(
      { cniVersion: '0.3.0', ips: [{ version: '6', address: 'fd00::5/64' }], routes: [{ dst: '::/0' }] },
      '0.3.0',
    );
    for (const v of ['0.3.1', '0.4.0', '0.3.0']) {
      expect(convertResult(r, v)).toEqual({ ...r, cniVersion: v });
    }
  });

  it('converted output always validates as its version', () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const out = convertResult(FULL_11, v);
      expect(parseResult(JSON.parse(JSON.stringify(out)), v)).toEqual(out);
    }
  });

  it('omits empty lists and an empty dns, as Go omitempty does', () => {
    expect(
      convertResult({ cniVersion: '1.0.0', interfaces: [], ips: [], routes: [], dns: {} }, '0.4.0'),
    ).toEqual({
      cniVersion: '0.4.0',
    });
  });

  it('refuses 0.1.0/0.2.0 and unknown versions with code 1', () => {
    for (const v of ['0.1.0', '0.2.0', '2.0.0', 'x']) {
      expect(thrown(() => convertResult(FULL_11, v)).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    }
  });

  it('does not share arrays with its input', () => {
    const out = convertResult(FULL_11, '1.1.0');
    out.dns?.nameservers?.push('1.1.1.1');
    out.ips?.pop();
    expect(FULL_11.dns?.nameservers).toEqual(['10.96.0.10']);
    expect(FULL_11.ips).toHaveLength(2);
  });
});

describe('errorJson', () => {
  it('produces the spec error shape', () => {
    const err = new CniError(
      CniCode.INVALID_CONFIG,
      'Invalid Configuration',
      'Network 192.168.0.0/31 too small to allocate from.',
    );
    expect(errorJson(err, '1.1.0')).toEqual(SPEC1_ERROR);
  });

  it('omits empty details and maps untyped errors to INTERNAL', () => {
    expect(errorJson(new CniError(CniCode.TRY_AGAIN_LATER, 'agent starting'), '0.4.0')).toEqual({
      cniVersion: '0.4.0',
      code: 11,
      msg: 'agent starting',
    });
    const internal = errorJson(new TypeError('boom'), '1.0.0');
    expect(internal.code).toBe(CniCode.INTERNAL);
    expect(internal.msg).toBe('boom');
  });

  it('falls back to the latest version when the request version is unknown or unsupported', () => {
    expect(errorJson(new CniError(CniCode.DECODE_FAILED, 'x')).cniVersion).toBe('1.1.0');
    expect(errorJson(new CniError(CniCode.INCOMPATIBLE_VERSION, 'x'), '0.2.0').cniVersion).toBe('1.1.0');
  });
});
