import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, vi } from 'vitest';
import { REPO_ROOT } from '../../support/cni-driver.ts';
import { ip } from '../../support/netns.ts';
import {
  addrOf,
  formatLogLine,
  formatMatrix,
  nodeObject,
  planNodes,
  podCIDROf,
  summarizeMatrix,
  Testbed,
  testbedSkipReason,
} from '../../support/testbed/index.ts';

/**
 * The test bed itself and the demo: teardown leaves nothing even when interrupted half-way through
 * start-up, and `npm run demo -- --check` passes and cleans up. The first block is pure and runs
 * anywhere.
 */
const skip = testbedSkipReason();
const execFileP = promisify(execFile);
const DEMO = join(REPO_ROOT, 'scripts', 'demo.ts');

describe('test bed plan and reports (pure)', () => {
  it('numbers nodes across segments and keeps every address inside the test ranges', () => {
    const nodes = planNodes([{ nodes: 2 }, { nodes: 1 }]);
    expect(nodes.map((n) => [n.name, n.segment, n.v4, n.v6, n.gateway4])).toEqual([
      ['node-1', 0, '10.100.0.11', 'fd00:100::11', '10.100.0.1'],
      ['node-2', 0, '10.100.0.12', 'fd00:100::12', '10.100.0.1'],
      ['node-3', 1, '10.100.1.13', 'fd00:100:1::13', '10.100.1.1'],
    ]);
    expect(nodes[2]!.podCIDRs).toEqual(['10.244.3.0/24', 'fd00:10:244:3::/64']);
    expect(() => planNodes([])).toThrow(RangeError);
    expect(() => planNodes([{ nodes: -1 }])).toThrow(RangeError);
  });

  it('the Node object carries both InternalIPs and both pod CIDRs', () => {
    const o = nodeObject(planNodes([{ nodes: 1 }])[0]!) as {
      spec: { podCIDRs: string[] };
      status: { addresses: { type: string; address: string }[] };
    };
    expect(o.spec.podCIDRs).toEqual(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    expect(o.status.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.address)).toEqual([
      '10.100.0.11',
      'fd00:100::11',
    ]);
  });

  it('a single-stack plan has that family only: addresses, pod CIDRs, Node object', () => {
    const [v6] = planNodes([{ nodes: 1 }], [6]);
    expect(v6).toMatchObject({ families: [6], v6: 'fd00:100::11', podCIDRs: ['fd00:10:244:1::/64'] });
    expect(v6!.v4).toBeUndefined();
    const o = nodeObject(v6!) as {
      spec: { podCIDR: string; podCIDRs: string[] };
      status: { addresses: { type: string; address: string }[] };
    };
    expect(o.spec).toEqual({ podCIDR: 'fd00:10:244:1::/64', podCIDRs: ['fd00:10:244:1::/64'] });
    expect(o.status.addresses.filter((a) => a.type === 'InternalIP')).toEqual([
      { type: 'InternalIP', address: 'fd00:100::11' },
    ]);
    const [v4] = planNodes([{ nodes: 1 }], [4]);
    expect([v4!.v4, v4!.v6, v4!.podCIDRs]).toEqual(['10.100.0.11', undefined, ['10.244.1.0/24']]);
    expect(podCIDROf(v4!, 4)).toBe('10.244.1.0/24');
    expect(() => podCIDROf(v4!, 6)).toThrow(/not IPv6/);
    expect(() => addrOf(v4!, 6)).toThrow(/not IPv6/);
    expect(() => planNodes([{ nodes: 1 }], [6, 4] as const)).toThrow(RangeError);
    expect(() => planNodes([{ nodes: 1 }], [] as 4[])).toThrow(RangeError);
  });

  it('formats a single-stack matrix with one table', () => {
    const pods = [
      { name: 'pod-1-1', node: 'node-1', v6: 'fd00:10:244:1::2' },
      { name: 'pod-2-1', node: 'node-2', v6: 'fd00:10:244:2::2' },
    ];
    const text = formatMatrix(
      summarizeMatrix(pods, [
        { from: 'pod-1-1', to: 'pod-2-1', family: 6, ok: true, attempts: 1, rttMs: 0.1 },
        { from: 'pod-2-1', to: 'pod-1-1', family: 6, ok: true, attempts: 1, rttMs: 0.1 },
      ]),
    );
    expect(text).toContain('2/2 pings answered (2 ordered pod pairs x IPv6)');
    expect(text).not.toContain('IPv4');
    expect(text.split('\n')).toContain('  pod-1-1  node-1    fd00:10:244:1::2');
  });

  it('formats a matrix with failures listed', () => {
    const pods = [
      { name: 'pod-1-1', node: 'node-1', v4: '10.244.1.2', v6: 'fd00:10:244:1::2' },
      { name: 'pod-2-1', node: 'node-2', v4: '10.244.2.2', v6: 'fd00:10:244:2::2' },
    ];
    const m = summarizeMatrix(pods, [
      { from: 'pod-1-1', to: 'pod-2-1', family: 4, ok: true, attempts: 1, rttMs: 0.1 },
      { from: 'pod-2-1', to: 'pod-1-1', family: 4, ok: true, attempts: 1, rttMs: 0.1 },
      { from: 'pod-1-1', to: 'pod-2-1', family: 6, ok: false, attempts: 2 },
      { from: 'pod-2-1', to: 'pod-1-1', family: 6, ok: true, attempts: 1, rttMs: 0.1 },
    ]);
    expect(m.ok).toBe(false);
    const text = formatMatrix(m);
    expect(text).toContain('3/4 pings answered');
    expect(text).toContain('no answer: pod-1-1 -> pod-2-1 over IPv6');
    expect(text.split('\n').find((l) => l.startsWith('  pod-1-1  .'))).toMatch(/^ {2}pod-1-1 {2}\. +ok/);
  });

  it('formats pino lines with time, node, level, message and fields', () => {
    const line = formatLogLine('node-2', {
      level: 'warn',
      time: '2026-01-01T10:00:01.234Z',
      node: 'node-2',
      msg: 'node skipped',
      peer: 'node-3',
      problem: 'not on a subnet',
    });
    expect(line).toBe('10:00:01.234 node-2   WARN  node skipped  peer=node-3 problem="not on a subnet"');
    expect(formatLogLine('node-1', { raw: 'not json' })).toBe('node-1   not json');
    const colored = formatLogLine('node-2', { level: 50, time: 0, msg: 'boom' }, { color: true });
    expect(colored).toContain('\x1b[31mERROR\x1b[0m');
    expect(colored.replace(new RegExp(`${String.fromCharCode(27)}\\[\\d+m`, 'g'), '')).toBe(
      '00:00:00.000 node-2   ERROR boom',
    );
  });
});

