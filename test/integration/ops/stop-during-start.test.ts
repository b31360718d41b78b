import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { writeKubeconfig } from '../../support/apiserver/server.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * A SIGTERM while the agent is still starting (its pod deleted a moment after it was created, a
 * rollout that moves on): the start runs to its end and the agent then stops as it always does,
 * exit 0, its socket gone, rather than being killed halfway by the signal's default action.
 */
const skip = netnsSkipReason ?? builtSkipReason();

/** The real nft, which the stand-in hands over to. */
const nftPath =
  spawnSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).stdout.trim() || '/usr/sbin/nft';

const title = 'SIGTERM during start-up stops the agent the usual way';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  let agent: AgentProcess | undefined;
  let silent: ChildProcess | undefined;
  const dirs: string[] = [];
  const started: AgentProcess[] = [];
  afterAll(async () => {
    for (const a of started) {
      await a.kill();
      removeAgentDir(a.dir);
    }
    silent?.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    pool.cleanup();
  });

  it('exit 0 after "trellis agent stopped", the CNI socket removed', async () => {
    const ns = pool.add('sigstart').name;
    // A stand-in nft that holds the start (masquerading off: the start removes an earlier run's table
    // with it, after the CNI socket listens) until the test has sent its signal.
    const gate = mkdtempSync(join(tmpdir(), 'trl-sig-nft-'));
    dirs.push(gate);
    writeFileSync(
      join(gate, 'nft'),
      `#!/bin/sh\ntouch '${gate}/reached'\nwhile [ ! -e '${gate}/go' ]; do sleep 0.02; done\nexec ${nftPath} "$@"\n`,
    );
    chmodSync(join(gate, 'nft'), 0o755);
    let sentAt = -1;
    agent = startAgent({
      ns,
      podCIDRs: ['10.244.1.0/24'],
      extraArgs: ['--no-masquerade', '--no-source-check', '--firewall-check-seconds', '0'],
      env: { PATH: `${gate}:${process.env.PATH ?? ''}` },
    });
    started.push(agent);
    await vi.waitFor(() => expect(existsSync(join(gate, 'reached'))).toBe(true), {
      timeout: 15_000,
      interval: 10,
    });
    // Inside Agent.start, its socket listening, the start held: not over yet. Its log line is awaited:
    // pino writes asynchronously, so it can reach the pipe after the stand-in ran.
    await vi.waitFor(() => expect(agent!.logs.some((l) => l.msg === 'CNI socket listening')).toBe(true), {
      timeout: 5000,
      interval: 10,
    });
    sentAt = agent.logs.length;
    agent.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    expect(agent.child.exitCode).toBeNull(); // not killed halfway by the signal's default action
    writeFileSync(join(gate, 'go'), '');
    const code = await agent.exited();
    expect([code, agent.child.signalCode]).toEqual([0, null]);
    const after = agent.logs.slice(sentAt).map((l) => l.msg);
    const stopping = after.indexOf(
      'stopping: finishing in-flight CNI calls; routes, config and rules stay in place',
    );
    expect(stopping).toBeGreaterThanOrEqual(0);
    expect(after.indexOf('trellis agent stopped')).toBeGreaterThan(stopping);
    expect(existsSync(agent.socket)).toBe(false);
  });

  it('as PID 1 of its container, a SIGTERM before its modules have loaded stops it (the kernel drops what PID 1 has no handler for)', async () => {
    const ns = pool.add('sigpid1').name;
    // A module the launcher's node loads after its own preloads and before the agent's modules: it
    // says it got there and holds the start until the test has sent its signal.
    const gate = mkdtempSync(join(tmpdir(), 'trl-sig-gate-'));
    dirs.push(gate);
    writeFileSync(
      join(gate, 'gate.mjs'),
      `import { existsSync, writeFileSync } from 'node:fs';
const dir = ${JSON.stringify(gate)};
writeFileSync(dir + '/reached', '');
const wait = new Int32Array(new SharedArrayBuffer(4));
for (let i = 0; i < 2000 && !existsSync(dir + '/go'); i++) Atomics.wait(wait, 0, 0, 10);
`,
    );
    const a = startAgent({
      ns,
      podCIDRs: ['10.244.1.0/24'],
      // PID 1 of a PID namespace of its own, as in the DaemonSet's container.
      wrap: ['unshare', '--pid', '--fork', '--kill-child', '--'],
      env: { TRELLIS_NODE_FLAGS: `--import ${join(gate, 'gate.mjs')}` },
    });
    started.push(a);
    await vi.waitFor(() => expect(existsSync(join(gate, 'reached'))).toBe(true), {
      timeout: 15_000,
      interval: 10,
    });
    // The agent as this namespace sees it: unshare's child.
    const unsharePid = a.child.pid!;
    const pid = Number(readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim());
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('main.js');
    process.kill(pid, 'SIGTERM');
    writeFileSync(join(gate, 'go'), '');
    const code = await Promise.race([
      a.exited(),
      new Promise((r) => setTimeout(() => r('still running'), 20_000)),
    ]);
    expect(code).toBe(0);
    expect(a.logs.some((l) => l.msg === 'trellis agent stopped')).toBe(true);
    expect(existsSync(a.socket)).toBe(false);
  }, 40_000);

  it('an API server that accepted the list request and never answers does not hold the stop (60 s request timeout)', async () => {
    const ns = pool.add('sigsilent').name;
    // Accepts connections and never says a word: no TLS handshake, no HTTP answer.
    silent = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        "require('node:net').createServer((c) => console.log('connection')).listen(6443, '127.0.0.1', () => console.log('listening'))",
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let connections = 0;
    const listening = new Promise<void>((resolve) =>
      silent!.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('listening')) resolve();
        connections += d.toString().split('connection').length - 1;
      }),
    );
    await listening;
    const dir = mkdtempSync(join(tmpdir(), 'trl-silent-api-'));
    dirs.push(dir);
    const kubeconfig = join(dir, 'kubeconfig');
    writeKubeconfig(kubeconfig, 'https://127.0.0.1:6443');
    for (const d of ['net.d', 'bin']) mkdirSync(join(dir, d));
    const a = startAgent({
      ns,
      kubernetes: {
        nodeName: 'node-1',
        kubeconfig,
        cniConfDir: join(dir, 'net.d'),
        cniBinDir: join(dir, 'bin'),
      },
    });
    started.push(a);
    await vi.waitFor(() => expect(connections).toBeGreaterThan(0), { timeout: 15_000, interval: 50 });
    const sentAt = performance.now();
    a.child.kill('SIGTERM');
    const code = await a.exited();
    // Well inside the DaemonSet's 30 s grace period, and nowhere near the request's own 60 s timeout.
    expect(performance.now() - sentAt).toBeLessThan(10_000);
    expect([code, a.child.signalCode]).toEqual([0, null]);
    expect(a.logs.some((l) => l.msg === 'trellis agent stopped')).toBe(true);
  }, 40_000);
});
