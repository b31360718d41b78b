import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { childOutput } from './child-output.ts';

/**
 * Drives CNI plugins the way a container runtime (libcni) does: env + config on stdin, one process
 * per plugin. For a config list, each plugin gets `name`, `cniVersion` and (after the first)
 * `prevResult` injected; DEL runs the list in reverse.
 */

export const REPO_ROOT = join(import.meta.dirname, '..', '..');
export const SHIM_BINARY = join(REPO_ROOT, 'dist', 'bin', 'trellis');
export const AGENT_BINARY = join(REPO_ROOT, 'dist', 'bin', 'trellis-agent');
/** Debian's reference plugins (containernetworking-plugins). */
export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';

/** What install-cni would leave in the CNI bin dir, as symlinks (the agent publishes its config only then). */
export function fakeCniBinDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  symlinkSync(SHIM_BINARY, join(dir, 'trellis'));
  for (const p of ['portmap', 'loopback']) symlinkSync(join(REFERENCE_PLUGIN_DIR, p), join(dir, p));
}

export function builtSkipReason(): string | undefined {
  if (!existsSync(SHIM_BINARY) || !existsSync(AGENT_BINARY))
    return 'needs `npm run build` (dist/bin/trellis)';
  return undefined;
}

export function referencePluginsSkipReason(...names: string[]): string | undefined {
  for (const n of names) {
    if (!existsSync(join(REFERENCE_PLUGIN_DIR, n))) {
      return `needs the reference CNI plugin ${n} (apt-get install containernetworking-plugins)`;
    }
  }
  return undefined;
}

export interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Parsed stdout when it is JSON. */
  json: unknown;
}

export interface CniCall {
  command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  /** CNI_PATH; defaults to the dist/bin and reference plugin dirs. */
  path?: string;
  /** Extra or overriding environment (e.g. to drop a variable set it to undefined). */
  env?: Record<string, string | undefined>;
  /**
   * The test namespace that plays the node: the plugin runs inside it, as a runtime runs plugins in
   * the host's namespace. Required for anything but the trellis shim, because reference plugins
   * (portmap, bandwidth) program iptables/tc where they run: never in the root namespace.
   */
  hostNetns?: string;
}

export async function runPlugin(binary: string, call: CniCall, stdin: string | Buffer): Promise<PluginRun> {
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname,
    CNI_ARGS: call.args,
    CNI_PATH: call.path ?? `${join(REPO_ROOT, 'dist', 'bin')}:${REFERENCE_PLUGIN_DIR}`,
    ...call.env,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  if (call.hostNetns === undefined && binary !== SHIM_BINARY) {
    throw new Error(`refusing to run ${binary} outside a test namespace: set hostNetns`);
  }
  const [cmd, argv] =
    call.hostNetns === undefined ? [binary, []] : ['ip', ['netns', 'exec', call.hostNetns, binary]];
  const child = spawn(cmd, argv, { env: env as NodeJS.ProcessEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => {});
  child.stdin.end(stdin);
  const { code, stdout, stderr } = await childOutput(child);
  let json: unknown;
  try {
    json = stdout.trim() === '' ? undefined : JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code, stdout, stderr, json };
}

export interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

export function pluginBinary(type: string): string {
  if (type === 'trellis') return SHIM_BINARY;
  return join(REFERENCE_PLUGIN_DIR, type);
}

/** libcni's per-plugin config: the plugin object plus name, cniVersion and prevResult. */
export function pluginConfig(list: ConfList, plugin: Record<string, unknown>, prevResult?: unknown): string {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return JSON.stringify(conf);
}

/** ADD through a whole config list; returns the final result (or the first failure). */
export async function addList(list: ConfList, call: Omit<CniCall, 'command'>): Promise<PluginRun> {
  let prev: unknown;
  let last: PluginRun | undefined;
  for (const plugin of list.plugins) {
    last = await runPlugin(
      pluginBinary(String(plugin.type)),
      { ...call, command: 'ADD' },
      pluginConfig(list, plugin, prev),
    );
    if (last.code !== 0) return last;
    prev = last.json;
  }
  return last!;
}

/** DEL through a config list in reverse order, with prevResult when known. */
export async function delList(
  list: ConfList,
  call: Omit<CniCall, 'command'>,
  prevResult?: unknown,
): Promise<PluginRun[]> {
  const runs: PluginRun[] = [];
  for (const plugin of [...list.plugins].reverse()) {
    runs.push(
      await runPlugin(
        pluginBinary(String(plugin.type)),
        { ...call, command: 'DEL' },
        pluginConfig(list, plugin, prevResult),
      ),
    );
  }
  return runs;
}

export async function checkList(
  list: ConfList,
  call: Omit<CniCall, 'command'>,
  prevResult: unknown,
): Promise<PluginRun[]> {
  const runs: PluginRun[] = [];
  for (const plugin of list.plugins) {
    runs.push(
      await runPlugin(
        pluginBinary(String(plugin.type)),
        { ...call, command: 'CHECK' },
        pluginConfig(list, plugin, prevResult),
      ),
    );
  }
  return runs;
}
