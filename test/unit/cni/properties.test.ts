/**
 * Property-based tests: the parsers face whatever a runtime (or a fuzzer) sends, so for arbitrary input
 * they must either return a well-formed value or throw a CniError with a known code, never anything
 * else; and every valid input we can generate must parse to what was generated.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCniArgs } from '../../../pkg/cni/args.ts';
import { CNI_COMMANDS, interfaceNameProblem, parseCniEnv } from '../../../pkg/cni/env.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { ipFamily, parseCidr, parseIp } from '../../../pkg/cni/ip.ts';
import { LOG_LEVELS, type NetConfCommand, parseNetConf } from '../../../pkg/cni/netconf.ts';
import { type CniResult, convertResult, parseResult } from '../../../pkg/cni/result.ts';
import { SUPPORTED_VERSIONS } from '../../../pkg/cni/version.ts';

const KNOWN_CODES = new Set<number>(Object.values(CniCode));
const NETCONF_COMMANDS: NetConfCommand[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'];

/** Runs f; returns its value, or the CniError it threw after checking the code is allowed. */
function onlyCniErrors<T>(f: () => T, allowed: readonly number[]): T | CniError {
  try {
    return f();
  } catch (err) {
    if (!(err instanceof CniError)) throw new Error(`threw a non-CniError: ${String(err)}`);
    if (!KNOWN_CODES.has(err.code) || !allowed.includes(err.code)) {
      throw new Error(`unexpected code ${err.code}: ${err.message}`);
    }
    expect(err.message.length).toBeGreaterThan(0);
    return err;
  }
}

const anyText = fc.string({ unit: 'binary', maxLength: 40 });
const containerId = fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/);
const ifname = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,14}$/);
const netnsPath = fc.stringMatching(/^\/[a-z0-9/_-]{0,40}$/);
const argValue = fc.stringMatching(/^[^;]{0,20}$/);

describe('parseCniEnv properties', () => {
  const envValue = fc.oneof(anyText, containerId, ifname, netnsPath, fc.constantFrom(...CNI_COMMANDS));
  const envKey = fc.constantFrom(
    'CNI_COMMAND',
    'CNI_CONTAINERID',
    'CNI_NETNS',
    'CNI_IFNAME',
    'CNI_ARGS',
    'CNI_PATH',
    'PATH',
    'HOME',
  );

  it('returns a consistent request or throws INVALID_ENV, for arbitrary environments', () => {
    fc.assert(
      fc.property(fc.dictionary(envKey, fc.option(envValue, { nil: undefined })), (env) => {
        const out = onlyCniErrors(() => parseCniEnv(env), [CniCode.INVALID_ENV]);
        if (out instanceof CniError) return;
        expect(CNI_COMMANDS).toContain(out.command);
        if (out.command === 'ADD' || out.command === 'CHECK' || out.command === 'DEL') {
          expect(out.containerId).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);
          expect(interfaceNameProblem(out.ifname ?? '')).toBeUndefined();
          if (out.command !== 'DEL') expect(out.netns?.startsWith('/')).toBe(true);
        }
        if (out.netns !== undefined) expect(out.netns.startsWith('/')).toBe(true);
        for (const p of out.path) expect(p).not.toBe('');
      }),
      { numRuns: 500 },
    );
  });

  it('always accepts a valid ADD/DEL/CHECK environment and returns its values', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('ADD', 'DEL', 'CHECK'),
        containerId,
        ifname,
        netnsPath,
        (command, id, name, netns) => {
          const env = parseCniEnv({
            CNI_COMMAND: command,
            CNI_CONTAINERID: id,
            CNI_IFNAME: name,
            CNI_NETNS: netns,
          });
          expect(env).toMatchObject({ command, containerId: id, ifname: name, netns });
        },
      ),
    );
  });
});

describe('parseCniArgs properties', () => {
  it('returns or throws INVALID_ENV for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, fc.stringMatching(/^[A-Za-z=;_0-9]{0,30}$/)), (s) => {
        onlyCniErrors(() => parseCniArgs(s), [CniCode.INVALID_ENV]);
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips generated K=V lists (last value wins)', () => {
    const key = fc.oneof(
      fc.constantFrom('K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID'),
      fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/).filter((k) => k !== 'IgnoreUnknown'),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(key, argValue), { maxLength: 8 }), fc.boolean(), (pairs, ignore) => {
        const text = [`IgnoreUnknown=${ignore ? '1' : '0'}`, ...pairs.map(([k, v]) => `${k}=${v}`)].join(';');
        const args = parseCniArgs(text);
        const last = new Map(pairs);
        const fields: Record<string, string | undefined> = {
          K8S_POD_NAMESPACE: args.podNamespace,
          K8S_POD_NAME: args.podName,
          K8S_POD_INFRA_CONTAINER_ID: args.podInfraContainerId,
          K8S_POD_UID: args.podUid,
        };
        expect(args.ignoreUnknown).toBe(ignore);
        for (const [k, v] of last) {
          if (k in fields) expect(fields[k]).toBe(v);
          else expect(args.other[k]).toBe(v);
        }
        expect(Object.keys(args.other).length).toBe([...last.keys()].filter((k) => !(k in fields)).length);
      }),
    );
  });
});

