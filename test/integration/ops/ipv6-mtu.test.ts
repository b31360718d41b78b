import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { Testbed, type TestbedNode, testbedSkipReason } from '../../support/testbed/index.ts';

/**
 * A pod MTU below 1280 on a node with an IPv6 pod CIDR (Kubernetes mode, where the pod CIDRs come
 * with the Node): every ADD would fail, so the agent must stay not ready and publish no config list
 * (a kubelet would otherwise start pods into it), and say why in its log, status and doctor.
 */
const skip = testbedSkipReason();

function cliJson<T>(node: TestbedNode, cmd: string): { code: number | null; doc: T } {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', node.ns, AGENT_BINARY, cmd, '--socket', node.agent!.socket, '--json'],
    { encoding: 'utf8', timeout: 30_000 },
  );
  return { code: r.status, doc: JSON.parse(r.stdout) as T };
}

const title = 'a pod MTU IPv6 cannot run on keeps a dual-stack node not ready';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let node: TestbedNode;

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 1 }] });
    [node] = tb.nodes() as [TestbedNode];
  }, 90_000);
  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('--mtu 1000: not ready, nothing published, the reason in the log, status and doctor; 1280 then works', async () => {
    await tb.stopAgent(node.name);
    // A fresh node: no config list from an earlier run.
    rmSync(tb.conflistPath(node.name));
    const marks = node.logs.length;
    await tb.startAgent(node.name, { waitReady: false, args: ['--mtu', '1000'] });
    await vi.waitFor(
      () =>
        expect(
          node.logs
            .slice(marks)
            .find((l) => l.level === 'error' && String(l.msg).startsWith('pod MTU 1000 (configured')),
        ).toBeDefined(),
      { timeout: 30_000, interval: 100 },
    );
    const status = cliJson<StatusView>(node, 'status');
    expect(status.code).toBe(1);
    expect(status.doc.ready).toBe(false);
    expect(status.doc.notReadyReason).toContain('a pod MTU of 1280 or more (pod MTU 1000');
    expect(status.doc.mtuProblem).toMatch(/pod CIDR fd00:.* is IPv6/);
    const doctor = cliJson<DoctorReport>(node, 'doctor');
    expect(doctor.code).toBe(1);
    const mtu = doctor.doc.checks.find((c) => c.name === 'mtu');
    expect(mtu?.findings.map((f) => f.problem).join('\n')).toContain('every pod ADD would fail');
    expect(existsSync(tb.conflistPath(node.name))).toBe(false);
    expect(node.logs.slice(marks).some((l) => l.msg === 'trellis agent ready')).toBe(false);

    await tb.stopAgent(node.name);
    await tb.startAgent(node.name, { args: ['--mtu', '1280'] });
    expect(tb.conflist(node.name).plugins[0]).toMatchObject({ type: 'trellis', mtu: 1280 });
    const pod = await tb.addPod(node.name);
    expect(pod.v6).toBeDefined();
  }, 90_000);
});
