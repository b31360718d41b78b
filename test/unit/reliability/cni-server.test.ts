/**
 * The agent's socket server (CniServer) on a temp unix socket, without root: the same limits the
 * integration suite checks against the real agent, here so they hold wherever unit tests run.
 * The handler is a real function answering VERSION-like requests; nothing is mocked below it.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ANSWER_LINGER_MS, CniServer } from '../../../pkg/agent/cni-server.ts';
import { type CniCallRecord, createCniService } from '../../../pkg/agent/cni-service.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import { encodeRequest, okResponse } from '../../../pkg/shim/protocol.ts';

const TIMEOUT_MS = 300;

function exchange(
  path: string,
  payload: string | Buffer,
  opts: { end?: boolean; stayOpen?: boolean } = {},
): Promise<{ answer: string; ms: number; how: 'end' | 'close' }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const s = createConnection({ path, allowHalfOpen: true });
    let answer = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      answer += d;
    });
    let probing: NodeJS.Timeout | undefined;
    s.on('error', (err: NodeJS.ErrnoException) => {
      clearInterval(probing);
      // Writing into a connection the server has dropped: how a half-open client learns of it.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') {
        s.destroy();
        resolve({ answer, ms: performance.now() - started, how: 'close' });
      } else reject(err);
    });
    s.on('end', () => {
      if (opts.stayOpen !== true) {
        s.destroy();
        resolve({ answer, ms: performance.now() - started, how: 'end' });
      } else {
        probing = setInterval(() => s.write('x'), 100);
      }
    });
    s.on('close', () => resolve({ answer, ms: performance.now() - started, how: 'close' }));
    s.write(payload);
    if (opts.end !== false) s.end();
  });
}

describe('CniServer limits', () => {
  let dir = '';
  let server: CniServer;
  const logLines: Record<string, unknown>[] = [];
  const rejected: CniCallRecord[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-rel-srv-'));
    const out = new PassThrough();
    out.on('data', (d: Buffer) => {
      for (const l of d.toString('utf8').trim().split('\n'))
        logLines.push(JSON.parse(l) as Record<string, unknown>);
    });
    server = new CniServer({
      socketPath: join(dir, 'run', 'cni.sock'),
      handler: async (req) => okResponse({ echo: req.env.CNI_COMMAND ?? null }),
      log: createLogger({ level: 'info', destination: out }),
      requestTimeoutMs: TIMEOUT_MS,
      onReject: (r) => rejected.push(r),
    });
    await server.listen();
  });
  afterEach(async () => {
    await server.close(100);
    rmSync(dir, { recursive: true, force: true });
    logLines.length = 0;
    rejected.length = 0;
  });
  const sock = (): string => join(dir, 'run', 'cni.sock');

  it('listens on a 0600 socket in a 0700 directory', () => {
    expect(statSync(sock()).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o700);
  });

  it("the socket's umask is not the process's while it waits to listen: a directory made meanwhile keeps its mode", async () => {
    const other = new CniServer({
      socketPath: join(dir, 'other', 'cni.sock'),
      handler: async () => okResponse(null),
      log: createLogger({ level: 'silent' }),
    });
    const listening = other.listen();
    mkdirSync(join(dir, 'made-meanwhile'), { mode: 0o755 }); // other async work of the agent
    await listening;
    try {
      expect(statSync(join(dir, 'made-meanwhile')).mode & 0o777).toBe(0o755);
      expect(statSync(join(dir, 'other', 'cni.sock')).mode & 0o777).toBe(0o600);
    } finally {
      await other.close(100);
    }
  });

  it('answers a good request and refuses an oversized one at 1 MiB, logging the code', async () => {
    const good = await exchange(
      sock(),
      `${JSON.stringify({ v: 1, env: { CNI_COMMAND: 'VERSION' }, stdin: '' })}\n`,
    );
    expect(JSON.parse(good.answer)).toEqual({ ok: true, result: { echo: 'VERSION' } });
    const big = await exchange(sock(), Buffer.alloc(1024 * 1024 + 1, 0x20));
    expect(JSON.parse(big.answer)).toEqual({
      ok: false,
      error: { code: 106, msg: 'request exceeds 1048576 bytes' },
    });
    await new Promise((r) => setImmediate(r));
    expect(logLines.filter((l) => l.msg === 'rejected CNI socket request' && l.code === 106)).toHaveLength(1);
  });

  it('cuts a stalled request at the deadline, then drops a peer that stays open', async () => {
    const r = await exchange(sock(), '{"v":1,', { end: false, stayOpen: true });
    expect(JSON.parse(r.answer)).toMatchObject({ ok: false, error: { code: 106 } });
    expect(r.how).toBe('close');
    expect(r.ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(r.ms).toBeLessThan(TIMEOUT_MS + ANSWER_LINGER_MS + 1000);
  }, 10_000);

  it('a refused line that still parses names its verb, container and pod, and is counted as a failed call', async () => {
    // A shim of another protocol version during an upgrade: every ADD fails with 106, and the
    // operator must see which pods and the metrics must count them.
    const env = {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc',
      CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
    };
    await exchange(sock(), `${JSON.stringify({ v: 2, env, stdin: '' })}\n`);
    await exchange(sock(), `${JSON.stringify({ v: 2, env: { CNI_COMMAND: 'x'.repeat(300) }, stdin: '' })}\n`);
    await exchange(sock(), Buffer.alloc(1024 * 1024 + 1, 0x20));
    await new Promise((r) => setImmediate(r));
    const lines = logLines.filter((l) => l.msg === 'rejected CNI socket request');
    expect(lines[0]).toMatchObject({
      verb: 'ADD',
      pod: 'shop/web-1',
      containerId: 'c0ffee001122',
      outcome: 'error',
      code: 106,
    });
    expect(lines[0]!.durationMs).toEqual(expect.any(Number));
    // An unknown verb is not repeated (untrusted input, and a metrics label): none at all.
    expect(lines[1]).not.toHaveProperty('verb');
    expect(rejected.map((r) => [r.verb, r.outcome, r.code])).toEqual([
      ['ADD', 'error', 106],
      ['', 'error', 106],
      ['', 'error', 106],
    ]);
  });

  it('logs a complete line it cannot decode (another protocol version, bad JSON) like any refusal', async () => {
    const r = await exchange(sock(), `${JSON.stringify({ v: 2, env: {}, stdin: '' })}\n`);
    expect(JSON.parse(r.answer)).toMatchObject({ ok: false, error: { code: 106 } });
    const bad = await exchange(sock(), '{"v":1,\n');
    expect(JSON.parse(bad.answer)).toMatchObject({ ok: false, error: { code: 106 } });
    await new Promise((r) => setImmediate(r));
    expect(logLines.filter((l) => l.msg === 'rejected CNI socket request' && l.code === 106)).toHaveLength(2);
  });

  it('on close, also waits for a call whose request arrives during the grace period', async () => {
    const slow = new CniServer({
      socketPath: join(dir, 'slow', 'cni.sock'),
      handler: async (req) => {
        await new Promise((r) => setTimeout(r, 150));
        return okResponse({ echo: req.env.CNI_COMMAND ?? null });
      },
      log: createLogger({ level: 'silent' }),
      requestTimeoutMs: 5_000,
    });
    await slow.listen();
    const line = (verb: string): string =>
      `${JSON.stringify({ v: 1, env: { CNI_COMMAND: verb }, stdin: '' })}\n`;
    // One call in flight; another connection accepted but its request still to come.
    const first = exchange(join(dir, 'slow', 'cni.sock'), line('ADD'));
    const late = createConnection({ path: join(dir, 'slow', 'cni.sock'), allowHalfOpen: true });
    await new Promise<void>((r) => late.once('connect', () => r()));
    let lateAnswer = '';
    late.setEncoding('utf8').on('data', (d: string) => {
      lateAnswer += d;
    });
    const lateDone = new Promise<void>((r) => late.once('close', () => r()));
    await new Promise((r) => setTimeout(r, 50));
    const closing = slow.close(5_000);
    await new Promise((r) => setTimeout(r, 50));
    late.end(line('DEL')); // arrives while the first call still runs
    await closing;
    await lateDone;
    expect(JSON.parse((await first).answer)).toEqual({ ok: true, result: { echo: 'ADD' } });
    expect(JSON.parse(lateAnswer)).toEqual({ ok: true, result: { echo: 'DEL' } });
  });

  it('on close with no call running, still waits for a connection whose request is on its way', async () => {
    const path = join(dir, 'idle', 'cni.sock');
    const idle = new CniServer({
      socketPath: path,
      handler: async (req) => okResponse({ echo: req.env.CNI_COMMAND ?? null }),
      log: createLogger({ level: 'silent' }),
      requestTimeoutMs: 5_000,
    });
    await idle.listen();
    // A shim that connected just before the SIGTERM, its request still to come.
    const late = createConnection({ path, allowHalfOpen: true });
    await new Promise<void>((r) => late.once('connect', () => r()));
    let answer = '';
    late.setEncoding('utf8').on('data', (d: string) => {
      answer += d;
    });
    const lateDone = new Promise<void>((r) => late.once('close', () => r()));
    await new Promise((r) => setTimeout(r, 20)); // the server has accepted it
    const closing = idle.close(5_000);
    await new Promise((r) => setTimeout(r, 30));
    late.end(`${JSON.stringify({ v: 1, env: { CNI_COMMAND: 'ADD' }, stdin: '' })}\n`);
    expect(await closing).toBe(0);
    await lateDone;
    expect(JSON.parse(answer)).toEqual({ ok: true, result: { echo: 'ADD' } });
  });

  it('on close, a connection that never sends its request is answered at its timeout, or counted as cut at the grace', async () => {
    for (const [graceMs, cut] of [
      [5_000, 0],
      [50, 1],
    ] as const) {
      const path = join(dir, `mute-${graceMs}`, 'cni.sock');
      const server = new CniServer({
        socketPath: path,
        handler: async () => okResponse(null),
        log: createLogger({ level: 'silent' }),
        requestTimeoutMs: TIMEOUT_MS,
      });
      await server.listen();
      const mute = createConnection({ path, allowHalfOpen: true });
      await new Promise<void>((r) => mute.once('connect', () => r()));
      let answer = '';
      mute.setEncoding('utf8').on('data', (d: string) => {
        answer += d;
      });
      mute.on('error', () => {});
      const muteDone = new Promise<void>((r) => mute.once('close', () => r()));
      await new Promise((r) => setTimeout(r, 20));
      const started = performance.now();
      expect(await server.close(graceMs), `grace ${graceMs}`).toBe(cut);
      const took = performance.now() - started;
      mute.end();
      await muteDone;
      if (cut === 0) {
        expect(took).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
        expect(JSON.parse(answer)).toMatchObject({ ok: false, error: { code: 106 } });
      } else {
        expect(answer).toBe('');
      }
    }
  });

  it('refuses a partial line followed by FIN at once', async () => {
    const r = await exchange(sock(), '{"v":1,"env"');
    expect(JSON.parse(r.answer)).toEqual({
      ok: false,
      error: { code: 106, msg: 'connection closed before a complete request line' },
    });
    expect(r.ms).toBeLessThan(TIMEOUT_MS);
  });
});

/**
 * A DEL through the real service whose datapath waits (it finds no lease, then looks for the host
 * veth, which waits until release()), behind a real CniServer, logging into `lines`.
 */