const validConfig = fc.record(
  {
    cniVersion: fc.constantFrom(...SUPPORTED_VERSIONS),
    name: fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}$/),
    type: fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/),
    socket: netnsPath,
    spoolDir: netnsPath,
    mtu: fc.integer({ min: 68, max: 65535 }),
    timeoutMs: fc.integer({ min: 1, max: 600_000 }),
    logLevel: fc.constantFrom(...LOG_LEVELS),
    dns: fc.record(
      {
        nameservers: fc.array(fc.oneof(fc.ipV4(), fc.ipV6()), { maxLength: 3 }),
        domain: fc.string({ maxLength: 10 }),
        search: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
        options: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
      },
      { requiredKeys: [] },
    ),
    args: fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 })),
    capabilities: fc.dictionary(fc.string({ maxLength: 8 }), fc.boolean()),
    extra: fc.jsonValue({ maxDepth: 2 }),
  },
  { requiredKeys: ['cniVersion', 'name', 'type'] },
);

describe('parseNetConf properties', () => {
  const allowed = [CniCode.DECODE_FAILED, CniCode.INVALID_CONFIG, CniCode.INCOMPATIBLE_VERSION];

  it('never throws anything but a CniError for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, fc.json()), fc.constantFrom(...NETCONF_COMMANDS), (s, command) => {
        onlyCniErrors(() => parseNetConf(s, command), allowed);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws anything but a CniError for arbitrary bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 64 }),
        fc.constantFrom(...NETCONF_COMMANDS),
        (bytes, command) => {
          onlyCniErrors(() => parseNetConf(bytes, command), allowed);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never throws anything but a CniError when known fields hold arbitrary JSON', () => {
    const field = fc.constantFrom(
      'cniVersion',
      'name',
      'type',
      'socket',
      'spoolDir',
      'mtu',
      'timeoutMs',
      'dns',
      'logLevel',
      'args',
      'capabilities',
      'runtimeConfig',
      'prevResult',
      'cni.dev/valid-attachments',
      'cni.dev/attachments',
    );
    fc.assert(
      fc.property(
        validConfig,
        fc.dictionary(field, fc.jsonValue({ maxDepth: 4 })),
        fc.constantFrom(...NETCONF_COMMANDS),
        (conf, overrides, command) => {
          onlyCniErrors(() => parseNetConf(JSON.stringify({ ...conf, ...overrides }), command), allowed);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('never throws anything but a CniError for arbitrary prevResult-like objects', () => {
    const resultish = fc.record(
      {
        cniVersion: fc.oneof(fc.constantFrom(...SUPPORTED_VERSIONS), fc.jsonValue()),
        interfaces: fc.array(fc.dictionary(fc.constantFrom('name', 'mac', 'mtu', 'sandbox'), fc.jsonValue())),
        ips: fc.array(
          fc.dictionary(
            fc.constantFrom('address', 'gateway', 'interface', 'version'),
            fc.oneof(
              fc.jsonValue(),
              fc.ipV4(),
              fc.ipV6(),
              fc.constantFrom('4', '6', '10.0.0.1/24', 'fd00::1/64'),
            ),
          ),
        ),
        routes: fc.array(
          fc.dictionary(fc.constantFrom('dst', 'gw', 'mtu', 'scope', 'table'), fc.jsonValue()),
        ),
        dns: fc.jsonValue(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(resultish, fc.constantFrom(...SUPPORTED_VERSIONS), (prevResult, cniVersion) => {
        const s = JSON.stringify({ cniVersion, name: 'n', type: 't', prevResult });
        onlyCniErrors(() => parseNetConf(s, 'DEL'), allowed);
      }),
      { numRuns: 500 },
    );
  });

  it('always parses a valid generated config and returns its fields', () => {
    fc.assert(
      fc.property(validConfig, (c) => {
        const command: NetConfCommand = c.cniVersion === '1.1.0' ? 'GC' : 'ADD';
        const conf = parseNetConf(JSON.stringify(c), command);
        expect(conf.cniVersion).toBe(c.cniVersion);
        expect(conf.name).toBe(c.name);
        expect(conf.type).toBe(c.type);
        expect(conf.socket).toBe(c.socket ?? '/run/trellis/cni.sock');
        expect(conf.spoolDir).toBe(c.spoolDir ?? '/var/lib/trellis/spool');
        expect(conf.mtu).toBe(c.mtu);
        expect(conf.timeoutMs).toBe(c.timeoutMs);
        expect(conf.logLevel).toBe(c.logLevel);
        if (c.dns !== undefined) expect(conf.dns).toEqual(c.dns);
        if (c.capabilities !== undefined) expect(conf.capabilities).toEqual(c.capabilities);
        expect(conf.raw).toEqual(JSON.parse(JSON.stringify(c)));
      }),
      { numRuns: 500 },
    );
  });
});

const v4Cidr = fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, p]) => `${a}/${p}`);
const v6Cidr = fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, p]) => `${a}/${p}`);
const cidr = fc.oneof(v4Cidr, v6Cidr);
const ip = fc.oneof(fc.ipV4(), fc.ipV6());
const positive = fc.integer({ min: 1, max: 100_000 });

