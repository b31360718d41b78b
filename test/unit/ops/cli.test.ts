import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { K8sError, K8sReason, type NodeReader } from '../../../pkg/k8s/index.ts';
import { adminGet } from '../../../pkg/ops/admin-client.ts';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import { runOps } from './run-ops.ts';

/** `trellis-agent coverage ARGS` in-process: what it printed, its exit code, and what it asked the API for. */
async function coverage(args: string[], env: Record<string, string | undefined> = {}) {
  const readers: { kubeconfig: string | undefined; env: Readonly<Record<string, string | undefined>> }[] = [];
  const { code, out, err } = await runOps('coverage', args, {
    env,
    nodeReader: (kubeconfig, readerEnv) => {
      readers.push({ kubeconfig, env: readerEnv });
      if (kubeconfig === '/nonexistent') {
        throw new K8sError(
          'load kubeconfig',
          'kubeconfig /nonexistent (from --kubeconfig) does not exist',
          undefined,
          K8sReason.CONFIG,
        );
      }
      return { listNodes: async () => ({ items: [], problems: [] }) } as unknown as NodeReader;
    },
    now: () => 0,
  });
  return { code, out, err, readers };
}

describe('trellis-agent coverage: usage', () => {
  // 1 to 11: a healthy agent's report ages up to ~11 minutes (a 10-minute heartbeat, checked each minute).
  it.each(['0x10', '1e1', '1 0', '0', '-5', '1.5', '', '1', '10', '11'])(
    '--stale-minutes %j: exit 2, naming the flag and the heartbeat, before asking the API',
    async (raw) => {
      const r = await coverage([`--stale-minutes=${raw}`]);
      expect(r.code).toBe(2);
      expect(r.err).toBe(
        `trellis-agent coverage: --stale-minutes must be a decimal integer of at least 12 (each agent refreshes its report every 10 minutes: a shorter limit calls healthy nodes stale), got ${JSON.stringify(raw)}\n`,
      );
      expect(r.readers).toEqual([]);
    },
  );

  it.each(['12', '45'])('--stale-minutes %s is taken', async (raw) => {
    const r = await coverage(['--stale-minutes', raw, '--json']);
    expect(r.code).toBe(0);
    expect(r.readers).toHaveLength(1);
  });

  it('$KUBECONFIG is not taken for --kubeconfig: the reader gets the environment and reads the list itself', async () => {
    const env = { KUBECONFIG: '/a/config:/b/config' };
    const r = await coverage(['--json'], env);
    expect(r.code).toBe(0);
    expect(r.readers).toEqual([{ kubeconfig: undefined, env }]);
    expect((await coverage(['--kubeconfig', '/c/config'], env)).readers[0]!.kubeconfig).toBe('/c/config');
  });

  it('a kubeconfig that cannot be used is bad usage: exit 2 with its message', async () => {
    const r = await coverage(['--kubeconfig', '/nonexistent']);
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      'trellis-agent coverage: load kubeconfig: kubeconfig /nonexistent (from --kubeconfig) does not exist\n',
    );
  });
});

describe('trellis-agent operator commands: the admin socket turned off', () => {
  it("TRELLIS_ADMIN_SOCKET='' (one ConfigMap key for the agent and the CLI): exit 2, no request anywhere", async () => {
    // node:http takes socketPath '' for TCP to localhost:80: whatever listens there must not be asked.
    const { code, err } = await runOps('status', [], { env: { TRELLIS_ADMIN_SOCKET: '' } });
    expect(code).toBe(2);
    expect(err).toContain("admin socket is turned off (--admin-socket '' or TRELLIS_ADMIN_SOCKET='')");
    // doctor goes on with its own checks; its agent section says why it has none.
    await expect(adminGet('', '/status')).rejects.toThrow(/admin socket is turned off/);
  });
});

