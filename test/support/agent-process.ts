import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AGENT_BINARY } from './cni-driver.ts';
import { dirIfSignalled } from './signal-undo.ts';

/**
 * A real trellis agent process running inside a test network namespace (which it treats as its
 * host), with its own socket and state directory under a temp dir. Log lines are collected as parsed
 * JSON so tests can assert on what an operator would read.
 */
export interface AgentProcess {
  readonly ns: string;
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly spoolDir: string;
  readonly logs: Record<string, unknown>[];
  /** Lines that do not name their component exactly once (duplicate keys do not survive parsing). */
  readonly unnamed: string[];
  readonly child: ChildProcess;
  /** Resolves once the agent logged that it is serving (a stale socket file from a killed agent is not proof). */
  ready(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  /** The exit code once the agent has exited and its log was read to the end (null: killed by a signal). */
  exited(): Promise<number | null>;
  /** What the agent wrote to stderr so far (crash traces). */
  stderr(): string;
}

export interface StartAgentOptions {
  ns: string;
  /** Standalone mode (`--pod-cidr`); leave out with `kubernetes`. */
  podCIDRs?: string[];
  /** Reuse a state dir (restart tests); a fresh temp dir otherwise. */
  dir?: string;
  extraArgs?: string[];
  /**
   * Kubernetes mode: the agent reads its Node from the API and publishes the config list into
   * `cniConfDir` (used by the multi-node test bed). Without it the agent runs standalone with
   * `--no-cni-config` and metrics off.
   */
  kubernetes?: {
    nodeName: string;
    kubeconfig: string;
    cniConfDir: string;
    cniBinDir: string;
    /** Default '' (off). */
    metricsAddr?: string;
  };
  /** Standalone mode publishing its config list into `confDir`, its binaries in `binDir`. */
  publish?: { confDir: string; binDir: string };
  /** Called with every parsed log line as it arrives (live streaming). */
  onLog?: (line: Record<string, unknown>, raw: string) => void;
  /** Start the agent in its own process group, so a terminal's Ctrl-C reaches only the test driver. */
  detached?: boolean;
  /** Variables added to the agent's environment (e.g. a PATH that finds a stand-in nft first). */
  env?: Record<string, string>;
  /**
   * A command that runs the agent inside the namespace (its argv before the agent's own), e.g. an
   * `unshare` into a PID namespace of its own, as a container has.
   */
  wrap?: string[];
  /** The agent's launcher; dist/bin/trellis-agent by default (another CPU's build: arm64-agent.ts). */
  binary?: string;
  /**
   * The directory `wrap` bind-mounts at the agent's dir inside a mount namespace of its own (a
   * container's hostPath): its socket shows there to the test, not at the agent's own path.
   */
  mountedFrom?: string;
}

export function startAgent(opts: StartAgentOptions): AgentProcess {
  const dir = opts.dir ?? madeAgentDir();
  const socket = join(dir, 'cni.sock');
  const stateDir = join(dir, 'state');
  const spoolDir = join(stateDir, 'spool');
  const k8s = opts.kubernetes;
  const modeArgs =
    k8s === undefined
      ? [
          '--metrics-addr',
          '',
          ...(opts.publish === undefined
            ? ['--no-cni-config']
            : ['--cni-conf-dir', opts.publish.confDir, '--cni-bin-dir', opts.publish.binDir]),
        ]
      : [
          '--node-name',
          k8s.nodeName,
          '--kubeconfig',
          k8s.kubeconfig,
          '--cni-conf-dir',
          k8s.cniConfDir,
          '--cni-bin-dir',
          k8s.cniBinDir,
          '--metrics-addr',
          k8s.metricsAddr ?? '',
        ];
  const args = [
    'netns',
    'exec',
    opts.ns,
    ...(opts.wrap ?? []),
    opts.binary ?? AGENT_BINARY,
    ...(opts.podCIDRs ?? []).flatMap((c) => ['--pod-cidr', c]),
    '--socket',
    socket,
    '--state-dir',
    stateDir,
    ...modeArgs,
    '--log-level',
    'debug',
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn('ip', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached === true,
    ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env } }),
  });
  const { logs, unnamed } = readAgentLog(child.stdout!, opts.onLog);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = exitedAndRead(child);

  return {
    ns: opts.ns,
    dir,
    socket,
    stateDir,
    spoolDir,
    logs,
    unnamed,
    child,
    async ready() {
      const deadline = Date.now() + 15_000;
      const seen = opts.mountedFrom === undefined ? socket : join(opts.mountedFrom, 'cni.sock');
      while (!logs.some((l) => l.msg === 'trellis agent ready') || !existsSync(seen)) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `agent exited with ${child.exitCode ?? child.signalCode}: ${stderr}\n${JSON.stringify(logs)}`,
          );
        }
        if (Date.now() > deadline)
          throw new Error(`agent not ready after 15 s: ${stderr}\n${JSON.stringify(logs)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    exited: () => exited,
    stderr() {
      return stderr;
    },
  };
}

/**
 * The exit code once the process has exited and its stdout was read to the end. 'exit' can come
 * before the pipe's last lines are read, and an agent's last log lines are written just before it
 * exits: a test that reads `logs` at 'exit' can miss them on a loaded machine. A grandchild that
 * kept the pipe open would keep it from ending: 2 s after the exit is enough for the lines.
 */
export function exitedAndRead(child: ChildProcess): Promise<number | null> {
  const { stdout } = child;
  const read =
    stdout === null || stdout.readableEnded || stdout.destroyed
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          stdout.once('end', resolve);
          stdout.once('close', resolve);
        });
  const exit = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
  return exit.then(async (code) => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([read, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2_000)))]);
    clearTimeout(timer);
    return code;
  });
}

/** The undo registrations of the directories startAgent made (signal-undo.ts). */
const agentDirs = new Map<string, () => void>();

function madeAgentDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trl-agent-'));
  agentDirs.set(dir, dirIfSignalled(dir));
  return dir;
}

export function removeAgentDir(dir: string): void {
  agentDirs.get(dir)?.();
  agentDirs.delete(dir);
  if (dir.includes('trl-agent-')) rmSync(dir, { recursive: true, force: true });
}

/**
 * An agent log line names the part of the agent it comes from once: `"component":"cni"`, say. A
 * pino child of a child that names one too writes the key twice, which JSON.parse hides.
 */
export function namesOneComponent(line: string): boolean {
  return line.split('"component":').length === 2;
}

/** Collects an agent's stdout as parsed lines (a line that is no JSON as `{ raw }`), as they come. */
export function readAgentLog(
  stdout: Readable,
  onLog?: (line: Record<string, unknown>, raw: string) => void,
): { logs: Record<string, unknown>[]; unnamed: string[] } {
  const logs: Record<string, unknown>[] = [];
  const unnamed: string[] = [];
  let buf = '';
  stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        parsed = { raw: line };
      }
      logs.push(parsed);
      if (!namesOneComponent(line)) unnamed.push(line);
      onLog?.(parsed, line);
    }
  });
  return { logs, unnamed };
}