const validInterface = fc.record(
  {
    name: ifname,
    mac: fc.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
    mtu: positive,
    sandbox: netnsPath.filter((s) => s !== ''),
    socketPath: netnsPath.filter((s) => s !== ''),
    pciID: fc.stringMatching(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/),
  },
  { requiredKeys: ['name'] },
);
const validIp = fc.record(
  { address: cidr, gateway: ip, interface: fc.integer({ min: 0, max: 2 }) },
  { requiredKeys: ['address'] },
);
const validRoute = fc.record(
  {
    dst: cidr,
    gw: ip,
    mtu: positive,
    advmss: positive,
    priority: positive,
    table: positive,
    scope: fc.integer({ min: 1, max: 255 }),
  },
  { requiredKeys: ['dst'] },
);

// No chain(): an ip's interface index is dropped afterwards when it points past the generated interfaces,
// so shrinking can never produce an invalid pair.
const validResult: fc.Arbitrary<CniResult> = fc
  .record(
    {
      interfaces: fc.array(validInterface, { maxLength: 3 }),
      ips: fc.array(validIp, { maxLength: 4 }),
      routes: fc.array(validRoute, { maxLength: 4 }),
    },
    { requiredKeys: [] },
  )
  .map((r) => {
    const count = r.interfaces?.length ?? 0;
    const ips = r.ips?.map((i) => {
      if (i.interface === undefined || i.interface < count) return i;
      const { interface: _dropped, ...rest } = i;
      return rest;
    });
    return JSON.parse(JSON.stringify({ cniVersion: '1.1.0', ...r, ips })) as CniResult;
  });

/** What survives a trip through the 0.x shape: Go's 040 interface has only name, mac and sandbox. */
function legacySubset(r: CniResult): CniResult {
  return convertResult(
    {
      ...r,
      interfaces: r.interfaces?.map((i) => {
        const out: typeof i = { name: i.name };
        if (i.mac !== undefined) out.mac = i.mac;
        if (i.sandbox !== undefined) out.sandbox = i.sandbox;
        return out;
      }),
    },
    '1.1.0',
  );
}

describe('result properties', () => {
  it('fast-check IP addresses all parse, with the right family', () => {
    fc.assert(
      fc.property(fc.ipV4(), (a) => {
        expect(parseIp(a)).toHaveLength(4);
        expect(ipFamily(a)).toBe('4');
      }),
    );
    fc.assert(
      fc.property(fc.ipV6(), (a) => {
        expect(parseIp(a)).toHaveLength(16);
        expect(parseCidr(`${a}/64`)?.prefixLen).toBe(64);
      }),
      { numRuns: 1000 },
    );
  });

  it('valid generated results parse unchanged', () => {
    fc.assert(
      fc.property(validResult, (r) => {
        expect(parseResult(r, '1.1.0')).toEqual(r);
      }),
    );
  });

  it('conversion to every supported version validates, and 1.1 -> v -> 1.1 keeps what v can carry', () => {
    fc.assert(
      fc.property(validResult, fc.constantFrom(...SUPPORTED_VERSIONS), (r, v) => {
        const down = convertResult(r, v);
        const reparsed = parseResult(JSON.parse(JSON.stringify(down)), v);
        expect(reparsed).toEqual(down);
        const back = convertResult(reparsed, '1.1.0');
        expect(back).toEqual(v.startsWith('0.') ? legacySubset(r) : convertResult(r, '1.1.0'));
      }),
      { numRuns: 300 },
    );
  });
});
