import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';
import { ip, NetnsPool, netnsSkipReason, nodeIn } from '../../support/netns.ts';

/**
 * dist/bin/trellis-agent started with a bad setting, inside a throwaway network namespace (its host):
 * it must stop at start with one line that names the setting, and leave the node as it was: no config
 * list in --cni-conf-dir, no route, no CNI socket.
 */
const skip = netnsSkipReason ?? builtSkipReason();
/** Binds 127.0.0.1:9743 and says so on stdout, then waits to be killed. */
const HOLD_PORT = "require('node:net').createServer().listen(9743, '127.0.0.1', () => console.log('bound'))";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout's JSON log lines. */
  logs: Record<string, unknown>[];
}

describe.skipIf(skip !== undefined)(`agent start errors${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const pool = new NetnsPool();
  let ns: string;
  let dir: string;
  let confDir: string;
  let binDir: string;

  beforeEach(() => {
    ns = pool.add('cfg').name;
    dir = mkdtempSync(join(tmpdir(), 'trl-agent-cfg-'));
    confDir = join(dir, 'net.d');
    binDir = join(dir, 'bin');
    mkdirSync(confDir);
    mkdirSync(binDir);
    // What the config list needs, so an agent that got as far as its first pass would publish it.
    for (const name of ['trellis', 'loopback', 'portmap']) {
      writeFileSync(join(binDir, name), '#!/bin/sh\nexit 1\n');
      chmodSync(join(binDir, name), 0o755);
    }
  });
  afterEach(() => {
    pool.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The agent in the test namespace, standalone unless `--node-name` is among `args` (Kubernetes mode);
   * `env` replaces the environment (PATH kept).
   */
  function agent(args: string[], env: Record<string, string> = {}): Run {
    const standalone = args.includes('--node-name') ? [] : ['--pod-cidr', '10.244.1.0/24'];
    return run(
      [
        ...standalone,
        '--socket',
        join(dir, 'cni.sock'),
        '--state-dir',
        join(dir, 'state'),
        '--cni-conf-dir',
        confDir,
        '--cni-bin-dir',
        binDir,
        ...args,
      ],
      env,
    );
  }

  /** `trellis-agent ARGS` in the test namespace. */
  function run(args: string[], env: Record<string, string> = {}): Run {
    const r = spawnSync('ip', ['netns', 'exec', ns, AGENT_BINARY, ...args], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    const logs = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, logs };
  }

  function expectNodeUntouched(r: Run): void {
    const what = `${r.stdout}\n${r.stderr}`;
    expect(readdirSync(confDir), what).toEqual([]);
    expect(existsSync(join(dir, 'cni.sock')), what).toBe(false);
    expect(ip(ns, 'route', 'show', 'proto', String(TRELLIS_ROUTE_PROTOCOL)).trim(), what).toBe('');
    expect(r.logs.map((l) => l.msg)).not.toContain('trellis agent ready');
    expect(r.logs.map((l) => l.msg)).not.toContain('CNI config published');
  }

  it('--metrics-addr foo: exit 2 with one line naming the flag, before anything starts', () => {
    const r = agent(['--metrics-addr', 'foo']);
    expect(r.code, r.stdout).toBe(2);
    expect(r.stderr).toBe(
      `trellis-agent: --metrics-addr must be HOST:PORT, [IPv6]:PORT or :PORT, or '' to disable, got "foo"\n`,
    );
    expectNodeUntouched(r);
  });

  it('a socket path under a file: exit 2 naming --socket, and no state directory made', () => {
    writeFileSync(join(dir, 'run'), '');
    const r = agent(['--socket', join(dir, 'run', 'cni.sock')]);
    expect(r.code, r.stdout).toBe(2);
    expect(r.stderr).toBe(
      `trellis-agent: --socket ${join(dir, 'run', 'cni.sock')}: its directory ${join(dir, 'run')} is not a directory\n`,
    );
    expect(existsSync(join(dir, 'state'))).toBe(false);
    expectNodeUntouched(r);
  });

  it('$TRELLIS_METRICS_ADDR foo: exit 2, naming the variable', () => {
    const r = agent([], { TRELLIS_METRICS_ADDR: 'foo' });
    expect(r.code, r.stdout).toBe(2);
    expect(r.stderr).toMatch(/^trellis-agent: --metrics-addr \(from \$TRELLIS_METRICS_ADDR\) must be /);
    expectNodeUntouched(r);
  });

  it('an address the node does not have: exit 1 naming --metrics-addr, no config list, no route, no socket', () => {
    const r = agent(['--metrics-addr', '192.0.2.77:9743']);
    expect(r.code, r.stdout).toBe(1);
    const fatal = r.logs.find((l) => l.level === 'fatal');
    expect(fatal, r.stdout).toMatchObject({ msg: 'agent failed to start' });
    expect(String(fatal!.error)).toMatch(
      /^--metrics-addr 192\.0\.2\.77:9743 cannot be bound: .*EADDRNOTAVAIL/,
    );
    expect(r.logs.map((l) => l.msg)).not.toContain('CNI socket listening');
    expectNodeUntouched(r);
  });

  it('a port another process holds: exit 1, and the message asks whether another agent runs', async () => {
    // Another agent's listener, as far as the new one can tell: a process bound to the port in the namespace.
    const holder = nodeIn(ns, HOLD_PORT, 'inherit');
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`port holder exited with ${code}`)));
      });
      const r = agent(['--metrics-addr', '127.0.0.1:9743']);
      expect(r.code, r.stdout).toBe(1);
      const fatal = r.logs.find((l) => l.level === 'fatal');
      expect(String(fatal?.error)).toMatch(
        /^--metrics-addr 127\.0\.0\.1:9743 cannot be bound: .*EADDRINUSE.* \(is another trellis agent running on this node\?\)$/,
      );
      expectNodeUntouched(r);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('a start that fails after the first pass began (admin socket): the pass in flight publishes nothing', () => {
    // A directory where the socket goes: it cannot be bound there. (A file where its directory should
    // be, and a path longer than a unix socket address holds, are refused before the start.)
    const admin = join(dir, 'admin-dir.sock');
    mkdirSync(join(admin, 'in-the-way'), { recursive: true });
    const r = agent(['--metrics-addr', '', '--admin-socket', admin]);
    expect(r.code, r.stdout).toBe(1);
    expect(
      r.logs.find((l) => l.level === 'fatal'),
      r.stdout,
    ).toMatchObject({ msg: 'agent failed to start' });
    expect(readdirSync(confDir), r.stdout).toEqual([]);
    expect(r.logs.map((l) => l.msg)).not.toContain('trellis agent ready');
  });

  /** Exit 2 and one line on stderr, the message, without a stack trace. */
  function expectUsageError(r: Run, message: string | RegExp): void {
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(2);
    expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    if (typeof message === 'string') expect(r.stderr).toBe(`${message}\n`);
    else expect(r.stderr).toMatch(message);
  }

  it('a kubeconfig that cannot be used: exit 2, one line naming --kubeconfig or $KUBECONFIG, no stack', () => {
    const node = ['--node-name', 'n1'];
    const missing = join(dir, 'missing');
    expectUsageError(
      agent([...node, '--kubeconfig', missing]),
      `trellis-agent: load kubeconfig: kubeconfig ${missing} (from --kubeconfig) does not exist`,
    );
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'clusters: [\n');
    expectUsageError(
      agent([...node, '--kubeconfig', bad]),
      new RegExp(
        `^trellis-agent: load kubeconfig: kubeconfig ${bad} \\(from --kubeconfig\\) could not be read: `,
      ),
    );
    expectUsageError(
      agent(node),
      'trellis-agent: load kubeconfig: no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, or run in a pod with a service account',
    );
    // A list, as kubectl takes it: entries that do not exist are skipped, the first that does is read.
    expectUsageError(
      agent(node, { KUBECONFIG: `${missing}:${bad}` }),
      new RegExp(
        `^trellis-agent: load kubeconfig: kubeconfig ${bad} \\(from \\$KUBECONFIG\\) could not be read: `,
      ),
    );
    expectUsageError(
      agent(node, { KUBECONFIG: `${missing}:${missing}2` }),
      `trellis-agent: load kubeconfig: none of the kubeconfigs $KUBECONFIG lists exists: ${missing}, ${missing}2`,
    );
    expectUsageError(
      run(['coverage', '--kubeconfig', missing]),
      `trellis-agent coverage: load kubeconfig: kubeconfig ${missing} (from --kubeconfig) does not exist`,
    );
    expect(existsSync(join(dir, 'state')), 'the agent took its state dir').toBe(false);
  });
});
