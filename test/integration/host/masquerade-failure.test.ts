import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * An nftables table the agent cannot write (an nft that refuses everything stands in here) leaves
 * pods leaving the cluster unmasqueraded while routes and pods work on: the pass still counts, so
 * readiness stays. It must show anyway: the reconcile line at warn, a counter, `status` and `doctor`.
 */
const skip = netnsSkipReason ?? builtSkipReason();
const PORT = 19745;

const title = 'a masquerade table nft cannot write shows in status, doctor, metrics and the log (real agent)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  const bin = mkdtempSync(join(tmpdir(), 'trl-nft-'));
  let agent: AgentProcess | undefined;

  afterAll(async () => {
    await agent?.kill();
    if (agent !== undefined) removeAgentDir(agent.dir);
    pool.cleanup();
    rmSync(bin, { recursive: true, force: true });
  });

  /** `trellis-agent ARGS` in the node's namespace, as `kubectl exec` would run it. */
  const cli = (ns: string, ...args: string[]) =>
    spawnSync('ip', ['netns', 'exec', ns, AGENT_BINARY, ...args], { encoding: 'utf8', timeout: 30_000 });

  it('is reported, and clears once nft works again', async () => {
    writeFileSync(
      join(bin, 'nft'),
      '#!/bin/sh\necho "Error: Could not process rule: Operation not supported" >&2\nexit 1\n',
    );
    chmodSync(join(bin, 'nft'), 0o755);
    const ns = pool.add('masqf', { loUp: true }).name;
    agent = startAgent({
      ns,
      podCIDRs: ['10.244.1.0/24'],
      extraArgs: ['--metrics-addr', `127.0.0.1:${PORT}`],
      env: { PATH: `${bin}:${process.env.PATH ?? ''}` },
    });
    await agent.ready();
    const reconciled = agent.logs.find((l) => l.msg === 'reconciled');
    expect(reconciled).toMatchObject({ level: 'warn', masq: 'failed' });

    const status = cli(ns, 'status', '--socket', agent.socket, '--json');
    const s = JSON.parse(status.stdout) as StatusView;
    expect(s.masquerade?.lastError).toContain('Operation not supported');
    expect(cli(ns, 'status', '--socket', agent.socket).stdout).toMatch(
      /masquerade: +FAILING: the nftables table/,
    );

    const doctor = cli(
      ns,
      'doctor',
      '--socket',
      agent.socket,
      '--json',
      '--cni-conf-dir',
      bin,
      '--cni-bin-dir',
      bin,
    );
    const report = JSON.parse(doctor.stdout) as DoctorReport;
    expect(doctor.status).toBe(1);
    expect(report.checks.find((c) => c.name === 'masquerade')?.findings[0]?.problem).toMatch(
      /could not write its nftables table: .*Operation not supported/,
    );

    const metrics = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `fetch('http://127.0.0.1:${PORT}/metrics').then(r => r.text()).then(t => console.log(t))`,
      ],
      { encoding: 'utf8' },
    ).stdout;
    expect(Number(/^trellis_masquerade_failures_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);

    // nft works again: the pass the controller retries (a failed table counts as a partial pass) writes
    // the table, and the error is gone from status.
    const real = spawnSync('sh', ['-c', 'command -v nft'], {
      encoding: 'utf8',
      env: { PATH: '/usr/sbin:/sbin:/usr/bin:/bin' },
    }).stdout.trim();
    writeFileSync(join(bin, 'nft'), `#!/bin/sh\nexec ${real} "$@"\n`);
    for (let i = 0; ; i++) {
      const now = JSON.parse(cli(ns, 'status', '--socket', agent.socket, '--json').stdout) as StatusView;
      if (now.masquerade?.lastError === undefined) break;
      expect(i, 'the error cleared by a retried pass').toBeLessThan(150);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(
      spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'trellis'], { encoding: 'utf8' })
        .stdout,
    ).toContain('masquerade');
  }, 60_000);
});
