import { describe, expect, it } from 'vitest';
import { ConfigError, parseAgentConfig, subcommandUsage } from '../../../pkg/agent/config.ts';
import { renderConflist } from '../../../pkg/cniconf/render.ts';

describe('parseAgentConfig', () => {
  it('standalone: pod CIDRs from flags, documented defaults, frozen', () => {
    const c = parseAgentConfig(['--pod-cidr', '10.244.1.0/24', '--pod-cidr', 'fd00:10:244:1::/64'], {});
    expect(c.podCIDRs).toEqual(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    expect(c).toMatchObject({
      socket: '/run/trellis/cni.sock',
      stateDir: '/var/lib/trellis',
      spoolDir: '/var/lib/trellis/spool',
      mode: 'auto',
      mtu: 0,
      logLevel: 'info',
      publishCniConfig: true,
      hostProc: '',
      netnsDir: '',
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('standalone pod CIDRs come out canonical, as the IPAM and Node objects have them', () => {
    const c = parseAgentConfig(['--pod-cidr', 'FD00:10:244:1:0::/64', '--pod-cidr', '10.244.1.0/24'], {});
    expect(c.podCIDRs).toEqual(['fd00:10:244:1::/64', '10.244.1.0/24']);
  });

  it('reads NODE_NAME and the TRELLIS_* environment the ConfigMap sets', () => {
    const c = parseAgentConfig([], {
      NODE_NAME: 'worker-1',
      TRELLIS_MODE: 'vxlan',
      TRELLIS_MTU: '1400',
      TRELLIS_LOG_LEVEL: 'debug',
      TRELLIS_NO_MASQUERADE_CIDRS: '192.168.0.0/16, 172.16.0.0/12',
      TRELLIS_ADMIN_SOCKET: '/run/trellis/ops.sock',
    });
    expect(c).toMatchObject({ nodeName: 'worker-1', mode: 'vxlan', mtu: 1400, logLevel: 'debug' });
    expect(c.noMasqueradeCIDRs).toEqual(['192.168.0.0/16', '172.16.0.0/12']);
    // The CLI reads the same variable (kubectl exec inherits the ConfigMap's environment).
    expect(c.adminSocket).toBe('/run/trellis/ops.sock');
    expect(
      parseAgentConfig(['--admin-socket', '/x.sock'], { NODE_NAME: 'n', TRELLIS_ADMIN_SOCKET: '/y.sock' })
        .adminSocket,
    ).toBe('/x.sock');
    expect(parseAgentConfig([], { NODE_NAME: 'n' }).adminSocket).toBe('/run/trellis/admin.sock');
  });

  it.each([
    [['--mode', 'bgp'], {}, '--mode must be one of auto, host-gw, vxlan, got "bgp"'],
    [['--mtu', '9'], { NODE_NAME: 'n' }, '--mtu must be a decimal integer from 68 to 65535, got "9"'],
    [['--log-level', 'loud'], { NODE_NAME: 'n' }, '--log-level must be one of'],
    [['--pod-cidr', '10.244.1.1/24'], {}, '--pod-cidr "10.244.1.1/24"'],
    [
      ['--pod-cidr', '0.0.0.0/0'],
      {},
      '--pod-cidr "0.0.0.0/0": pod CIDR 0.0.0.0/0 overlaps "this network" space',
    ],
    [['--pod-cidr', '10.244.1.0/24', '--pod-cidr', '10.245.0.0/24'], {}, 'two IPv4 ranges'],
    [['--socket', 'relative.sock', '--pod-cidr', '10.244.1.0/24'], {}, '--socket must be an absolute path'],
    [['--host-proc', 'host/proc', '--pod-cidr', '10.244.1.0/24'], {}, '--host-proc must be an absolute path'],
    [
      [
        '--socket',
        `/run/${'s'.repeat(100)}/c.sock`,
        '--admin-socket',
        '/run/a.sock',
        '--pod-cidr',
        '10.244.1.0/24',
      ],
      {},
      "--socket must be at most 107 bytes (a unix socket path's limit), got 112",
    ],
    [
      // The default admin socket sits next to --socket: 106 bytes there are 108 for admin.sock.
      ['--socket', `/${'s'.repeat(96)}/cni.sock`, '--pod-cidr', '10.244.1.0/24'],
      {},
      '--admin-socket must be at most 107 bytes',
    ],
    [
      ['--netns-dir', 'var/run/netns', '--pod-cidr', '10.244.1.0/24'],
      {},
      '--netns-dir must be an absolute path',
    ],
    [['--bogus'], { NODE_NAME: 'n' }, "Unknown option '--bogus'"],
    [
      ['--pod-cidr', '10.244.1.0/24', '--pod-cidr', 'fd00:10:244:1::/64', '--mtu', '1000'],
      {},
      '--mtu 1000 is below 1280, the smallest MTU IPv6 runs on, and --pod-cidr fd00:10:244:1::/64 is IPv6',
    ],
    [
      ['--pod-cidr', 'fd00:10:244:1::/64'],
      { TRELLIS_MTU: '1279' },
      '--mtu (from $TRELLIS_MTU) 1279 is below 1280',
    ],
    [
      [],
      { NODE_NAME: 'n', TRELLIS_NO_MASQUERADE_CIDRS: '10.0.0.1/8, 192.168.0.0/16' },
      '--no-masquerade-cidr (from $TRELLIS_NO_MASQUERADE_CIDRS): invalid noMasqueradeCIDRs[0] "10.0.0.1/8": expected a CIDR with no host bits',
    ],
    [['--no-masquerade-cidr', 'fd00::/200'], { NODE_NAME: 'n' }, 'noMasqueradeCIDRs[0] "fd00::/200"'],
    [[], {}, 'the node name is unknown: set NODE_NAME'],
  ] as [string[], Record<string, string>, string][])('%j fails naming the setting', (argv, env, message) => {
    expect(() => parseAgentConfig(argv, env)).toThrow(ConfigError);
    expect(() => parseAgentConfig(argv, env)).toThrow(message);
  });

  it.each([
    ['--mtu', '0x500'],
    ['--mtu', '1.5e3'],
    ['--mtu', '+1500'],
    ['--mtu', '1 500'],
    ['--mtu', ''],
    ['--vxlan-vni', '0x10'],
    ['--vxlan-port', '8472.0'],
    ['--resync-seconds', '6e1'],
    ['--firewall-check-seconds', '1.5'],
    ['--cni-request-timeout-ms', '0b1111101000'],
  ])('%s %j: integers are decimal digits only, and the message names the flag', (flag, raw) => {
    const argv = ['--pod-cidr', '10.244.1.0/24', flag, raw];
    expect(() => parseAgentConfig(argv, {})).toThrow(ConfigError);
    let message = '';
    try {
      parseAgentConfig(argv, {});
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.startsWith(`${flag} must be a decimal integer from `), message).toBe(true);
    expect(message.endsWith(`, got ${JSON.stringify(raw)}`), message).toBe(true);
  });

  it('takes surrounding whitespace and leading zeros, as earlier releases did (a ConfigMap block value)', () => {
    const c = parseAgentConfig(['--resync-seconds', ' 030 '], { NODE_NAME: 'n', TRELLIS_MTU: '1450\n' });
    expect(c.mtu).toBe(1450);
    expect(c.resyncMs).toBe(30_000);
    // 0 (detect) the same way.
    expect(parseAgentConfig([], { NODE_NAME: 'n', TRELLIS_MTU: '0\n' }).mtu).toBe(0);
  });

  it("every setting from the environment is taken without the YAML block's newline, not just numbers", () => {
    const c = parseAgentConfig([], {
      NODE_NAME: 'worker-1\n',
      TRELLIS_MODE: 'vxlan\n',
      TRELLIS_LOG_LEVEL: ' debug\n',
      TRELLIS_METRICS_ADDR: ':9743\n',
      TRELLIS_ADMIN_SOCKET: '/run/trellis/admin.sock\n',
    });
    expect(c).toMatchObject({
      nodeName: 'worker-1',
      mode: 'vxlan',
      logLevel: 'debug',
      metricsAddr: ':9743',
      adminSocket: '/run/trellis/admin.sock',
    });
  });

  it('a bad value from the environment names the flag and the variable it came from', () => {
    const env = { NODE_NAME: 'n' };
    expect(() => parseAgentConfig([], { ...env, TRELLIS_MTU: '0x500' })).toThrow(
      '--mtu (from $TRELLIS_MTU) must be a decimal integer from 68 to 65535, got "0x500"',
    );
    expect(() => parseAgentConfig([], { ...env, TRELLIS_VXLAN_PORT: '1e3' })).toThrow(
      '--vxlan-port (from $TRELLIS_VXLAN_PORT) must be',
    );
    expect(() => parseAgentConfig([], { ...env, TRELLIS_MODE: 'bgp' })).toThrow(
      '--mode (from $TRELLIS_MODE) must be one of',
    );
    expect(() => parseAgentConfig([], { ...env, TRELLIS_NO_MASQUERADE_CIDRS: '10.0.0.1/8' })).toThrow(
      '--no-masquerade-cidr (from $TRELLIS_NO_MASQUERADE_CIDRS): ',
    );
    // The flag wins over the environment, so a good flag hides a bad variable.
    expect(parseAgentConfig(['--mtu', '1400'], { ...env, TRELLIS_MTU: '0x500' }).mtu).toBe(1400);
    expect(parseAgentConfig([], { ...env, TRELLIS_MTU: '1400', TRELLIS_VXLAN_VNI: '77' })).toMatchObject({
      mtu: 1400,
      vxlanVni: 77,
    });
    expect(parseAgentConfig(['--resync-seconds', '5'], env).resyncMs).toBe(5000);
  });

  it('reads the host firewall every 60 s and accepts its pod CIDRs there by default; 0 and --no-accept-forward turn that off', () => {
    const env = { NODE_NAME: 'n' };
    expect(parseAgentConfig([], env).firewallCheckMs).toBe(60_000);
    expect(parseAgentConfig(['--firewall-check-seconds', '0'], env).firewallCheckMs).toBe(0);
    expect(parseAgentConfig(['--firewall-check-seconds', '5'], env).firewallCheckMs).toBe(5000);
    expect(parseAgentConfig([], env).acceptForward).toBe(true);
    expect(parseAgentConfig(['--no-accept-forward'], env).acceptForward).toBe(false);
  });

  it.each([
    ['--socket', 'rel.sock'],
    ['--state-dir', 'rel'],
    ['--spool-dir', 'spool'],
    ['--cni-conf-dir', 'net.d'],
    ['--cni-bin-dir', 'relative'],
  ])('%s %s: a relative path is refused naming the flag, not an internal key', (flag, path) => {
    expect(() => parseAgentConfig([flag, path], {}, { requireNode: false })).toThrow(
      `${flag} must be an absolute path, got "${path}"`,
    );
  });

  it('paths with a trailing slash or doubled slashes come out tidy, so the CNI config they go into renders', () => {
    const c = parseAgentConfig(
      [
        '--state-dir',
        '/var/lib/trellis/',
        '--socket',
        '/run/trellis//cni.sock',
        '--cni-conf-dir',
        '/etc/cni/net.d/',
        '--cni-bin-dir',
        '/opt/cni/./bin/',
        '--netns-dir',
        '/run/netns/',
        '--host-proc',
        '/host/proc/',
      ],
      {},
      { requireNode: false },
    );
    expect(c).toMatchObject({
      stateDir: '/var/lib/trellis',
      spoolDir: '/var/lib/trellis/spool',
      socket: '/run/trellis/cni.sock',
      adminSocket: '/run/trellis/admin.sock',
      cniConfDir: '/etc/cni/net.d',
      cniBinDir: '/opt/cni/bin',
      netnsDir: '/run/netns',
      hostProc: '/host/proc',
    });
    // Before, `${stateDir}/spool` was /var/lib/trellis//spool, which the renderer refuses: every pass
    // failed at publishing and the agent never became ready.
    expect(() => renderConflist({ socket: c.socket, spoolDir: c.spoolDir, mtu: 1500 })).not.toThrow();
    expect(parseAgentConfig(['--spool-dir', '/srv//spool/'], {}, { requireNode: false }).spoolDir).toBe(
      '/srv/spool',
    );
  });

  it.each(['foo', '9743', 'h:70000', ':09743', '[::1]9743', '1.2.3.4:'])(
    '--metrics-addr %j is refused at parse, naming the flag',
    (addr) => {
      expect(() => parseAgentConfig(['--metrics-addr', addr], { NODE_NAME: 'n' })).toThrow(ConfigError);
      expect(() => parseAgentConfig(['--metrics-addr', addr], { NODE_NAME: 'n' })).toThrow(
        `--metrics-addr must be HOST:PORT, [IPv6]:PORT or :PORT, or '' to disable, got ${JSON.stringify(addr)}`,
      );
    },
  );

  it('--metrics-addr: the accepted forms, and the variable named when the value came from it', () => {
    const env = { NODE_NAME: 'n' };
    for (const addr of ['', ':9743', '0.0.0.0:9743', '[::1]:0', 'localhost:9743']) {
      expect(parseAgentConfig(['--metrics-addr', addr], env).metricsAddr).toBe(addr);
    }
    expect(parseAgentConfig([], env)).toMatchObject({
      metricsAddr: ':9743',
      names: { metricsAddr: '--metrics-addr' },
    });
    expect(parseAgentConfig([], { ...env, TRELLIS_METRICS_ADDR: '127.0.0.1:1' }).names.metricsAddr).toBe(
      '--metrics-addr (from $TRELLIS_METRICS_ADDR)',
    );
    expect(() => parseAgentConfig([], { ...env, TRELLIS_METRICS_ADDR: 'foo' })).toThrow(
      `--metrics-addr (from $TRELLIS_METRICS_ADDR) must be HOST:PORT, [IPv6]:PORT or :PORT, or '' to disable, got "foo"`,
    );
  });

  it('--kubeconfig is the flag alone: $KUBECONFIG, a list, is left to loadKubeConfig', () => {
    const env = { NODE_NAME: 'n', KUBECONFIG: '/a/config:/b/config' };
    expect(parseAgentConfig([], env).kubeconfig).toBeUndefined();
    expect(parseAgentConfig(['--kubeconfig', '/c/config'], env).kubeconfig).toBe('/c/config');
    expect(parseAgentConfig(['--kubeconfig', ''], env).kubeconfig).toBeUndefined();
  });

  it('subcommands that need no node (install-cni, uninstall) do not demand a node name', () => {
    expect(parseAgentConfig(['--cni-bin-dir', '/tmp/x'], {}, { requireNode: false }).cniBinDir).toBe(
      '/tmp/x',
    );
  });
});

describe('parseAgentConfig: an MTU below 1280 and IPv6 pod CIDRs', () => {
  it('IPv4 alone takes it, and 0 (detect) and 1280 are taken with IPv6', () => {
    expect(parseAgentConfig(['--pod-cidr', '10.244.1.0/24', '--mtu', '1000'], {}).mtu).toBe(1000);
    const v6 = ['--pod-cidr', 'fd00:10:244:1::/64'];
    expect(parseAgentConfig([...v6, '--mtu', '0'], {}).mtu).toBe(0);
    expect(parseAgentConfig([...v6, '--mtu', '1280'], {}).mtu).toBe(1280);
    // Kubernetes mode: the pod CIDRs come with the Node (the agent then stays not ready).
    expect(parseAgentConfig(['--mtu', '1000'], { NODE_NAME: 'n' }).mtu).toBe(1000);
  });
});

describe('subcommandUsage', () => {
  const flagsOf = (text: string) => [...text.matchAll(/^ {2}--([a-z-]+)/gm)].map((m) => m[1]);

  it('lists just the flags uninstall reads, each one the parser takes', () => {
    const text = subcommandUsage('uninstall');
    expect(text).toMatch(/^usage: trellis-agent uninstall \[flags\]/);
    expect(flagsOf(text)).toEqual([
      'socket',
      'state-dir',
      'spool-dir',
      'cni-conf-dir',
      'cni-bin-dir',
      'admin-socket',
      'log-level',
      'uninstall-wait-seconds',
    ]);
    expect(text).not.toContain('--pod-cidr');
    const config = parseAgentConfig(
      ['--socket=/s/c.sock', '--state-dir=/st', '--spool-dir=/sp', '--cni-conf-dir=/cc', '--cni-bin-dir=/cb'],
      {},
      { requireNode: false },
    );
    expect([config.socket, config.stateDir, config.spoolDir, config.cniConfDir, config.cniBinDir]).toEqual([
      '/s/c.sock',
      '/st',
      '/sp',
      '/cc',
      '/cb',
    ]);
  });

  it("keeps a flag's continuation lines (install-cni's --cni-source-dir)", () => {
    const text = subcommandUsage('install-cni');
    expect(flagsOf(text)).toEqual(['cni-bin-dir', 'cni-source-dir', 'host-proc', 'log-level']);
    expect(text).toContain('loopback and portmap are copied only when the bin dir has none');
    expect(text).toContain("install-cni's new trellis before it is");
    expect(text).not.toContain('--netns-dir');
  });
});
