/**
 * The compiled shim (dist/bin/trellis, built by `node scripts/build.ts`) run the way a container
 * runtime runs it: CNI_* environment, network config on stdin, result on stdout, exit status. The
 * agent is a node:net server on a real unix socket in this process, answering with the real
 * protocol code. This is what exercises the shim's libc IO (cmd/cni/libc.ts over Bun's FFI), which vitest
 * (Node) cannot load, and every way its socket can fail.
 *
 * The same tests run against the arm64 build under qemu-user when this machine has it (`qemu-user` and
 * `libc6-arm64-cross`, which .ci/run installs): the shim cross-compiled for arm64 (scripts/shim-compile.ts)
 * makes its system calls by arm64's numbers, which qemu translates, so every path below checks that
 * table too; a wrong number there is a wrong system call, not a crash in a test.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  linkSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { SUPPORTED_VERSIONS } from '../../../pkg/cni/version.ts';
import {
  decodeRequest,
  encodeResponse,
  errorResponse,
  MAX_RESPONSE_BYTES,
} from '../../../pkg/shim/protocol.ts';
import { STATUS_GRACE_MS } from '../../../pkg/shim/ready-marker.ts';
import { compileShim } from '../../../scripts/shim-compile.ts';
import { type ChildOutput, childOutput } from '../../support/child-output.ts';
import { ARM64_SYSROOT, QEMU_AARCH64, qemuArm64SkipReason } from '../../support/qemu.ts';
import { type AgentStub, answerOk, type StubHandler, startAgentStub } from '../../unit/shim/agent-stub.ts';

const root = join(import.meta.dirname, '..', '..', '..');
const BIN = join(root, 'dist', 'bin', 'trellis');
const VERSION = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

/** One build of the shim under test and how to start it. */
interface ShimUnderTest {
  label: string;
  skipReason: string | undefined;
  /** Makes the binary (once, before the tests); returns the argv that starts it. */
  prepare: (scratch: string) => string[];
  /**
   * A tracer that logs the binary's system calls, each argument a number (strace's raw mode,
   * qemu-user's own strace): `wrap` puts it around `argv`, logging to `log`. `skipReason`: why this
   * machine has none.
   */
  tracer: { skipReason: string | undefined; wrap: (argv: string[], log: string) => string[] };
}

const SHIMS: ShimUnderTest[] = [
  {
    label: 'compiled shim',
    skipReason: existsSync(BIN)
      ? undefined
      : 'dist/bin/trellis is missing: run `node_modules/.bin/node scripts/build.ts` first',
    prepare: () => [BIN],
    tracer: {
      skipReason: spawnSync('strace', ['-V']).status === 0 ? undefined : 'strace is not installed',
      wrap: (argv, log) => [
        'strace',
        '-f',
        '-o',
        log,
        '-e',
        'trace=sendto,recvfrom',
        '-e',
        'raw=sendto,recvfrom',
        ...argv,
      ],
    },
  },
  {
    label: 'compiled shim, arm64 build under qemu-user',
    skipReason: qemuArm64SkipReason('ld-linux-aarch64.so.1', 'an arm64 glibc', 'qemu-user libc6-arm64-cross'),
    prepare: (scratch) => {
      // Bun fetches its arm64 runtime (the same version) from the npm registry on the first build.
      const outfile = join(scratch, 'trellis-arm64');
      compileShim({ root, arch: 'arm64', version: VERSION, outfile, quiet: true });
      return [QEMU_AARCH64, '-L', ARM64_SYSROOT, outfile];
    },
    tracer: {
      skipReason: undefined,
      wrap: ([qemu, ...rest], log) => [qemu!, '-d', 'strace', '-D', log, ...rest],
    },
  },
];

/**
 * Async on purpose: the agent stub answers from this process's event loop. `keepOpen`: stdin gets
 * `stdin` and is never closed, as from a writer that does not stop: the binary must not wait for it.
 */