const title = 'test bed lifecycle and the demo';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const interruptions: [kind: 'progress' | 'log', at: string, when: string][] = [
    ['progress', 'namespaces with prefix', 'before the control plane'],
    ['progress', 'API server', 'while nodes are created'],
    ['progress', 'starting', 'just before the agents start'],
    ['log', 'starting', 'with agents running but not ready'],
  ];
  it.each(interruptions)(
    'a teardown during start-up (Ctrl-C) on %s "%s" (%s) stops the start and leaves nothing behind',
    async (kind, at) => {
      let interrupted: Promise<void> | undefined;
      const tb: Testbed = new Testbed({
        segments: [{ nodes: 2 }],
        onProgress: (m) => {
          if (kind === 'progress' && m.startsWith(at)) interrupted ??= tb.teardown();
        },
        onLog: (_node, line) => {
          if (kind === 'log' && line.msg === at) interrupted ??= tb.teardown();
        },
      });
      await expect(tb.start()).rejects.toThrow();
      expect(interrupted).toBeDefined();
      await interrupted;
      expect(tb.leftovers()).toEqual([]);
    },
  );

  it('two segments joined by the router: nodes reach each other and the API across it (both families)', async () => {
    const tb = await Testbed.create({ segments: [{ nodes: 1 }, { nodes: 1 }] });
    try {
      const [a, b] = tb.nodes();
      expect([a!.plan.segment, b!.plan.segment]).toEqual([0, 1]);
      // The agent on segment 1 became ready, so it listed Nodes through the router from 10.100.1.x.
      expect(b!.logs.some((l) => l.msg === 'trellis agent ready')).toBe(true);
      for (const [from, to] of [
        [a!, b!],
        [b!, a!],
      ] as const) {
        expect((await tb.ping(from.ns, to.plan.v4)).rttMs).toBeDefined();
        expect((await tb.ping(from.ns, to.plan.v6)).rttMs).toBeDefined();
      }
      // Not on one L2: the router is a hop (TTL decremented), and no node has an on-link route to the other.
      expect(ip(a!.ns, 'route', 'get', b!.plan.v4)).toContain(`via ${a!.plan.gateway4}`);
      expect(ip(b!.ns, '-6', 'route', 'get', a!.plan.v6)).toContain(`via ${b!.plan.gateway6}`);
    } finally {
      await tb.teardown();
    }
    expect(tb.leftovers()).toEqual([]);
  });

  it('an agent that exits by itself is reported, one the test bed stops or kills is not; a ping that cannot run throws', async () => {
    const exits: { node: string; code: number | null; signal: string | null }[] = [];
    const tb = await Testbed.create({
      segments: [{ nodes: 2 }],
      onAgentExit: (node, exit) => exits.push({ node, code: exit.code, signal: exit.signal }),
    });
    try {
      await tb.killAgent('node-1');
      // A crash: no one in the test bed asked for it.
      process.kill(tb.node('node-2').agent!.child.pid!, 'SIGKILL');
      await vi.waitFor(() => expect(exits).toEqual([{ node: 'node-2', code: null, signal: 'SIGKILL' }]), {
        timeout: 5000,
      });
      // Not "no answer": the ping never ran.
      await expect(tb.ping(`${tb.prefix}-missing`, '10.244.1.2')).rejects.toThrow(
        /^ping could not run in trl-/,
      );
    } finally {
      await tb.teardown();
    }
    expect(exits).toHaveLength(1);
    expect(tb.leftovers()).toEqual([]);
  });

  it('`demo --check` brings up 2 nodes, verifies every pair, and exits 0 leaving nothing', async () => {
    const { stdout } = await execFileP(
      process.execPath,
      [DEMO, '--check', '--nodes', '2', '--pods-per-node', '2'],
      { timeout: 90_000 },
    );
    expect(stdout).toContain('24/24 pings answered');
    expect(stdout).toMatch(/leftovers: none/);
    expect(stdout.trim().split('\n').at(-1)).toBe('[demo] PASS');
    const prefix = /namespaces with prefix (trl-[0-9a-f]+)/.exec(stdout)?.[1];
    expect(prefix).toBeDefined();
    const { stdout: netns } = await execFileP('ip', ['netns', 'list']);
    expect(netns).not.toContain(`${prefix}-`);
  }, 90_000);

  it('`demo` tears down on Ctrl-C even when Ctrl-C comes again and the terminal closes meanwhile', async () => {
    const demo = spawn(process.execPath, [DEMO, '--nodes', '2', '--pods-per-node', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    demo.stdout.setEncoding('utf8');
    demo.stderr.resume();
    // 'close', not 'exit': the last lines may still sit in the stdout pipe when the process exits.
    const exited = new Promise<number | null>((resolve) => demo.on('close', (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        demo.stdout.on('data', (chunk: string) => {
          stdout += chunk;
          if (stdout.includes('streaming agent logs')) resolve();
        });
        demo.on('exit', () => reject(new Error(`demo exited before it was up:\n${stdout}`)));
      });
      const prefix = /namespaces with prefix (trl-[0-9a-f]+)/.exec(stdout)?.[1];
      expect(prefix).toBeDefined();
      // Ctrl-C and the terminal closing arrive together: the demo is stopped while both are sent, so
      // the second lands while the teardown the first started is still running (sent one after the
      // other, a fast teardown could finish in between and the second would test nothing). Node's
      // default action for the second would kill the demo half-way, with its agents running.
      demo.kill('SIGSTOP');
      demo.kill('SIGINT');
      demo.kill('SIGHUP');
      demo.kill('SIGCONT');
      const code = await exited;
      const first = new RegExp(`\\[demo\\] (SIGINT|SIGHUP): tearing down ${prefix}`).exec(stdout)?.[1];
      expect(first, stdout).toBeDefined();
      const second = first === 'SIGINT' ? 'SIGHUP' : 'SIGINT';
      expect(stdout).toContain(`${second}: still tearing down ${prefix}`);
      expect(code).toBe(first === 'SIGINT' ? 130 : 129);
      expect(stdout).toContain('removed; left behind: nothing');
      const { stdout: netns } = await execFileP('ip', ['netns', 'list']);
      expect(netns).not.toContain(`${prefix}-`);
    } finally {
      if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL');
    }
  }, 90_000);

  it('`demo` says which tools are missing before it makes anything (here: a PATH without sbin)', async () => {
    // What the demo and its children do is traced, not read off `ip netns list` before and after:
    // other test files make and remove namespaces meanwhile.
    const trace = join(mkdtempSync(join(tmpdir(), 'trl-strace-')), 'trace');
    try {
      const run = execFileP(
        'strace',
        ['-f', '-qq', '-e', 'trace=unshare,mkdir,mkdirat', '-o', trace, process.execPath, DEMO, '--check'],
        { env: { ...process.env, PATH: '/usr/bin:/bin' } },
      );
      await expect(run).rejects.toMatchObject({
        code: 1,
        stderr: expect.stringContaining(
          'demo: this machine lacks nft on PATH (it is in /usr/sbin, which PATH lacks: su - or sudo), sysctl on PATH (it is in /usr/sbin, which PATH lacks: su - or sudo)\n',
        ),
      });
      const calls = readFileSync(trace, 'utf8');
      expect(calls).not.toMatch(/unshare\(/);
      expect(calls).not.toMatch(/mkdir(at)?\([^)]*trl-/);
    } finally {
      rmSync(dirname(trace), { recursive: true, force: true });
    }
  });

  it('`demo` rejects bad flags with a usage message and exit code 2', async () => {
    for (const [args, message] of [
      [['--mode', 'ipip'], '--mode must be one of'],
      [['--segments', '2,,1'], '--segments must be an integer from 1 to 50, got ""'],
      [['--nodes', '0x3'], '--nodes must be an integer from 1 to 50, got "0x3"'],
    ] as const) {
      const run = execFileP(process.execPath, [DEMO, ...args]);
      await expect(run, args.join(' ')).rejects.toMatchObject({
        code: 2,
        stderr: expect.stringContaining(message),
      });
    }
  });

  // User 65534 must be able to read the checkout and run its Node (not so under a 0700 home).
  const AS_NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
  const nobodyCanRun =
    spawnSync('setpriv', [...AS_NOBODY, 'test', '-r', DEMO, '-a', '-x', process.execPath]).status === 0;
  it.skipIf(!nobodyCanRun)(
    '`npm run demo` as another user says it needs root before its build would touch dist/ (skipped where user 65534 cannot read the checkout)',
    async () => {
      expect(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).toContain(
        '"demo": "node scripts/demo.ts --build"',
      );
      const run = execFileP('setpriv', [...AS_NOBODY, process.execPath, DEMO, '--build', '--check']);
      await expect(run).rejects.toMatchObject({
        code: 1,
        stderr: expect.stringMatching(/^demo: needs root: /),
      });
    },
  );
});