async function waitingDelServer() {
  const dir = mkdtempSync(join(tmpdir(), 'trl-rel-gone-'));
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (d: Buffer) => {
    for (const l of d.toString('utf8').trim().split('\n'))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  const calls: CniCallRecord[] = [];
  const gate = { held: Promise.resolve(), release: () => {} };
  const hold = (): void => {
    gate.held = new Promise<void>((r) => {
      gate.release = r;
    });
  };
  hold();
  const datapath = {
    ipam: {
      get: () => undefined,
      heldAddresses: () => [],
      releaseDeferred: () => ({ found: false, durable: Promise.resolve() }),
    },
    deleter: { wait: async () => {} },
    host: {
      getLink: async () => {
        await gate.held;
        return undefined;
      },
    },
    netns: {},
  } as unknown as DatapathDeps;
  const log = createLogger({ level: 'info', destination: out });
  const service = createCniService({
    datapath,
    mutex: new KeyedMutex(),
    log,
    readiness: { notReadyReason: () => undefined },
    defaultMtu: () => 1500,
    onCall: (r) => calls.push(r),
  });
  const socketPath = join(dir, 'cni.sock');
  const server = new CniServer({
    socketPath,
    handler: service.handle,
    log,
    requestTimeoutMs: 5000,
    onReject: () => {},
  });
  await server.listen();
  const request = (id: string) =>
    encodeRequest(
      {
        CNI_COMMAND: 'DEL',
        CNI_CONTAINERID: id,
        CNI_NETNS: '/var/run/netns/p1',
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/opt/cni/bin',
      },
      JSON.stringify({ cniVersion: '1.0.0', name: 'trellis', type: 'trellis' }),
    );
  const untilLines = async (n: number) => {
    for (let i = 0; i < 200 && lines.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    expect(lines).toHaveLength(n);
  };
  return { dir, lines, calls, gate, hold, server, socketPath, request, untilLines };
}

describe('a CNI call whose plugin gave up before the answer', () => {
  it('is logged as not answered, at warn, and counted as a 105 error; a call still waited for is not', async () => {
    const { dir, lines, calls, gate, hold, server, socketPath, request, untilLines } =
      await waitingDelServer();
    try {
      // The plugin sends its request and goes (the runtime's timeout killed it) before the agent answers.
      const gone = createConnection({ path: socketPath });
      await new Promise<void>((r) => gone.write(request('c-gone'), () => r()));
      await new Promise((r) => setTimeout(r, 50));
      gone.destroy();
      await new Promise((r) => setTimeout(r, 50));
      gate.release();
      await untilLines(1);
      expect(lines[0]).toMatchObject({
        level: 'warn',
        verb: 'DEL',
        containerId: 'c-gone',
        outcome: 'ok',
        answered: false,
        msg: 'CNI DEL ok, but the plugin had already given up (not answered)',
      });
      expect(calls).toEqual([expect.objectContaining({ verb: 'DEL', outcome: 'error', code: 105 })]);

      // One that waits gets its answer, and a plain line.
      hold();
      setTimeout(() => gate.release(), 50);
      const r = await exchange(socketPath, request('c-waits'), { end: false });
      expect(JSON.parse(r.answer)).toMatchObject({ ok: true });
      await untilLines(2);
      expect(lines[1]).toMatchObject({ level: 'info', containerId: 'c-waits', msg: 'CNI DEL ok' });
      expect(lines[1]!.answered).toBeUndefined();
      expect(calls[1]).toMatchObject({ verb: 'DEL', outcome: 'ok' });

      // One that half-closes after its request (allowed) still waits for the answer: heard.
      hold();
      setTimeout(() => gate.release(), 50);
      const half = await exchange(socketPath, request('c-half'));
      expect(JSON.parse(half.answer)).toMatchObject({ ok: true });
      await untilLines(3);
      expect(lines[2]).toMatchObject({ level: 'info', containerId: 'c-half', msg: 'CNI DEL ok' });
      expect(calls[2]).toMatchObject({ verb: 'DEL', outcome: 'ok' });
    } finally {
      await server.close(100);
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("a call the agent's stop cut at the end of its grace is logged as cut by the agent, and counted as 11", async () => {
    const { dir, lines, calls, gate, server, socketPath, request, untilLines } = await waitingDelServer();
    try {
      // The plugin waits for its answer; the agent stops meanwhile, and its grace runs out first.
      const waiting = exchange(socketPath, request('c-cut'), { end: false });
      await new Promise((r) => setTimeout(r, 50));
      // The stop is told how many it cut, for its warning.
      expect(await server.close(50)).toBe(1);
      expect((await waiting).answer).toBe('');
      gate.release();
      await untilLines(1);
      expect(lines[0]).toMatchObject({
        level: 'warn',
        verb: 'DEL',
        containerId: 'c-cut',
        outcome: 'ok',
        answered: false,
        cutBy: 'agent stop',
        msg: 'CNI DEL ok, but the agent stopping had cut the connection first (its stop grace ran out; not answered)',
      });
      expect(calls).toEqual([expect.objectContaining({ verb: 'DEL', outcome: 'error', code: 11 })]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
