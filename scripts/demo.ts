/**
 * A local trellis cluster in network namespaces: nodes running the real agent against a test API
 * server, pods wired by the real CNI shim, and a ping matrix between every pod. docs/demo.md.
 *
 *   npm run demo -- [--nodes N] [--pods-per-node M] [--mode auto|host-gw|vxlan] [--segments 2,1]
 *                   [--check] [--verbose]
 *
 * Without --check it stays up, streaming the agents' logs, until Ctrl-C; then it removes everything.
 * With --check it verifies the full matrix, tears down, and exits 0 only if every pair answered and
 * nothing is left behind.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AGENT_BINARY, REFERENCE_PLUGIN_DIR, SHIM_BINARY } from '../test/support/cni-driver.ts';
import {
  type DatapathMode,
  formatLogLine,
  formatMatrix,
  INTERNET,
  type SegmentSpec,
  Testbed,
} from '../test/support/testbed/index.ts';

const MODES: readonly DatapathMode[] = ['auto', 'host-gw', 'vxlan'];
const USAGE = `usage: npm run demo -- [--nodes N] [--pods-per-node M] [--mode auto|host-gw|vxlan]
                       [--segments A,B,...] [--check] [--verbose]

  --nodes N            nodes on one shared L2 segment (default 3)
  --pods-per-node M    pods started on every node (default 2)
  --mode MODE          the agents' datapath mode (default auto)
  --segments A,B       nodes per L2 segment, segments joined by a router (overrides --nodes)
  --check              no terminal needed: up, verify the full matrix, tear down, exit 0/1
  --verbose            show the agents' debug lines too (and stream logs with --check)
  --build              build trellis first (npm run demo passes it), once the checks that need
                       no build have passed
`;

class UsageError extends Error {}

/** Per node, the log lines --check keeps to show when it fails. */
const LOG_TAIL_LINES = 30;

interface DemoOptions {
  segments: SegmentSpec[];
  podsPerNode: number;
  mode: DatapathMode;
  check: boolean;
  verbose: boolean;
  build: boolean;
}

