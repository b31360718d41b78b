import { describe, expect, it } from 'vitest';
import { ConfigError, parseAgentConfig } from '../../../pkg/agent/config.ts';

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
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads NODE_NAME and the TRELLIS_* environment the ConfigMap sets', () => {
    const c = parseAgentConfig([], {
      NODE_NAME: 'worker-1',
      TRELLIS_MODE: 'vxlan',
      TRELLIS_MTU: '1400',
      TRELLIS_LOG_LEVEL: 'debug',
      TRELLIS_NO_MASQUERADE_CIDRS: '192.168.0.0/16, 172.16.0.0/12',
    });
    expect(c).toMatchObject({ nodeName: 'worker-1', mode: 'vxlan', mtu: 1400, logLevel: 'debug' });
    expect(c.noMasqueradeCIDRs).toEqual(['192.168.0.0/16', '172.16.0.0/12']);
  });

  it.each([
    [['--mode', 'bgp'], {}, '--mode must be one of auto, host-gw, vxlan, got "bgp"'],
    [['--mtu', '9'], { NODE_NAME: 'n' }, '--mtu must be an integer from 68 to 65535, got "9"'],
    [['--log-level', 'loud'], { NODE_NAME: 'n' }, '--log-level must be one of'],
    [['--pod-cidr', '10.244.1.1/24'], {}, '--pod-cidr "10.244.1.1/24"'],
    [['--pod-cidr', '10.244.1.0/24', '--pod-cidr', '10.245.0.0/24'], {}, 'two IPv4 ranges'],
    [['--socket', 'relative.sock', '--pod-cidr', '10.244.1.0/24'], {}, 'socket must be an absolute path'],
    [['--bogus'], { NODE_NAME: 'n' }, "Unknown option '--bogus'"],
    [
      [],
      { NODE_NAME: 'n', TRELLIS_NO_MASQUERADE_CIDRS: '10.0.0.1/8, 192.168.0.0/16' },
      '--no-masquerade-cidr: invalid noMasqueradeCIDRs[0] "10.0.0.1/8": expected a CIDR with no host bits',
    ],
    [['--no-masquerade-cidr', 'fd00::/200'], { NODE_NAME: 'n' }, 'noMasqueradeCIDRs[0] "fd00::/200"'],
    [[], {}, 'the node name is unknown: set NODE_NAME'],
  ] as [string[], Record<string, string>, string][])('%j fails naming the setting', (argv, env, message) => {
    expect(() => parseAgentConfig(argv, env)).toThrow(ConfigError);
    expect(() => parseAgentConfig(argv, env)).toThrow(message);
  });

  it('subcommands that need no node (install-cni, uninstall) do not demand a node name', () => {
    expect(parseAgentConfig(['--cni-bin-dir', '/tmp/x'], {}, { requireNode: false }).cniBinDir).toBe(
      '/tmp/x',
    );
  });
});