function runArgv(
  argv: readonly string[],
  env: Record<string, string>,
  stdin: string | Uint8Array,
  args: string[] = [],
  cwd?: string,
  keepOpen = false,
): Promise<ChildOutput> {
  const child = spawn(argv[0]!, [...argv.slice(1), ...args], { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), keepOpen ? 5_000 : 20_000);
  child.stdin.on('error', () => {}); // VERSION may exit before reading everything
  if (keepOpen) child.stdin.write(stdin);
  else child.stdin.end(stdin);
  return childOutput(child).finally(() => {
    clearTimeout(killer);
    child.stdin.destroy();
  });
}

/**
 * A unix socket nothing ever accepts on, its queue full: a process listens with a backlog of 1 and
 * blocks its only thread, and two pending connections fill the queue, so a connect has to wait for
 * room (its send timeout ends the wait).
 */
async function fullBacklog(scratch: string): Promise<{ path: string; release: () => void }> {
  const dir = mkdtempSync(join(scratch, 'backlog-'));
  const path = join(dir, 'cni.sock');
  const holder = spawn(
    process.execPath,
    [
      '-e',
      `require('node:net').createServer().listen({ path: ${JSON.stringify(path)}, backlog: 1 });
       process.stdout.write('listening\\n');
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const fillers: Socket[] = [];
  const release = (): void => {
    for (const c of fillers) c.destroy();
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout.once('data', () => resolve());
      holder.once('exit', (code) => reject(new Error(`backlog holder exited ${code}`)));
    });
    for (let i = 0; i < 2; i++) {
      const c = createConnection(path);
      fillers.push(c);
      await new Promise<void>((resolve, reject) => c.once('connect', resolve).once('error', reject));
    }
  } catch (err) {
    release();
    throw err;
  }
  return { path, release };
}

const ADD_ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: '9f86d081884c7d65',
  CNI_NETNS: '/var/run/netns/cni-5f2c',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0',
  CNI_PATH: '/opt/cni/bin',
};
const envFor = (command: string): Record<string, string> =>
  ['ADD', 'DEL', 'CHECK'].includes(command)
    ? { ...ADD_ENV, CNI_COMMAND: command }
    : { CNI_COMMAND: command, CNI_PATH: '/opt/cni/bin' };
const conf = (extra: Record<string, unknown>): string =>
  JSON.stringify({ cniVersion: '1.1.0', name: 'trellis', type: 'trellis', ...extra });

const RESULT = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/cni-5f2c' }],
  ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }],
  dns: {},
};

for (const shim of SHIMS) {
  describe.skipIf(shim.skipReason !== undefined)(
    shim.skipReason === undefined ? shim.label : `${shim.label} (skipped: ${shim.skipReason})`,
    () => {
      let scratch: string;
      let stub: AgentStub | undefined;
      let argv: string[] = [];
      const runBin = (
        env: Record<string, string>,
        stdin: string | Uint8Array,
        args: string[] = [],
        cwd?: string,
        keepOpen?: boolean,
      ) => runArgv(argv, env, stdin, args, cwd, keepOpen);
      beforeAll(() => {
        scratch = mkdtempSync(join(tmpdir(), 'trl-shimbin-'));
        argv = shim.prepare(scratch);
      }, 180_000);
      afterAll(() => rmSync(scratch, { recursive: true, force: true }));
      afterEach(async () => {
        await stub?.close();
        stub = undefined;
      });
      const start = async (h: StubHandler): Promise<AgentStub> => {
        stub = await startAgentStub(h);
        return stub;
      };

      it('--version and -v print the build version', async () => {
        for (const flag of ['--version', '-v']) {
          const r = await runBin({}, '', [flag]);
          expect(r).toEqual({ stdout: `trellis ${VERSION}\n`, stderr: '', code: 0 });
        }
      });

      it('--help and -h say what the binary is, without reading stdin', async () => {
        for (const flag of ['--help', '-h']) {
          // stdin left open: reading it would never end (killed after 5 s: code null).
          const r = await runBin({}, '', [flag], undefined, true);
          expect(r.code).toBe(0);
          expect(r.stderr).toBe('');
          expect(r.stdout).toContain(`trellis ${VERSION}: the trellis CNI plugin.`);
          expect(r.stdout).toContain(`CNI versions: ${SUPPORTED_VERSIONS.join(', ')}.`);
        }
      });

      it('VERSION is answered without an agent', async () => {
        const r = await runBin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toEqual({
          cniVersion: '1.0.0',
          supportedVersions: [...SUPPORTED_VERSIONS],
        });
      });

      it('ADD: forwards only CNI_* and stdin, prints the agent result verbatim, exit 0', async () => {
        const s = await start(() => answerOk(RESULT));
        const stdin = conf({ socket: s.socketPath });
        const r = await runBin({ ...ADD_ENV, API_TOKEN: 'do-not-leak', HOME: '/root' }, stdin);
        expect(r).toEqual({ stdout: `${JSON.stringify(RESULT)}\n`, stderr: '', code: 0 });
        expect(s.requests).toEqual([{ v: 1, env: ADD_ENV, stdin }]);
        expect(s.rawLines[0]).not.toContain('do-not-leak');
      });

      it('stdin a non-blocking pipe that has nothing yet: the shim waits for the config (EAGAIN, then poll)', async () => {
        const s = await start(() => answerOk(RESULT));
        const stdin = conf({ socket: s.socketPath });
        // Node hands a child blocking stdio; perl (Debian's perl-base is essential) makes the pipe
        // non-blocking, as a runtime's may be, and execs the shim in its place.
        const nonBlocking =
          'use Fcntl; fcntl(STDIN, F_SETFL, fcntl(STDIN, F_GETFL, 0) | O_NONBLOCK) or die; exec {$ARGV[0]} @ARGV or die';
        const child = spawn('perl', ['-e', nonBlocking, ...argv], {
          env: ADD_ENV,
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          stdout += d;
        });
        const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
        // Write only once the shim, having read nothing, waits in poll(2) or ppoll(2) (/proc/PID/syscall,
        // the host's numbers: under qemu-user it is qemu that waits, in the host's ppoll).
        const polls = process.arch === 'arm64' ? ['73'] : ['7', '271'];
        const inPoll = (): boolean => {
          try {
            return polls.includes(readFileSync(`/proc/${child.pid}/syscall`, 'utf8').split(' ')[0]!);
          } catch {
            return false;
          }
        };
        for (const until = Date.now() + 10_000; !inPoll(); ) {
          expect(child.exitCode, 'the shim exited without its config').toBeNull();
          expect(Date.now(), 'the shim never waited in poll').toBeLessThan(until);
          await new Promise((r) => setTimeout(r, 5));
        }
        child.stdin.end(stdin);
        expect(await exited).toBe(0);
        expect(stdout).toBe(`${JSON.stringify(RESULT)}\n`);
        expect(s.requests[0]?.stdin).toBe(stdin);
      });

      const noTracer = shim.tracer.skipReason;
      it.skipIf(noTracer !== undefined)(
        `sendto and recvfrom get every argument: no address and a zero or NULL length, not what a register held${noTracer === undefined ? '' : ` (skipped: ${noTracer})`}`,
        async () => {
          // The shim calls syscall(2), which passes six arguments whatever the call takes. One left
          // out is garbage: Linux ignores sendto's addrlen beside a NULL address, but qemu-user
          // refused a negative one with EINVAL, and a kernel is free to check it first too.
          const s = await start(() => answerOk(RESULT));
          const traced = shim.tracer.wrap(argv, join(scratch, 'syscalls.log'));
          const r = await runArgv(traced, ADD_ENV, conf({ socket: s.socketPath }));
          expect(r.code, r.stderr).toBe(0);
          expect(r.stdout).toBe(`${JSON.stringify(RESULT)}\n`);
          const calls = [
            ...readFileSync(join(scratch, 'syscalls.log'), 'utf8').matchAll(
              /\b(sendto|recvfrom)\(([^)]*)\)/g,
            ),
          ].map(([, name, args]) => ({ name, args: args!.split(',').map((a) => Number(a.trim())) }));
          expect(calls.map((c) => c.name)).toEqual(['sendto', 'recvfrom']);
          for (const { name, args } of calls) {
            expect(args, name).toHaveLength(6);
            expect(args.slice(4), `${name}: the address and its length`).toEqual([0, 0]);
          }
        },
      );

      it('a ~900 KB config crosses the socket intact (partial writes are resumed)', async () => {
        const s = await start((req) => answerOk({ cniVersion: '1.1.0', length: req.stdin.length }));
        const stdin = conf({ socket: s.socketPath, pad: 'ü'.repeat(450_000) });
        const r = await runBin(ADD_ENV, stdin);
        expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
        expect(JSON.parse(r.stdout)).toEqual({ cniVersion: '1.1.0', length: stdin.length });
        expect(s.requests[0]?.stdin).toBe(stdin);
      });

      it('stdin that is not UTF-8 is code 6, and one past 16 MiB code 5 without reading it all; the agent is not asked', async () => {
        const s = await start(() => answerOk(RESULT));
        const text = conf({ socket: s.socketPath, name: 'x' });
        // "x" -> a lone continuation byte and an overlong encoding: invalid UTF-8 a lossy decode would hide.
        const bytes = Buffer.from(text.replace('"name":"x"', '"name":"\u0001"'));
        bytes[bytes.indexOf(1)] = 0x80;
        const bad = await runBin(ADD_ENV, Buffer.concat([bytes, Buffer.from([0xc0, 0xaf])]));
        expect(bad.code).toBe(1);
        expect(JSON.parse(bad.stdout)).toEqual({
          cniVersion: '1.1.0',
          code: 6,
          msg: 'the network configuration on stdin is not valid UTF-8',
        });
        // Past the limit it stops reading: the writer never closes stdin (killed after 5 s: code null).
        const huge = await runBin(
          ADD_ENV,
          conf({ socket: s.socketPath, pad: 'x'.repeat(17 * 1024 * 1024) }),
          [],
          undefined,
          true,
        );
        expect(huge.code).toBe(1);
        expect(JSON.parse(huge.stdout)).toMatchObject({
          code: 5,
          msg: 'could not read the network configuration from stdin: more than 16777216 bytes',
        });
        expect(s.requests).toEqual([]);
      });

      it('agent error: printed as the CNI error object, exit 1', async () => {
        const s = await start(() => ({
          answer: encodeResponse(
            errorResponse(new CniError(CniCode.IPAM_EXHAUSTED, 'no free address', '10.244.1.0/24')),
          ),
        }));
        const r = await runBin(ADD_ENV, conf({ cniVersion: '0.4.0', socket: s.socketPath }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toEqual({
          cniVersion: '0.4.0',
          code: CniCode.IPAM_EXHAUSTED,
          msg: 'no free address',
          details: '10.244.1.0/24',
        });
      });

      it('DEL, CHECK, STATUS and GC print nothing on success', async () => {
        const s = await start(() => answerOk(null));
        for (const command of ['DEL', 'CHECK', 'STATUS', 'GC']) {
          const r = await runBin(envFor(command), conf({ socket: s.socketPath }));
          expect(r, command).toEqual({ stdout: '', stderr: '', code: 0 });
        }
        expect(s.requests.map((q) => q.env.CNI_COMMAND)).toEqual(['DEL', 'CHECK', 'STATUS', 'GC']);
      });

      describe('agent down', () => {
        const sock = (): string => join(scratch, 'down.sock');

        it('ADD: code 11 naming the socket', async () => {
          const r = await runBin(ADD_ENV, conf({ socket: sock() }));
          expect(r.code).toBe(1);
          expect(JSON.parse(r.stdout)).toEqual({
            cniVersion: '1.1.0',
            code: 11,
            msg: `trellis agent is not reachable at ${sock()} (ENOENT); is the trellis DaemonSet pod running on this node?`,
          });
        });

        it('STATUS: code 50; GC: code 11', async () => {
          const status = await runBin(envFor('STATUS'), conf({ socket: sock() }));
          expect(status.code).toBe(1);
          expect(JSON.parse(status.stdout)).toMatchObject({ code: 50, msg: expect.stringContaining(sock()) });
          const gc = await runBin(envFor('GC'), conf({ socket: sock() }));
          expect(JSON.parse(gc.stdout)).toMatchObject({ code: 11 });
        });

        it("STATUS: ready while the agent's ready marker is fresh (a restart); 50 once it is older than the grace", async () => {
          const marker = `${sock()}.ready`;
          writeFileSync(marker, '');
          try {
            const r = await runBin(envFor('STATUS'), conf({ socket: sock() }));
            expect([r.code, r.stdout]).toEqual([0, '']);
            expect(r.stderr).toContain(`not reachable at ${sock()} (ENOENT)`);
            expect(r.stderr).toMatch(/it was ready \d+ s ago, so STATUS answers ready while it restarts/);
            const old = new Date(Date.now() - STATUS_GRACE_MS - 5_000);
            utimesSync(marker, old, old);
            const stale = await runBin(envFor('STATUS'), conf({ socket: sock() }));
            expect(stale.code).toBe(1);
            expect(JSON.parse(stale.stdout)).toMatchObject({ code: 50 });
          } finally {
            rmSync(marker, { force: true });
          }
        });

        it("ADD: waits for a restarting agent while its ready marker is fresh, and gets the agent's answer", async () => {
          const s = await start(() => answerOk(RESULT));
          const link = join(scratch, 'restarting.sock');
          writeFileSync(`${link}.ready`, '');
          try {
            const add = runBin(ADD_ENV, conf({ socket: link }));
            // The agent listens again (its socket appears) while the shim retries.
            await new Promise((r) => setTimeout(r, 600));
            symlinkSync(s.socketPath, link);
            const r = await add;
            expect([r.code, JSON.parse(r.stdout)]).toEqual([0, RESULT]);
            expect(s.requests).toHaveLength(1);
            // Without an agent coming back: 11 once half the call's timeout is spent.
            rmSync(link);
            const gaveUp = await runBin(ADD_ENV, conf({ socket: link, timeoutMs: 1_000 }));
            expect(JSON.parse(gaveUp.stdout)).toMatchObject({
              code: 11,
              msg: expect.stringMatching(
                /It was ready \d+ s before this call, which waited \d+ ms for it to come back\.$/,
              ),
            });
          } finally {
            rmSync(link, { force: true });
            rmSync(`${link}.ready`, { force: true });
          }
        });

        it('DEL: exit 0, nothing on stdout, the request spooled durably with mode 0600', async () => {
          const spoolDir = join(scratch, 'spool');
          const stdin = conf({ socket: sock(), spoolDir });
          const r = await runBin(envFor('DEL'), stdin);
          expect(r.code).toBe(0);
          expect(r.stdout).toBe('');
          expect(r.stderr).toContain('DEL recorded in');
          expect(readdirSync(spoolDir)).toEqual(['9f86d081884c7d65.eth0.del.json']);
          const file = join(spoolDir, '9f86d081884c7d65.eth0.del.json');
          expect(statSync(file).mode & 0o777).toBe(0o600);
          expect(statSync(spoolDir).mode & 0o777).toBe(0o700);
          const line = readFileSync(file, 'utf8');
          expect(line.endsWith('\n')).toBe(true);
          expect(decodeRequest(line)).toEqual({ v: 1, env: envFor('DEL'), stdin });
        });

        it('DEL whose stderr cannot be written still succeeds (its diagnostic has nowhere to go)', async () => {
          const spoolDir = join(scratch, 'spool-nostderr');
          // /dev/full fails every write with ENOSPC.
          const r = spawnSync('sh', ['-c', 'exec 2>/dev/full; exec "$@"', 'sh', ...argv], {
            env: envFor('DEL'),
            input: conf({ socket: sock(), spoolDir }),
            encoding: 'utf8',
          });
          expect([r.status, r.stdout]).toEqual([0, '']);
          expect(readdirSync(spoolDir)).toEqual(['9f86d081884c7d65.eth0.del.json']);
        });

        it('an answer stdout cannot take (the runtime gone, a full disk): one line on stderr and exit 1, no crash', async () => {
          // /dev/full fails every write with ENOSPC; a closed pipe's EPIPE takes the same path.
          const r = spawnSync('sh', ['-c', 'exec >/dev/full; exec "$@"', 'sh', ...argv, '--version'], {
            encoding: 'utf8',
          });
          expect(r.status).toBe(1);
          expect(r.stderr.trimEnd().split('\n')).toEqual([
            expect.stringMatching(/^trellis: cannot write the answer to stdout: write: ENOSPC/),
          ]);
        });

        it('DEL with an unwritable spool directory fails with 5', async () => {
          const r = await runBin(envFor('DEL'), conf({ socket: sock(), spoolDir: '/proc/trellis-spool' }));
          expect(r.code).toBe(1);
          expect(JSON.parse(r.stdout)).toMatchObject({ code: CniCode.IO_FAILURE });
        });
      });

      it('agent silent: ADD 105 after timeoutMs, DEL spooled', async () => {
        const s = await start(() => ({ silent: true }));
        const t0 = Date.now();
        const add = await runBin(ADD_ENV, conf({ socket: s.socketPath, timeoutMs: 300 }));
        expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
        expect(add.code).toBe(1);
        expect(JSON.parse(add.stdout)).toMatchObject({
          code: CniCode.AGENT_TIMEOUT,
          msg: `trellis agent at ${s.socketPath} did not answer ADD within 300 ms`,
        });
        const spoolDir = join(scratch, 'spool-slow');
        const del = await runBin(envFor('DEL'), conf({ socket: s.socketPath, timeoutMs: 200, spoolDir }));
        expect(del.code).toBe(0);
        expect(readdirSync(spoolDir)).toHaveLength(1);
      });

      it('a listener that never accepts: ADD 11 "connect timed out" after timeoutMs', async () => {
        const { path, release } = await fullBacklog(scratch);
        try {
          const t0 = Date.now();
          const r = await runBin(ADD_ENV, conf({ socket: path, timeoutMs: 300 }));
          expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
          expect(r.code).toBe(1);
          expect(JSON.parse(r.stdout)).toMatchObject({
            code: CniCode.TRY_AGAIN_LATER,
            msg: expect.stringContaining(`not reachable at ${path} (connect timed out after 300 ms)`),
          });
        } finally {
          release();
        }
      });

      it.skipIf(shim.label !== 'compiled shim')(
        'signals during that wait (SIGSTOP and SIGCONT) do not stretch it: the timeout still ends it',
        async () => {
          const { path, release } = await fullBacklog(scratch);
          const child = spawn(argv[0]!, argv.slice(1), { env: ADD_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
          child.stdin.end(conf({ socket: path, timeoutMs: 300 }));
          const done = childOutput(child);
          let exited = false;
          void done.finally(() => {
            exited = true;
          });
          let signalled = 0;
          try {
            // Stopped for 20 ms every 50 ms, for 5 s: each continue ends the connect with EINTR (a
            // SIGCONT right after the SIGSTOP would discard it before it stopped anything).
            const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
            for (const t0 = Date.now(); !exited && Date.now() - t0 < 5_000; signalled++) {
              child.kill('SIGSTOP');
              await pause(20);
              child.kill('SIGCONT');
              await pause(30);
            }
            const endedWhileSignalled = exited;
            const r = await done;
            expect(endedWhileSignalled, 'the shim ended while the signals still came').toBe(true);
            expect(signalled).toBeGreaterThan(0);
            expect(JSON.parse(r.stdout)).toMatchObject({
              code: CniCode.TRY_AGAIN_LATER,
              msg: expect.stringContaining(`not reachable at ${path} (connect timed out after 300 ms)`),
            });
          } finally {
            child.kill('SIGKILL');
            release();
          }
        },
      );

      it('agent hangs up without answering: ADD 11', async () => {
        const s = await start(() => ({ hangUp: true }));
        const r = await runBin(ADD_ENV, conf({ socket: s.socketPath }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          code: 11,
          msg: expect.stringContaining('closed the connection without answering ADD'),
        });
      });

      it('agent cut off mid-answer: ADD 11; a complete answer without its newline: accepted', async () => {
        const cut = await start(() => ({ answer: '{"ok":true,"res' }));
        const r = await runBin(ADD_ENV, conf({ socket: cut.socketPath }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          code: 11,
          msg: expect.stringContaining(
            'closed the connection without answering ADD (connection closed in the middle of the answer)',
          ),
        });
        await cut.close();
        const unterminated = await start(() => ({ answer: JSON.stringify({ ok: true, result: RESULT }) }));
        const ok = await runBin(ADD_ENV, conf({ socket: unterminated.socketPath }));
        expect(ok).toEqual({ stdout: `${JSON.stringify(RESULT)}\n`, stderr: '', code: 0 });
      });

      it('an answer beyond MAX_RESPONSE_BYTES is refused as INTERNAL, not buffered', async () => {
        const s = await start(() => ({
          answer: `{"ok":true,"result":"${'x'.repeat(MAX_RESPONSE_BYTES + 10)}"}\n`,
        }));
        const r = await runBin(ADD_ENV, conf({ socket: s.socketPath }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          code: CniCode.INTERNAL,
          msg: `the trellis agent answer exceeds ${MAX_RESPONSE_BYTES} bytes`,
        });
      });

      it('a stale socket left by a dead agent (ECONNREFUSED): STATUS 50', async () => {
        const s = await start(() => answerOk(null));
        const stale = join(scratch, 'stale.sock');
        linkSync(s.socketPath, stale); // keeps the socket inode after the server unlinks its own path
        await s.close();
        stub = undefined;
        const r = await runBin(envFor('STATUS'), conf({ socket: stale }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          code: 50,
          msg: expect.stringContaining(`${stale} (ECONNREFUSED)`),
        });
      });

      it('a regular file where the socket should be: ADD 11 naming it, not a crash', async () => {
        const file = join(scratch, 'not-a-socket');
        writeFileSync(file, '');
        const r = await runBin(ADD_ENV, conf({ socket: file }));
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          code: 11,
          msg: expect.stringContaining(`${file} (ECONNREFUSED)`),
        });
      });

      it('bad environment: code 4 naming every missing variable', async () => {
        const r = await runBin({ CNI_COMMAND: 'ADD' }, conf({}));
        expect(r.code).toBe(1);
        const err = JSON.parse(r.stdout);
        expect(err.code).toBe(CniCode.INVALID_ENV);
        for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) expect(err.msg).toContain(v);
      });

      it('a .env or bunfig.toml in the working directory changes nothing', async () => {
        // Runtimes run plugins from wherever they are; Bun executables would read both by default.
        const cwd = mkdtempSync(join(scratch, 'cwd-'));
        writeFileSync(join(cwd, '.env'), 'CNI_CONTAINERID=from-dotenv\nCNI_NETNS=/x\nCNI_IFNAME=eth9\n');
        writeFileSync(join(cwd, 'bunfig.toml'), 'preload = ["./evil.ts"]\n');
        writeFileSync(join(cwd, 'evil.ts'), 'process.stdout.write("preloaded\\n");\n');
        const r = await runBin({ CNI_COMMAND: 'ADD' }, conf({}), [], cwd);
        expect(r.code).toBe(1);
        expect(r.stdout).not.toContain('preloaded');
        const err = JSON.parse(r.stdout);
        expect(err.code).toBe(CniCode.INVALID_ENV);
        for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) expect(err.msg).toContain(v);
      });

      it('malformed stdin: code 6', async () => {
        const r = await runBin(ADD_ENV, '{"cniVersion": "1.0.0", ');
        expect(r.code).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: '1.1.0', code: CniCode.DECODE_FAILED });
      });
    },
  );
}
