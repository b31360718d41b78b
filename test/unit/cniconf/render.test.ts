import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildConflist, ConflistConfigError, renderConflist } from '../../../pkg/cniconf/render.ts';

const templatePath = new URL('../../../cni-conf/10-trellis.conflist.json', import.meta.url);
const defaults = { socket: '/run/trellis/cni.sock', spoolDir: '/var/lib/trellis/spool', mtu: 1500 };

describe('renderConflist', () => {
  it('with the template defaults reproduces the template exactly (one source of truth)', () => {
    const template = JSON.parse(readFileSync(templatePath, 'utf8'));
    expect(JSON.parse(renderConflist(defaults))).toEqual(template);
  });

  it('renders valid, deterministic JSON with the options applied and portmap chained after trellis', () => {
    const text = renderConflist({
      socket: '/run/x/cni.sock',
      spoolDir: '/var/lib/x',
      mtu: 1450,
      dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
    });
    expect(text.endsWith('}\n')).toBe(true);
    expect(
      renderConflist({
        socket: '/run/x/cni.sock',
        spoolDir: '/var/lib/x',
        mtu: 1450,
        dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
      }),
    ).toBe(text);
    const conf = JSON.parse(text);
    expect(conf).toEqual({
      cniVersion: '1.0.0',
      cniVersions: ['1.0.0'],
      name: 'trellis',
      plugins: [
        {
          type: 'trellis',
          socket: '/run/x/cni.sock',
          spoolDir: '/var/lib/x',
          mtu: 1450,
          dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
        },
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      ],
    });
  });

  it('can drop portmap and opt into CNI 1.1.0', () => {
    const conf = buildConflist({
      ...defaults,
      portmap: false,
      cniVersions: ['1.0.0', '1.1.0'],
      cniVersion: '1.1.0',
    });
    expect(conf.plugins.map((p) => p.type)).toEqual(['trellis']);
    expect(conf.cniVersion).toBe('1.1.0');
  });

  it('rejects bad settings, naming them', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ mtu: 1500.5 }, 'mtu'],
      [{ mtu: 67 }, 'mtu'],
      [{ mtu: 65536 }, 'mtu'],
      [{ socket: 'run/cni.sock' }, 'socket'],
      [{ spoolDir: '/var/lib/../etc' }, 'spoolDir'],
      [{ cniVersion: '0.4.0' }, 'cniVersion'],
      [{ cniVersions: ['1.0.0', '2.0.0'] }, 'cniVersions[1]'],
      [{ cniVersion: '1.1.0' }, 'cniVersion'],
      [{ dns: { nameservers: [''] } }, 'dns.nameservers'],
    ];
    for (const [patch, setting] of cases) {
      let err: unknown;
      try {
        renderConflist({ ...defaults, ...patch } as never);
      } catch (e) {
        err = e;
      }
      expect(err, setting).toBeInstanceOf(ConflistConfigError);
      expect((err as ConflistConfigError).setting).toBe(setting);
    }
  });
});

describe('contract with the shim', () => {
  it("the trellis entry, as libcni hands it to the plugin, passes the shim's netconf parser unchanged", async () => {
    const { parseNetConf } = await import('../../../pkg/cni/netconf.ts');
    const conf = buildConflist({
      socket: '/run/t/cni.sock',
      spoolDir: '/var/lib/t/spool',
      mtu: 1400,
      dns: { nameservers: ['10.96.0.10'] },
    });
    const entry = { ...conf.plugins[0], name: conf.name, cniVersion: conf.cniVersion };
    const parsed = parseNetConf(JSON.stringify(entry), 'ADD');
    expect(parsed).toMatchObject({
      type: 'trellis',
      name: 'trellis',
      socket: '/run/t/cni.sock',
      spoolDir: '/var/lib/t/spool',
      mtu: 1400,
    });
  });
});

// Debian's portmap 1.1.1, fed our portmap entry the way libcni would (name + cniVersion + prevResult).
describe.skipIf(!existsSync('/usr/lib/cni/portmap'))('the chained portmap accepts the rendered entry', () => {
  function runPortmap(cniVersion: string): { code: number; out: unknown } {
    const conf = buildConflist(defaults);
    const entry = {
      ...conf.plugins[1],
      name: conf.name,
      cniVersion,
      prevResult: {
        cniVersion,
        interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }],
        ips: [{ address: '10.244.0.5/24', interface: 0 }],
      },
    };
    const env = {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'abc',
      CNI_NETNS: '/var/run/netns/none',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/usr/lib/cni',
    };
    try {
      // No portMappings in runtimeConfig: portmap only validates and passes prevResult through.
      return {
        code: 0,
        out: JSON.parse(
          execFileSync('/usr/lib/cni/portmap', [], { env, input: JSON.stringify(entry), encoding: 'utf8' }),
        ),
      };
    } catch (e) {
      return { code: (e as { status: number }).status, out: JSON.parse((e as { stdout: string }).stdout) };
    }
  }

  it('passes prevResult through at every version the list advertises', () => {
    for (const v of buildConflist(defaults).cniVersions ?? []) {
      const r = runPortmap(v);
      expect(r.code).toBe(0);
      expect(r.out).toMatchObject({ cniVersion: v, ips: [{ address: '10.244.0.5/24' }] });
    }
  });

  it('rejects 1.1.0 (why the template does not advertise it)', () => {
    expect(runPortmap('1.1.0')).toMatchObject({
      code: 1,
      out: { code: 1, msg: 'incompatible CNI versions' },
    });
  });
});