function intFlag(name: string, raw: string | undefined, def: number, min: number, max: number): number {
  if (raw === undefined) return def;
  // Digits only: Number() would take "" (an empty --segments item), "0x3" and "1e1".
  const n = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function parseOptions(argv: string[]): DemoOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        nodes: { type: 'string' },
        'pods-per-node': { type: 'string' },
        mode: { type: 'string' },
        segments: { type: 'string' },
        check: { type: 'boolean' },
        verbose: { type: 'boolean' },
        build: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const mode = (values.mode ?? 'auto') as DatapathMode;
  if (!MODES.includes(mode)) {
    throw new UsageError(`--mode must be one of ${MODES.join(', ')}, got ${JSON.stringify(values.mode)}`);
  }
  let segments: SegmentSpec[];
  if (typeof values.segments === 'string') {
    segments = values.segments.split(',').map((s) => ({ nodes: intFlag('segments', s.trim(), 0, 1, 50) }));
    if (segments.length > 16) throw new UsageError('--segments: at most 16 segments');
  } else {
    segments = [{ nodes: intFlag('nodes', values.nodes as string | undefined, 3, 1, 50) }];
  }
  const total = segments.reduce((a, s) => a + s.nodes, 0);
  if (total < 1 || total > 50) throw new UsageError(`1 to 50 nodes in all, got ${total}`);
  return {
    segments,
    podsPerNode: intFlag('pods-per-node', values['pods-per-node'] as string | undefined, 2, 0, 20),
    mode,
    check: values.check === true,
    verbose: values.verbose === true,
    build: values.build === true,
  };
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const LEVEL_NUM: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

function levelOf(line: Record<string, unknown>): number {
  if (typeof line.level === 'number') return line.level;
  return LEVEL_NUM[String(line.level)] ?? 30;
}

/**
 * One pod per node asks the "internet" echo server who it is: with masquerading the server sees the
 * node's address. Informational (the --check verdict is the matrix and the clean-up).
 */
async function showEgress(tb: Testbed): Promise<void> {
  const echo = await tb.startEcho(tb.internetNs);
  try {
    for (const node of tb.nodes()) {
      const pod = tb.pods().find((p) => p.node === node.name);
      if (pod === undefined) continue;
      for (const [target, mine] of [
        [INTERNET.v4, pod.v4],
        [INTERNET.v6, pod.v6],
      ] as const) {
        const seen = await tb.askEcho(pod.ns, target).then(
          (r) => r.from,
          () => 'no answer',
        );
        const how =
          seen === node.plan.v4 || seen === node.plan.v6
            ? `its node ${node.name}, masqueraded`
            : seen === mine
              ? 'the pod itself'
              : 'unexpected';
        say(`[demo] ${pod.name} (${mine}) -> internet ${target}: seen as ${seen} (${how})`);
      }
    }
  } finally {
    await echo.stop();
  }
}

/** The README's line: what the demo needs beyond Node.js. */
const APT_LINE = 'apt-get install iproute2 iputils-ping nftables iptables procps containernetworking-plugins';

/**
 * The programs and reference plugins the demo runs, missing from this machine: said before any
 * namespace is made, rather than as a failure half-way through the start.
 */
function missingTools(): string[] {
  const path = (process.env.PATH ?? '').split(':').filter((d) => d !== '');
  const onPath = (name: string): boolean => path.some((d) => existsSync(join(d, name)));
  // On PATH: the test bed runs them through `ip netns exec`, which looks there (sbin included).
  // Installed in an sbin that is not on PATH (`su` without `-`): the apt line would not help.
  const inSbin = (name: string): string | undefined =>
    ['/usr/sbin', '/sbin'].find((d) => !path.includes(d) && existsSync(join(d, name)));
  const missing = ['ip', 'ping', 'nft', 'sysctl']
    .filter((t) => !onPath(t))
    .map((t) => {
      const dir = inSbin(t);
      return dir === undefined
        ? `${t} (on PATH)`
        : `${t} on PATH (it is in ${dir}, which PATH lacks: su - or sudo)`;
    });
  for (const plugin of ['loopback', 'portmap']) {
    if (!existsSync(join(REFERENCE_PLUGIN_DIR, plugin))) missing.push(join(REFERENCE_PLUGIN_DIR, plugin));
  }
  return missing;
}

async function main(argv: string[]): Promise<number> {
  let opts: DemoOptions;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`demo: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      'demo: needs root: it creates network namespaces, veths and bridges (all inside its own\n' +
        'namespaces, named trl-*; nothing changes in the host namespace). Run it as root, e.g.\n' +
        '  sudo npm run demo\n',
    );
    return 1;
  }
  const missing = missingTools();
  if (missing.length > 0) {
    // Tools only off PATH (in an sbin it lacks) are not helped by the apt line.
    const absent = missing.some((m) => !m.includes('which PATH lacks'));
    process.stderr.write(
      `demo: this machine lacks ${missing.join(', ')}${absent ? `; on Debian or Ubuntu:\n  ${APT_LINE}` : ''}\n`,
    );
    return 1;
  }
  // After the checks: the build replaces dist/, which a user who cannot run the demo could not
  // remove anyway (a root-owned build), and its error would hide why.
  if (opts.build)
    execFileSync(process.execPath, [join(import.meta.dirname, 'build.ts')], { stdio: 'inherit' });
  if (!existsSync(SHIM_BINARY) || !existsSync(AGENT_BINARY)) {
    process.stderr.write(`demo: ${SHIM_BINARY} or ${AGENT_BINARY} is missing: run \`npm run build\` first\n`);
    return 1;
  }

  // Logs stream live without --check; with --check only on --verbose (CI output stays short).
  let streaming = !opts.check || opts.verbose;
  const minLevel = opts.verbose ? 0 : 30;
  const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined;
  // An agent that dies on its own (a crash) is said at once, and fails --check: its routes stay in the
  // kernel, so the matrix alone could still pass.
  const crashed: string[] = [];
  // The agents' last lines while their logs are not streamed (--check): shown when it fails, since
  // the test bed and its logs are gone by then.
  const tails = new Map<string, Record<string, unknown>[]>();
  const remember = (node: string, line: Record<string, unknown>): void => {
    const tail = tails.get(node) ?? [];
    tail.push(line);
    if (tail.length > LOG_TAIL_LINES) tail.shift();
    tails.set(node, tail);
  };
  const showTails = (): void => {
    for (const [node, tail] of tails) {
      say(`[demo] ${node}: the agent's last ${tail.length} log lines`);
      for (const line of tail) say(formatLogLine(node, line, { color }));
    }
  };
  const tb = new Testbed({
    segments: opts.segments,
    mode: opts.mode,
    onProgress: (m) => say(`[demo] ${m}`),
    onAgentExit: (node, exit) => {
      crashed.push(node);
      const how = exit.signal !== null ? `signal ${exit.signal}` : `exit code ${exit.code}`;
      say(
        `[demo] ${node}: its agent exited by itself (${how})${exit.stderr === '' ? '' : `; its stderr ends:\n${exit.stderr}`}`,
      );
    },
    onLog: (node, line) => {
      if (levelOf(line) < minLevel) return;
      if (streaming) say(formatLogLine(node, line, { color }));
      else remember(node, line);
    },
  });
  // Ctrl-C at any point (even half-way through start-up) removes everything before exiting.
  tb.installSignalHandlers({
    before: (signal) => {
      streaming = false;
      say(`\n[demo] ${signal}: tearing down ${tb.prefix} ...`);
    },
    repeated: (signal) =>
      say(`[demo] ${signal}: still tearing down ${tb.prefix}; it exits when that is done`),
    after: (left) => say(`[demo] removed; left behind: ${left.length === 0 ? 'nothing' : left.join('; ')}`),
  });
  process.stdout.on('error', () => {
    // The reader went away (a closed pipe): nobody to show anything to; clean up and leave.
    streaming = false;
    tb.teardown().finally(() => process.exit(1));
  });

  const started = Date.now();
  try {
    await tb.start();
    const nodes = tb.nodes();
    say(`[demo] ${nodes.length} nodes ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const n of nodes) {
      say(`[demo]   ${n.name}  ns ${n.ns}  ${n.plan.v4}  ${n.plan.v6}  pods ${n.plan.podCIDRs.join(' ')}`);
    }
    const pods = [];
    for (const n of nodes) for (let i = 0; i < opts.podsPerNode; i++) pods.push(tb.addPod(n.name));
    await Promise.all(pods);
    say(`[demo] ${tb.pods().length} pods wired by the trellis CNI shim; pinging every pair ...`);
    const matrix = await tb.connectivityMatrix();
    say('');
    say(formatMatrix(matrix));
    say('');
    await showEgress(tb);

    if (!opts.check) {
      say(
        `[demo] API server ${tb.apiUrl} (kubeconfig ${tb.kubeconfig}; from the host: curl --unix-socket ${tb.apiSocket} http://x/api/v1/nodes)`,
      );
      say(
        `[demo] try: ip netns exec ${tb.pods()[0]?.ns ?? `${tb.prefix}-p1-1`} ping ${tb.pods().at(-1)?.v6 ?? ''}`,
      );
      say(
        `[demo]      ip -n ${nodes[0]?.ns} route show proto 126; ip -n ${nodes[0]?.ns} -6 route show proto 126`,
      );
      say('[demo] streaming agent logs; Ctrl-C tears everything down');
      await new Promise<never>(() => {});
    }

    streaming = false;
    await tb.teardown();
    const left = tb.leftovers();
    const pairs = matrix.cells.length;
    say(
      `[demo] check: ${nodes.length} nodes, ${matrix.pods.length} pods, ${pairs - matrix.failures.length}/${pairs} pings answered (IPv4 + IPv6), ` +
        `leftovers: ${left.length === 0 ? 'none' : left.join('; ')}, ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    if (crashed.length > 0) say(`[demo] agents that exited by themselves: ${crashed.join(', ')}`);
    const ok = matrix.ok && left.length === 0 && crashed.length === 0;
    if (!ok) showTails();
    say(`[demo] ${ok ? 'PASS' : 'FAIL'}`);
    return ok ? 0 : 1;
  } catch (err) {
    streaming = false;
    process.stderr.write(`demo: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await tb.teardown().catch((e: unknown) => process.stderr.write(`demo: teardown: ${String(e)}\n`));
    const left = tb.leftovers();
    if (left.length > 0) process.stderr.write(`demo: left behind: ${left.join('; ')}\n`);
    showTails();
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