describe('trellis-agent operator commands: flags', () => {
  it.each([
    ['leases', ['--stale-minutes', '5'], '--stale-minutes means nothing to leases'],
    ['status', ['--kubeconfig', '/k'], '--kubeconfig means nothing to status'],
    ['coverage', ['--admin-socket', '/a.sock'], '--admin-socket means nothing to coverage'],
    ['status', ['--admin-socket', ''], "the agent's admin socket is turned off"],
    ['routes', ['--admin-socket', ''], "the agent's admin socket is turned off"],
    [
      'leases',
      ['--admin-socket', 'admin.sock'],
      'the admin socket must be an absolute path, got "admin.sock"',
    ],
    ['doctor', ['--admin-socket', 'admin.sock'], 'the admin socket must be an absolute path'],
  ] as const)('%s %j: exit 2, naming the flag, before doing anything', async (cmd, args, message) => {
    const { code, err } = await runOps(cmd, args);
    expect(code).toBe(2);
    expect(err.split('\n')[0]).toContain(`trellis-agent ${cmd}: ${message}`);
    expect(err.startsWith(`trellis-agent ${cmd}: `)).toBe(true);
  });
});

describe('trellis-agent doctor: could not check', () => {
  /** doctor with no agent, empty CNI dirs and `openHost` as given; --json when asked. */
  async function doctor(openHost: () => NetlinkHandle, json: boolean) {
    const dir = mkdtempSync(join(tmpdir(), 'trl-doctor-'));
    try {
      const args = ['--admin-socket', join(dir, 'admin.sock'), '--cni-conf-dir', dir, '--cni-bin-dir', dir];
      args.push('--state-dir', join(dir, 'state'), ...(json ? ['--json'] : []));
      return await runOps('doctor', args, { openHost });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const handle = (listLinks: () => Promise<[]>): { h: NetlinkHandle; closed: () => boolean } => {
    let closed = false;
    const h = {
      listLinks,
      routeTo: async () => undefined,
      close: () => {
        closed = true;
      },
    } as unknown as NetlinkHandle;
    return { h, closed: () => closed };
  };

  it('no netlink handle: exit 3 (not a finding), the reason on stderr, and with --json a report saying so', async () => {
    const open = (): NetlinkHandle => {
      throw new Error('netlink socket: EPERM');
    };
    const human = await doctor(open, false);
    expect(human.code).toBe(3);
    expect(human.out).toBe('');
    expect(human.err).toBe('trellis-agent doctor: could not check this node: netlink socket: EPERM\n');
    const json = await doctor(open, true);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.out)).toEqual({
      ok: false,
      checks: [],
      error: 'could not check this node: netlink socket: EPERM',
    } satisfies DoctorReport);
  });

  it('links that cannot be listed: exit 3, and the handle is closed', async () => {
    const { h, closed } = handle(() => Promise.reject(new Error('dump links: ENOBUFS')));
    const r = await doctor(() => h, true);
    expect(r.code).toBe(3);
    expect((JSON.parse(r.out) as DoctorReport).error).toBe('could not check this node: dump links: ENOBUFS');
    expect(closed()).toBe(true);
  });

  it('gathered, with the agent unreachable: exit 1 with the full report (a finding, not "could not check")', async () => {
    const { h } = handle(async () => []);
    const r = await doctor(() => h, true);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.out) as DoctorReport;
    expect(report).not.toHaveProperty('error');
    expect(report.checks.find((c) => c.name === 'agent')!.findings[0]!.problem).toMatch(
      /cannot reach the agent's admin socket/,
    );
    // Checks that need the agent are skipped; that alone is no exit 3.
    expect(report.checks.find((c) => c.name === 'routes')!.skipped).toMatch(/not reachable/);
  });
});

describe('trellis-agent routes', () => {
  it('exits 1 while the agent has not listed the Nodes: no drift found then says nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trl-routes-'));
    const socket = join(dir, 'admin.sock');
    let synced = false;
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ node: 'n1', synced, routes: [], drift: 0, problems: [], peers: [] }));
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const before = await runOps('routes', ['--admin-socket', socket]);
      expect(before.code).toBe(1);
      expect(before.out).toContain('not synced: the agent has no list of Nodes with this one yet');
      synced = true;
      const after = await runOps('routes', ['--admin-socket', socket]);
      expect(after.code).toBe(0);
      expect(after.out).not.toContain('not synced');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
