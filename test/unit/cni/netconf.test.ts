import { describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import {
  DEFAULT_SOCKET,
  DEFAULT_SPOOL_DIR,
  MAX_NETCONF_BYTES,
  type NetConfCommand,
  parseNetConf,
  versionRequestVersion,
} from '../../../pkg/cni/netconf.ts';
import {
  SPEC1_PORTMAP_ADD,
  SPEC1_RESULT,
  SPEC1_TUNING_ADD,
  SPEC11_GC,
  SPEC040_BRIDGE,
  SPEC040_TUNING_ADD,
  SPEC040_TUNING_DEL_AS_PRINTED,
} from './spec-examples.ts';
import { thrown } from './thrown.ts';

const base = { cniVersion: '1.0.0', name: 'trellis', type: 'trellis' };
const conf = (extra: Record<string, unknown>, command: NetConfCommand = 'ADD') =>
  parseNetConf(JSON.stringify({ ...base, ...extra }), command);

describe('parseNetConf: spec examples', () => {
  it('0.4.0 bridge example: required fields, defaults, unknown keys kept in raw', () => {
    const c = parseNetConf(SPEC040_BRIDGE, 'ADD');
    expect(c).toMatchObject({
      cniVersion: '0.4.0',
      name: 'dbnet',
      type: 'bridge',
      socket: DEFAULT_SOCKET,
      spoolDir: DEFAULT_SPOOL_DIR,
      dns: { nameservers: ['10.1.0.1'] },
    });
    expect(c.raw.bridge).toBe('cni0');
    expect(c.raw.ipam).toEqual({ type: 'host-local', subnet: '10.1.0.0/16', gateway: '10.1.0.1' });
    expect(c.prevResult).toBeUndefined();
  });

  it('0.4.0 tuning example: prevResult with ip versions is normalized to the 1.x shape', () => {
    for (const command of ['ADD', 'DEL', 'CHECK'] as const) {
      const c = parseNetConf(SPEC040_TUNING_ADD, command);
      expect(c.prevResult).toEqual({
        cniVersion: '1.1.0',
        ips: [{ address: '10.0.0.5/32', interface: 2 }],
        interfaces: [
          { name: 'cni0', mac: '00:11:22:33:44:55' },
          { name: 'veth3243', mac: '55:44:33:22:11:11' },
          { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' },
        ],
        dns: { nameservers: ['10.1.0.1'] },
      });
    }
  });

  it('0.4.0 DEL example as printed (trailing commas) is a decode failure with the position', () => {
    const err = thrown(() => parseNetConf(SPEC040_TUNING_DEL_AS_PRINTED, 'DEL'));
    expect(err.code).toBe(CniCode.DECODE_FAILED);
    expect(err.message).toMatch(
      /^network configuration is not valid JSON at position 368 \(line 20, column 9\): /,
    );
  });

  it('1.x tuning example: prevResult and runtimeConfig', () => {
    const c = parseNetConf(SPEC1_TUNING_ADD, 'ADD');
    expect(c.prevResult).toEqual({ ...SPEC1_RESULT, cniVersion: '1.1.0' });
    expect(c.runtimeConfig).toEqual({ mac: '00:11:22:33:44:66' });
    expect(c.raw.sysctl).toEqual({ 'net.core.somaxconn': '500' });
  });

  it('1.x portmap example: runtimeConfig.portMappings', () => {
    const c = parseNetConf(SPEC1_PORTMAP_ADD, 'ADD');
    expect(c.runtimeConfig?.portMappings).toEqual([{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }]);
  });

  it('1.1 GC example: valid attachments', () => {
    const c = parseNetConf(SPEC11_GC, 'GC');
    expect(c.validAttachments).toEqual([{ containerID: 'a1b2c3', ifname: 'eth0' }]);
  });

  it('accepts bytes as well as strings', () => {
    const c = parseNetConf(new TextEncoder().encode(SPEC1_TUNING_ADD), 'CHECK');
    expect(c.name).toBe('dbnet');
  });
});

describe('parseNetConf: decoding (code 6)', () => {
  const cases: [string, string | Uint8Array, RegExp][] = [
    ['empty stdin', '', /is empty/],
    ['whitespace', ' \n', /is empty/],
    ['broken JSON', '{"cniVersion":', /not valid JSON/],
    ['an array', '[1,2]', /must be a JSON object, not array/],
    ['null', 'null', /must be a JSON object, not null/],
    ['a string', '"x"', /must be a JSON object, not string/],
    ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
  ];
  for (const [what, input, message] of cases) {
    it(`rejects ${what}`, () => {
      const err = thrown(() => parseNetConf(input, 'ADD'));
      expect(err.code).toBe(CniCode.DECODE_FAILED);
      expect(err.message).toMatch(message);
    });
  }

  it('caps the size at 1 MiB and names it, for strings and bytes', () => {
    const filler = 'x'.repeat(MAX_NETCONF_BYTES);
    const big = JSON.stringify({ ...base, filler });
    const err = thrown(() => parseNetConf(big, 'ADD'));
    expect(err.code).toBe(CniCode.DECODE_FAILED);
    expect(err.message).toBe(`network configuration is ${big.length} bytes; the limit is 1048576 bytes`);
    expect(thrown(() => parseNetConf(new TextEncoder().encode(big), 'ADD')).message).toContain(
      `${big.length} bytes`,
    );
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    // 400,000 three-byte characters: 1.2 MB although the string is shorter than 1 Mi units.
    const big = JSON.stringify({ ...base, filler: '€'.repeat(400_000) });
    expect(big.length).toBeLessThan(MAX_NETCONF_BYTES);
    expect(thrown(() => parseNetConf(big, 'ADD')).code).toBe(CniCode.DECODE_FAILED);
    const fits = JSON.stringify({ ...base, filler: '€'.repeat(300_000) });
    expect(parseNetConf(fits, 'ADD').name).toBe('trellis');
  });
});

describe('parseNetConf: versions (code 1)', () => {
  it('treats a missing cniVersion as 0.1.0, which is unsupported', () => {
    const err = thrown(() => parseNetConf('{"name":"n","type":"t"}', 'ADD'));
    expect(err.code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(err.message).toContain('no cniVersion');
  });

  it('rejects unsupported versions naming the supported list', () => {
    const err = thrown(() => conf({ cniVersion: '0.2.0' }));
    expect(err.code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(err.message).toContain('"0.2.0"');
    expect(err.message).toContain('"1.1.0"');
  });

  it('gates verbs by version', () => {
    expect(thrown(() => conf({ cniVersion: '0.3.1' }, 'CHECK')).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(thrown(() => conf({ cniVersion: '1.0.0' }, 'GC')).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(thrown(() => conf({ cniVersion: '1.0.0' }, 'STATUS')).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(conf({ cniVersion: '1.1.0' }, 'STATUS').cniVersion).toBe('1.1.0');
  });

  it('a cniVersion of the wrong type is an invalid config (code 7)', () => {
    const err = thrown(() => conf({ cniVersion: 1 }));
    expect(err.code).toBe(CniCode.INVALID_CONFIG);
    expect(err.message).toContain('cniVersion must be a string, not number');
  });
});

describe('parseNetConf: fields (code 7)', () => {
  it('requires name and type, validating name like libcni', () => {
    const err = thrown(() => parseNetConf('{"cniVersion":"1.0.0"}', 'ADD'));
    expect(err.code).toBe(CniCode.INVALID_CONFIG);
    expect(err.message).toBe('invalid network configuration: name is required; type is required');
    expect(thrown(() => conf({ name: 'my net' })).message).toContain(
      'name "my net" must start with a letter or digit',
    );
    expect(thrown(() => conf({ type: ['trellis'] })).message).toContain('type must be a string, not array');
  });

  it('accepts and types our own settings', () => {
    const c = conf({
      socket: '/run/custom/cni.sock',
      spoolDir: '/var/lib/custom',
      mtu: 1450,
      timeoutMs: 5000,
      logLevel: 'debug',
      dns: { nameservers: ['10.96.0.10'], search: ['cluster.local'] },
    });
    expect(c).toMatchObject({
      socket: '/run/custom/cni.sock',
      spoolDir: '/var/lib/custom',
      mtu: 1450,
      timeoutMs: 5000,
      logLevel: 'debug',
      dns: { nameservers: ['10.96.0.10'], search: ['cluster.local'] },
    });
  });

  it("takes every one of the agent's log levels, as the README says (trace, fatal and silent too)", () => {
    for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']) {
      expect(conf({ logLevel: level }).logLevel).toBe(level);
    }
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ['relative socket', { socket: 'run/cni.sock' }, 'socket must be an absolute path, not "run/cni.sock"'],
    ['numeric spoolDir', { spoolDir: 5 }, 'spoolDir must be an absolute path, not number'],
    ['mtu too small', { mtu: 67 }, 'mtu must be an integer from 68 to 65535, not 67'],
    ['mtu too large', { mtu: 65536 }, 'mtu must be an integer from 68 to 65535, not 65536'],
    ['fractional mtu', { mtu: 1500.5 }, 'mtu must be an integer from 68 to 65535, not 1500.5'],
    ['string mtu', { mtu: '1500' }, 'mtu must be an integer from 68 to 65535, not "1500"'],
    ['zero timeout', { timeoutMs: 0 }, 'timeoutMs must be an integer from 1 to 600000, not 0'],
    [
      'unknown log level',
      { logLevel: 'loud' },
      'logLevel must be one of trace, debug, info, warn, error, fatal, silent, not "loud"',
    ],
    ['dns as a list', { dns: ['10.0.0.1'] }, 'dns must be an object, not array'],
    [
      'bad nameserver',
      { dns: { nameservers: ['dns.local'] } },
      'dns.nameservers entry "dns.local" is not an IP address',
    ],
    ['args as a string', { args: 'x' }, 'args must be an object, not string'],
    [
      'capabilities not boolean',
      { capabilities: { portMappings: 'yes' } },
      'capabilities must be an object of booleans',
    ],
    ['runtimeConfig as a list', { runtimeConfig: [] }, 'runtimeConfig must be an object, not array'],
    [
      'bad port mapping',
      { runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80 }] } },
      'runtimeConfig.portMappings[0].hostPort must be an integer from 1 to 65535',
    ],
    [
      'bad bandwidth',
      { runtimeConfig: { bandwidth: { ingressRate: -1 } } },
      'runtimeConfig.bandwidth.ingressRate must be a non-negative integer',
    ],
    [
      'bad runtime ips',
      { runtimeConfig: { ips: ['10.0.0.5'] } },
      'runtimeConfig.ips[0] must be an address in CIDR form',
    ],
    [
      'bad runtime dns',
      { runtimeConfig: { dns: { servers: [1] } } },
      'runtimeConfig.dns.servers must be an array of strings',
    ],
    [
      'attachments not a list',
      { 'cni.dev/valid-attachments': {} },
      'cni.dev/valid-attachments must be an array of {containerID, ifname}, not object',
    ],
    [
      'attachment without ifname',
      { 'cni.dev/valid-attachments': [{ containerID: 'a' }] },
      'cni.dev/valid-attachments[0] must be {"containerID": string, "ifname": string}',
    ],
    ['prevResult not an object', { prevResult: 'x' }, 'prevResult must be an object, not string'],
    [
      'prevResult with a bad address',
      { prevResult: { ips: [{ address: '10.0.0.5' }] } },
      'prevResult.ips[0].address "10.0.0.5" is not an IP address in CIDR form',
    ],
  ];
  for (const [what, extra, message] of bad) {
    it(`rejects ${what}, naming the field`, () => {
      const err = thrown(() => conf(extra));
      expect(err.code).toBe(CniCode.INVALID_CONFIG);
      expect(err.message).toBe(`invalid network configuration: ${message}`);
    });
  }

  it('reports all problems at once', () => {
    const err = thrown(() => conf({ name: '', mtu: 1, socket: 'x' }));
    expect(err.message).toBe(
      'invalid network configuration: name is required; socket must be an absolute path, not "x"; ' +
        'mtu must be an integer from 68 to 65535, not 1',
    );
  });

  it('requires prevResult for CHECK only', () => {
    expect(thrown(() => conf({}, 'CHECK')).message).toBe(
      'invalid network configuration: prevResult is required for CHECK',
    );
    expect(conf({}, 'DEL').prevResult).toBeUndefined();
  });

  it('accepts the old attachments key and prefers valid-attachments when both are sent', () => {
    const a = [{ containerID: 'a', ifname: 'eth0' }];
    const b = [{ containerID: 'b', ifname: 'eth0' }];
    const v11 = { cniVersion: '1.1.0' };
    expect(conf({ ...v11, 'cni.dev/attachments': a }, 'GC').validAttachments).toEqual(a);
    expect(
      conf({ ...v11, 'cni.dev/attachments': a, 'cni.dev/valid-attachments': b }, 'GC').validAttachments,
    ).toEqual(b);
  });

  it('leaves validAttachments undefined when absent or null (unknown: delete nothing)', () => {
    expect(conf({ cniVersion: '1.1.0' }, 'GC').validAttachments).toBeUndefined();
    expect(
      conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': null }, 'GC').validAttachments,
    ).toBeUndefined();
    expect(conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] }, 'GC').validAttachments).toEqual([]);
  });

  it('keeps unknown runtimeConfig keys and args as given', () => {
    const c = conf({ runtimeConfig: { cgroupPath: '/kubepods/x' }, args: { cni: { ips: ['10.0.0.5'] } } });
    expect(c.runtimeConfig).toEqual({ cgroupPath: '/kubepods/x' });
    expect(c.args).toEqual({ cni: { ips: ['10.0.0.5'] } });
  });
});

describe('parseNetConf: a prevResult that does not parse', () => {
  // What runtimes and chained plugins have sent, each with the problem as parseNetConf names it.
  const broken: [string, unknown, RegExp][] = [
    [
      'ips[].interface out of range',
      { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', interface: 4 }] },
      /^prevResult\.ips\[0\]\.interface 4 does not index the 0 interfaces$/,
    ],
    [
      'ips[].gateway not an address',
      { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', gateway: '10.244.1' }] },
      /^prevResult\.ips\[0\]\.gateway "10\.244\.1" is not an IP address$/,
    ],
    [
      'a route without dst',
      { cniVersion: '1.0.0', routes: [{ gw: '1.2.3.4' }] },
      /^prevResult\.routes\[0\]\.dst is required$/,
    ],
    [
      'interfaces an object',
      { cniVersion: '1.0.0', interfaces: {} },
      /^prevResult\.interfaces must be an array, not object$/,
    ],
    [
      'a 0.2.0 result',
      { cniVersion: '0.2.0', ip4: { ip: '10.244.1.9/32' } },
      /^prevResult: incompatible CNI versions: config is "0\.2\.0"/,
    ],
    ['a string', 'x', /^prevResult must be an object, not string$/],
  ];
  const v11 = { cniVersion: '1.1.0' };

  for (const [what, prevResult, problem] of broken) {
    it(`${what}: ADD and CHECK refuse it (7), naming it`, () => {
      for (const verb of ['ADD', 'CHECK'] as const) {
        const err = thrown(() => conf({ prevResult }, verb));
        expect(err.code).toBe(CniCode.INVALID_CONFIG);
        expect(err.message.replace(/^invalid network configuration: /, '')).toMatch(problem);
      }
    });

    it(`${what}: DEL, GC and STATUS, which never read it, go on without it and say why`, () => {
      for (const [verb, extra] of [
        ['DEL', {}],
        ['GC', v11],
        ['STATUS', v11],
      ] as const) {
        const c = conf({ ...extra, prevResult }, verb);
        expect(c.prevResult).toBeUndefined();
        expect(c.prevResultIgnored).toMatch(problem);
      }
    });
  }

  it('DEL keeps a prevResult that parses, and still refuses a config it cannot be sure of the network of', () => {
    const good = conf({ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32' }] } }, 'DEL');
    expect(good.prevResult?.ips).toEqual([{ address: '10.244.1.9/32' }]);
    expect(good.prevResultIgnored).toBeUndefined();
    expect(thrown(() => conf({ name: 42 }, 'DEL')).code).toBe(CniCode.INVALID_CONFIG);
    expect(thrown(() => conf({ socket: 'relative' }, 'DEL')).code).toBe(CniCode.INVALID_CONFIG);
  });

  it('DEL, GC and STATUS go on without the fields only ADD and CHECK read, and say which', () => {
    const bad = {
      mtu: 1,
      dns: { nameservers: ['x'] },
      logLevel: 'loud',
      args: 3,
      runtimeConfig: [],
      timeoutMs: '5000',
    };
    for (const [verb, extra] of [
      ['DEL', {}],
      ['GC', { cniVersion: '1.1.0' }],
      ['STATUS', { cniVersion: '1.1.0' }],
    ] as const) {
      const c = conf({ ...bad, ...extra }, verb);
      expect([c.mtu, c.dns, c.logLevel, c.args, c.runtimeConfig, c.timeoutMs], verb).toEqual([
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
      ]);
      expect(c.configIgnored).toContain('timeoutMs must be an integer from 1 to 600000, not "5000"');
      expect(c.configIgnored).toContain('mtu must be an integer from 68 to 65535, not 1');
      expect(c.configIgnored).toContain('logLevel must be one of');
      expect(c.configIgnored).toContain('runtimeConfig must be an object');
    }
    for (const verb of ['ADD', 'CHECK'] as const) {
      const err = thrown(() => conf({ mtu: 1, timeoutMs: 0, prevResult: { cniVersion: '1.0.0' } }, verb));
      expect(err.message, verb).toContain('mtu must be an integer from 68 to 65535, not 1');
      expect(err.message, verb).toContain('timeoutMs must be an integer from 1 to 600000, not 0');
    }
  });
});

describe('versionRequestVersion', () => {
  it('reads the VERSION request and never throws', () => {
    expect(versionRequestVersion('{"cniVersion":"1.1.0"}')).toBe('1.1.0');
    expect(versionRequestVersion('')).toBeUndefined();
    expect(versionRequestVersion('[')).toBeUndefined();
    expect(versionRequestVersion('{"cniVersion":1}')).toBeUndefined();
    expect(versionRequestVersion(new Uint8Array([0xff]))).toBeUndefined();
  });
});
