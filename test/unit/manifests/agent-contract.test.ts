import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { beforeAll, describe, expect, it } from 'vitest';
import { type AgentConfig, parseAgentConfig, USAGE } from '../../../pkg/agent/config.ts';
import { parseListenAddr } from '../../../pkg/observe/http-server.ts';
import { findOne, kubectlSkipReason, manifestsDir, render, repoRoot } from './support.ts';

/**
 * The manifests and the image drive the agent through flags and environment variables; this feeds the
 * rendered command lines and environment to the agent's real config parser, so a renamed flag, a
 * misspelt ConfigMap key or a port that differs from the probes fails here, not on a node.
 */

const ENTRYPOINT = '/app/dist/bin/trellis-agent';

/** The image's ENV (Dockerfile, final stage), as the containers see it. */
function imageEnv(): Record<string, string> {
  const text = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const finalStage = text.slice(text.lastIndexOf('\nFROM '));
  const env: Record<string, string> = {};
  for (const line of finalStage.split('\n').filter((l) => l.startsWith('ENV '))) {
    for (const m of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return env;
}

/** argv after the entrypoint, and the subcommand it selects ('run' when the first word is a flag). */
function commandLine(c: IContainer): { sub: string; rest: string[] } {
  const argv = [...(c.command ?? [ENTRYPOINT]), ...(c.args ?? [])];
  expect(argv[0]).toBe(ENTRYPOINT);
  const first = argv[1];
  if (first === undefined || first.startsWith('-')) return { sub: 'run', rest: argv.slice(1) };
  return { sub: first, rest: argv.slice(2) };
}

describe.skipIf(kubectlSkipReason !== undefined)(
  `manifests vs the agent's flag parser${kubectlSkipReason ? ` (skipped: ${kubectlSkipReason})` : ''}`,
  () => {
    let ds: IDaemonSet;
    let uninstallDs: IDaemonSet;
    let cm: IConfigMap;
    beforeAll(() => {
      const objects = render(manifestsDir);
      ds = findOne<IDaemonSet>(objects, 'DaemonSet', 'trellis');
      cm = findOne<IConfigMap>(objects, 'ConfigMap', 'trellis-config');
      uninstallDs = findOne<IDaemonSet>(
        render(join(manifestsDir, 'uninstall')),
        'DaemonSet',
        'trellis-uninstall',
      );
    });
    const agent = () => ds.spec!.template.spec!.containers.find((c) => c.name === 'agent')!;
    const podEnv = (): Record<string, string> => ({ ...imageEnv(), ...(cm.data ?? {}), NODE_NAME: 'node-a' });
    const parseAgent = (env: Record<string, string>): AgentConfig => {
      const { sub, rest } = commandLine(agent());
      expect(sub).toBe('run');
      return parseAgentConfig(rest, env);
    };

    it("the agent container parses, with the paths of its mounts and the probes' port", () => {
      const config = parseAgent(podEnv());
      expect(config.nodeName).toBe('node-a');
      expect(config.podCIDRs).toEqual([]); // Kubernetes mode, not standalone.
      expect(config.kubeconfig).toBeUndefined(); // In-cluster service account.
      const mounts = (agent().volumeMounts ?? []).map((m) => m.mountPath);
      for (const path of [
        config.socket,
        config.stateDir,
        config.spoolDir,
        config.cniConfDir,
        config.cniBinDir,
      ]) {
        expect(
          mounts.some((m) => path === m || path.startsWith(`${m}/`)),
          path,
        ).toBe(true);
      }
      expect(config.socket).toBe('/run/trellis/cni.sock');
      expect(config.cniConfDir).toBe('/etc/cni/net.d');
      expect(config.cniBinDir).toBe('/opt/cni/bin');
      expect(config.publishCniConfig).toBe(true);
      const port = Number(config.metricsAddr.slice(config.metricsAddr.lastIndexOf(':') + 1));
      expect(agent().ports?.map((p) => p.containerPort)).toEqual([port]);
      // Every address of both families: the kubelet probes the node IP, an IPv6 one on IPv6-only nodes.
      expect(parseListenAddr(config.metricsAddr).host).toBeUndefined();
    });

    it('the ConfigMap defaults are the agent defaults: auto, MTU detection, info, nothing exempt', () => {
      const config = parseAgent(podEnv());
      expect(config.mode).toBe('auto');
      expect(config.mtu).toBe(0);
      expect(config.logLevel).toBe('info');
      expect(config.noMasqueradeCIDRs).toEqual([]);
    });

    it('every ConfigMap key is one the agent reads (changing it changes the config)', () => {
      const probes: Record<string, [string, (c: AgentConfig) => unknown, unknown]> = {
        TRELLIS_MODE: ['vxlan', (c) => c.mode, 'vxlan'],
        TRELLIS_MTU: ['1400', (c) => c.mtu, 1400],
        TRELLIS_LOG_LEVEL: ['debug', (c) => c.logLevel, 'debug'],
        TRELLIS_NO_MASQUERADE_CIDRS: [
          '10.0.0.0/8, 192.168.0.0/16',
          (c) => c.noMasqueradeCIDRs,
          ['10.0.0.0/8', '192.168.0.0/16'],
        ],
      };
      expect(Object.keys(cm.data ?? {}).sort()).toEqual(Object.keys(probes).sort());
      for (const [key, [value, read, want]] of Object.entries(probes)) {
        expect(read(parseAgent({ ...podEnv(), [key]: value })), key).toEqual(want);
      }
      // And bad values fail fast, naming the setting.
      expect(() => parseAgent({ ...podEnv(), TRELLIS_MODE: 'ipip' })).toThrow(/--mode/);
    });

    it("install-cni parses and installs into the mounted bin dir from the image's source dir", () => {
      const init = ds.spec!.template.spec!.initContainers!.find((c) => c.name === 'install-cni')!;
      const { sub, rest } = commandLine(init);
      expect(sub).toBe('install-cni');
      expect(USAGE).toContain('trellis-agent install-cni');
      const config = parseAgentConfig(rest, { ...imageEnv(), NODE_NAME: 'node-a' }, { requireNode: false });
      expect(init.volumeMounts?.map((m) => m.mountPath)).toEqual([config.cniBinDir, config.hostProc]);
      expect(config.cniSourceDir).toBe('/app/cni-bin');
    });

    it("uninstall parses and targets exactly the agent's paths", () => {
      const init = uninstallDs.spec!.template.spec!.initContainers![0]!;
      const { sub, rest } = commandLine(init);
      expect(sub).toBe('uninstall');
      expect(USAGE).toContain('trellis-agent uninstall');
      const config = parseAgentConfig(rest, { ...imageEnv(), NODE_NAME: 'node-a' }, { requireNode: false });
      const running = parseAgent(podEnv());
      for (const key of ['socket', 'stateDir', 'spoolDir', 'cniConfDir', 'cniBinDir'] as const) {
        expect(config[key], key).toBe(running[key]);
      }
    });
  },
);
