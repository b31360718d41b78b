import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { LATEST_VERSION, SUPPORTED_VERSIONS } from '../../../pkg/cni/version.ts';
import { DEFAULT_SOCKET, DEFAULT_SPOOL_DIR } from '../../../pkg/shim/config.ts';
import { decodeRequest, encodeResponse, errorResponse } from '../../../pkg/shim/protocol.ts';
import { markerVouches, READY_MARK_REFRESH_MS, STATUS_GRACE_MS } from '../../../pkg/shim/ready-marker.ts';
import { runShim, type ShimIo, type SpoolPort } from '../../../pkg/shim/shim.ts';
import { type Transport, TransportError, type TransportTimeouts } from '../../../pkg/shim/transport.ts';

const ADD_ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c0ffee01',
  CNI_NETNS: '/var/run/netns/cni-1234',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web',
  CNI_PATH: '/opt/cni/bin',
};
const envFor = (command: string): Record<string, string> =>
  command === 'ADD' || command === 'CHECK' || command === 'DEL'
    ? { ...ADD_ENV, CNI_COMMAND: command }
    : { CNI_COMMAND: command, CNI_PATH: '/opt/cni/bin' };

const conf = (extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ cniVersion: '1.0.0', name: 'trellis', type: 'trellis', ...extra });
/** GC and STATUS arrived in 1.1.0: a config of an older version is refused for them. */
const confFor = (command: string): string =>
  conf(command === 'GC' || command === 'STATUS' ? { cniVersion: '1.1.0' } : {});

const RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/cni-1234' }],
  ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 0 }],
};

interface Call {
  socket: string;
  line: string;
  timeouts: TransportTimeouts;
}

/** An in-process transport: records calls and answers (or fails) as told. */
function fakeTransport(outcome: string | TransportError | CniError): { connect: Transport; calls: Call[] } {
  const calls: Call[] = [];
  const connect: Transport = (socket, line, timeouts) => {
    calls.push({ socket, line, timeouts });
    if (typeof outcome === 'string') return outcome;
    throw outcome;
  };
  return { connect, calls };
}

function recordingSpool(fail?: Error): SpoolPort & { spooled: [string, string, string, string][] } {
  const spooled: [string, string, string, string][] = [];
  return {
    spooled,
    spoolDel: (dir, containerId, ifname, line) => {
      if (fail !== undefined) throw fail;
      spooled.push([dir, containerId, ifname, line]);
      return join(dir, 'x.del.json');
    },
  };
}

function io(
  env: Record<string, string | undefined>,
  stdin: ShimIo['stdin'],
  connect: Transport,
  spool: SpoolPort = recordingSpool(),
): ShimIo {
  return { env, stdin, connect, spool };
}

const unreachable = new TransportError('unreachable', 'ECONNREFUSED');

describe('runShim decisions (in-process transport)', () => {
  it('answers VERSION itself, echoing the config version, without calling the agent', () => {
    const t = fakeTransport(unreachable);
    const out = runShim(io({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}', t.connect));
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: '0.4.0',
      supportedVersions: [...SUPPORTED_VERSIONS],
    });
    expect(t.calls).toEqual([]);
    const bare = runShim(io({ CNI_COMMAND: 'VERSION' }, '', t.connect));
    expect(JSON.parse(bare.stdout).cniVersion).toBe(LATEST_VERSION);
  });

  it('forwards ADD to the default socket and prints the agent result', () => {
    const t = fakeTransport(encodeResponse({ ok: true, result: RESULT }));
    const stdin = conf();
    const out = runShim(io({ ...ADD_ENV, HOME: '/root', SECRET: 's3cr3t' }, stdin, t.connect));
    expect(out).toEqual({ stdout: `${JSON.stringify(RESULT)}\n`, stderr: '', exitCode: 0 });
    expect(t.calls).toHaveLength(1);
    expect(t.calls[0]?.socket).toBe(DEFAULT_SOCKET);
    expect(t.calls[0]?.timeouts).toEqual({ connectMs: 2000, totalMs: 60_000 });
    expect(decodeRequest(t.calls[0]!.line)).toEqual({ v: 1, env: ADD_ENV, stdin });
  });

  it('uses the config socket and timeoutMs, and a shorter default for STATUS', () => {
    const t = fakeTransport(encodeResponse({ ok: true, result: {} }));
    runShim(io(ADD_ENV, conf({ socket: '/tmp/x/agent.sock', timeoutMs: 500 }), t.connect));
    expect(t.calls[0]).toMatchObject({
      socket: '/tmp/x/agent.sock',
      timeouts: { connectMs: 500, totalMs: 500 },
    });
    runShim(io(envFor('STATUS'), conf(), t.connect));
    expect(t.calls[1]?.timeouts).toEqual({ connectMs: 2000, totalMs: 10_000 });
  });

  for (const command of ['DEL', 'CHECK', 'STATUS', 'GC']) {
    it(`prints nothing when the agent accepts ${command}`, () => {
      const spool = recordingSpool();
      const t = fakeTransport(encodeResponse({ ok: true, result: null }));
      const out = runShim(io(envFor(command), conf({ cniVersion: '1.1.0' }), t.connect, spool));
      expect(out).toEqual({ stdout: '', stderr: '', exitCode: 0 });
      expect(spool.spooled).toEqual([]);
    });
  }

  it('prints the agent error with the config cniVersion and exits 1', () => {
    const t = fakeTransport(
      encodeResponse(errorResponse(new CniError(101, 'pool exhausted', '10.244.1.0/24'))),
    );
    const out = runShim(io(ADD_ENV, conf({ cniVersion: '0.4.0' }), t.connect));
    expect(out.exitCode).toBe(1);
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: '0.4.0',
      code: 101,
      msg: 'pool exhausted',
      details: '10.244.1.0/24',
    });
  });

  it('fails a DEL the agent rejected (only transport failures are spooled)', () => {
    const spool = recordingSpool();
    const t = fakeTransport(
      encodeResponse(errorResponse(new CniError(CniCode.TRY_AGAIN_LATER, 'not ready'))),
    );
    const out = runShim(io(envFor('DEL'), conf(), t.connect, spool));
    expect(out.exitCode).toBe(1);
    expect(JSON.parse(out.stdout).code).toBe(11);
    expect(spool.spooled).toEqual([]);
  });

  const unreachableMsg =
    'trellis agent is not reachable at /run/trellis/cni.sock (ECONNREFUSED); is the trellis DaemonSet pod running on this node?';
  for (const [command, code] of [
    ['ADD', 11],
    ['CHECK', 11],
    ['GC', 11],
    ['STATUS', 50],
  ] as const) {
    it(`agent unreachable: ${command} fails with ${code} naming the socket`, () => {
      const out = runShim(io(envFor(command), confFor(command), fakeTransport(unreachable).connect));
      expect(out.exitCode).toBe(1);
      const cniVersion = JSON.parse(confFor(command)).cniVersion as string;
      expect(JSON.parse(out.stdout)).toEqual({ cniVersion, code, msg: unreachableMsg });
    });
  }

  it('agent unreachable: DEL is spooled (config spoolDir) and succeeds with empty stdout', () => {
    const spool = recordingSpool();
    const stdin = conf({ spoolDir: '/tmp/trl-spool' });
    const out = runShim(io(envFor('DEL'), stdin, fakeTransport(unreachable).connect, spool));
    expect(out.exitCode).toBe(0);
    expect(out.stdout).toBe('');
    expect(out.stderr).toContain('DEL recorded in /tmp/trl-spool/x.del.json');
    expect(spool.spooled).toHaveLength(1);
    const [dir, containerId, ifname, line] = spool.spooled[0]!;
    expect([dir, containerId, ifname]).toEqual(['/tmp/trl-spool', 'c0ffee01', 'eth0']);
    expect(decodeRequest(line)).toEqual({ v: 1, env: envFor('DEL'), stdin });
  });

  it('agent unreachable: a DEL whose prevResult does not parse is spooled as it is (the shim never reads it)', () => {
    for (const prevResult of [
      { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', interface: 4 }] },
      { cniVersion: '0.2.0', ip4: { ip: '10.244.1.9/32' } },
      'x',
    ]) {
      const spool = recordingSpool();
      const stdin = conf({ prevResult });
      const out = runShim(io(envFor('DEL'), stdin, fakeTransport(unreachable).connect, spool));
      expect(out.exitCode, out.stdout).toBe(0);
      expect(out.stdout).toBe('');
      expect(decodeRequest(spool.spooled[0]![3]).stdin).toBe(stdin);
    }
  });

  it('agent unreachable: a config the agent would refuse for good is refused as it would, never spooled', () => {
    const cases: [string, Record<string, unknown>, number, string][] = [
      ['DEL', { name: undefined }, 7, 'name is required'],
      ['DEL', { name: 'bad name' }, 7, 'name "bad name" must start'],
      ['DEL', { type: undefined }, 7, 'invalid network configuration: type is required'],
      ['DEL', { type: 5 }, 7, 'type must be a string, not number'],
      ['DEL', { name: undefined, type: '' }, 7, 'name is required; type is required'],
      ['DEL', { cniVersion: undefined }, 1, 'no cniVersion'],
      ['DEL', { cniVersion: '1.0' }, 1, 'incompatible CNI versions: config is "1.0"'],
      ['DEL', { cniVersion: 1 }, 7, 'cniVersion must be a string, not number'],
      ['ADD', { cniVersion: '0.2.0' }, 1, 'incompatible CNI versions'],
      ['CHECK', { cniVersion: '0.3.1' }, 1, 'CHECK'],
    ];
    for (const [command, extra, code, msg] of cases) {
      const spool = recordingSpool();
      const out = runShim(io(envFor(command), conf(extra), fakeTransport(unreachable).connect, spool));
      const what = `${command} ${JSON.stringify(extra)}`;
      expect(out.exitCode, what).toBe(1);
      expect(JSON.parse(out.stdout), what).toMatchObject({ code, msg: expect.stringContaining(msg) });
      expect(spool.spooled, what).toEqual([]);
    }
    // The same ADD with a good config is "try again later": the agent may come back.
    const out = runShim(io(envFor('ADD'), conf(), fakeTransport(unreachable).connect));
    expect(JSON.parse(out.stdout)).toMatchObject({ code: 11 });
  });

  it('spools DEL to the default directory when the config names none', () => {
    const spool = recordingSpool();
    runShim(io(envFor('DEL'), conf(), fakeTransport(unreachable).connect, spool));
    expect(spool.spooled[0]?.[0]).toBe(DEFAULT_SPOOL_DIR);
  });

  it('DEL fails with 5 when the agent is down and the spool cannot be written', () => {
    const spool = recordingSpool(new CniError(CniCode.IO_FAILURE, 'could not spool the DEL to /x: EROFS'));
    const out = runShim(io(envFor('DEL'), conf(), fakeTransport(unreachable).connect, spool));
    expect(out.exitCode).toBe(1);
    const err = JSON.parse(out.stdout);
    expect(err.code).toBe(CniCode.IO_FAILURE);
    expect(err.msg).toContain('not reachable at /run/trellis/cni.sock');
    expect(err.msg).toContain('EROFS');
  });

  it('agent too slow: 105 for ADD, 50 for STATUS (without a fresh ready marker), spool for DEL', () => {
    const slow = new TransportError('timeout', 'no answer within 60000 ms');
    const add = runShim(io(ADD_ENV, conf(), fakeTransport(slow).connect));
    expect(JSON.parse(add.stdout)).toMatchObject({
      code: CniCode.AGENT_TIMEOUT,
      msg: 'trellis agent at /run/trellis/cni.sock did not answer ADD within 60000 ms',
    });
    const status = runShim(io(envFor('STATUS'), confFor('STATUS'), fakeTransport(slow).connect));
    expect(JSON.parse(status.stdout)).toMatchObject({
      code: CniCode.NOT_AVAILABLE,
      msg: expect.stringContaining('did not answer STATUS'),
    });
    const spool = recordingSpool();
    const del = runShim(io(envFor('DEL'), conf(), fakeTransport(slow).connect, spool));
    expect(del.exitCode).toBe(0);
    expect(spool.spooled).toHaveLength(1);
  });

  it('agent hung up: 11 for ADD, 50 for STATUS, spool for DEL', () => {
    const closed = new TransportError('closed', 'ECONNRESET');
    expect(JSON.parse(runShim(io(ADD_ENV, conf(), fakeTransport(closed).connect)).stdout).code).toBe(11);
    expect(
      JSON.parse(runShim(io(envFor('STATUS'), confFor('STATUS'), fakeTransport(closed).connect)).stdout).code,
    ).toBe(50);
    const spool = recordingSpool();
    expect(runShim(io(envFor('DEL'), conf(), fakeTransport(closed).connect, spool)).exitCode).toBe(0);
    expect(spool.spooled).toHaveLength(1);
  });

  describe('STATUS through an agent restart (the ready marker)', () => {
    const withMarker = (ageMs: number | undefined, connect: Transport, command = 'STATUS') => {
      const asked: string[] = [];
      const out = runShim({
        ...io(envFor(command), confFor(command), connect),
        fileAgeMs: (path) => {
          asked.push(path);
          return ageMs;
        },
      });
      return { out, asked };
    };
    const closed = new TransportError('closed', 'ECONNRESET');
    const slow = new TransportError('timeout', 'no answer within 10000 ms');

    it('succeeds while the marker is younger than the grace, whatever kept the agent from answering', () => {
      for (const err of [unreachable, closed, slow]) {
        const { out, asked } = withMarker(12_000, fakeTransport(err).connect);
        expect(out.exitCode, err.kind).toBe(0);
        expect(out.stdout).toBe('');
        expect(out.stderr).toContain('it was ready 12 s ago, so STATUS answers ready while it restarts');
        expect(asked).toEqual([`${DEFAULT_SOCKET}.ready`]);
      }
    });

    it('fails as before without a marker, with one older than the grace, or one from the future', () => {
      for (const age of [undefined, STATUS_GRACE_MS + 1, -60_000]) {
        const { out } = withMarker(age, fakeTransport(unreachable).connect);
        expect(out.exitCode, String(age)).toBe(1);
        expect(JSON.parse(out.stdout)).toMatchObject({ code: CniCode.NOT_AVAILABLE });
      }
    });

    it('not when the agent answers STATUS itself', () => {
      const refused = encodeResponse(errorResponse(new CniError(CniCode.NOT_AVAILABLE, 'not ready: x')));
      const answered = withMarker(1_000, fakeTransport(refused).connect);
      expect(JSON.parse(answered.out.stdout)).toMatchObject({
        code: CniCode.NOT_AVAILABLE,
        msg: 'not ready: x',
      });
      expect(answered.asked).toEqual([]);
    });

    describe('ADD waits for a restarting agent while the marker vouches', () => {
      /** A clock that only sleep moves, and a transport unreachable for the first `downFor` ms. */
      const restarting = (downFor: number, ageMs: number | undefined, timeoutMs?: number, attemptMs = 0) => {
        let clock = 1_000;
        const slept: number[] = [];
        const calls: TransportTimeouts[] = [];
        const connect: Transport = (_socket, _line, timeouts) => {
          calls.push(timeouts);
          if (clock - 1_000 < downFor) {
            clock += attemptMs; // a connect that waited (a full backlog) before it failed
            throw unreachable;
          }
          return encodeResponse({ ok: true, result: RESULT });
        };
        const out = runShim({
          ...io(ADD_ENV, conf(timeoutMs === undefined ? {} : { timeoutMs }), connect),
          fileAgeMs: () => ageMs,
          sleep: (ms) => {
            slept.push(ms);
            clock += ms;
          },
          now: () => clock,
        });
        return { out, slept, calls };
      };

      it('connects again every RESTART_RETRY_MS until the agent listens, the rest of the timeout left to the call', () => {
        const { out, slept, calls } = restarting(1_000, 3_000);
        expect(out.exitCode, out.stdout).toBe(0);
        expect(JSON.parse(out.stdout)).toEqual(RESULT);
        expect(slept).toEqual([250, 250, 250, 250]);
        expect(calls.map((c) => c.totalMs)).toEqual([60_000, 59_750, 59_500, 59_250, 59_000]);
      });

      it('the first attempt gets the whole timeout, whatever the clock did meanwhile; later ones whole milliseconds', () => {
        let clock = 0;
        const calls: TransportTimeouts[] = [];
        // 1200 ms: half of it leaves room for retries (RESTART_RETRY_MS apart), which 300 ms did not.
        runShim({
          ...io(ADD_ENV, conf({ timeoutMs: 1_200 }), (_s, _l, timeouts) => {
            calls.push(timeouts);
            throw unreachable;
          }),
          fileAgeMs: () => 1_000,
          sleep: (ms) => {
            clock += ms;
          },
          now: () => {
            clock += 0.37;
            return clock;
          },
        });
        expect(calls.length).toBeGreaterThan(1);
        expect(calls[0]).toEqual({ connectMs: 1_200, totalMs: 1_200 });
        for (const c of calls.slice(1)) {
          expect(Number.isInteger(c.totalMs), String(c.totalMs)).toBe(true);
          expect(c.totalMs).toBeLessThan(1_200);
          expect(c.connectMs).toBe(c.totalMs);
        }
      });

      it('counts the time its failed connects took, the first one included, against both the wait and the timeout', () => {
        const { out, slept, calls } = restarting(4_000, 3_000, undefined, 2_000);
        expect(out.exitCode, out.stdout).toBe(0);
        expect(slept).toEqual([250, 250]);
        expect(calls.map((c) => c.totalMs)).toEqual([60_000, 57_750, 55_500]);
      });

      it('gives up after RESTART_WAIT_MS, or half of a shorter timeout, with 11 saying it waited', () => {
        const long = restarting(Number.POSITIVE_INFINITY, 12_000);
        expect(long.slept.reduce((a, b) => a + b, 0)).toBe(30_000);
        expect(JSON.parse(long.out.stdout)).toMatchObject({
          code: CniCode.TRY_AGAIN_LATER,
          msg: expect.stringContaining(
            'It was ready 12 s before this call, which waited 30000 ms for it to come back.',
          ),
        });
        const short = restarting(Number.POSITIVE_INFINITY, 12_000, 4_000);
        expect(short.slept.reduce((a, b) => a + b, 0)).toBe(2_000);
        expect(JSON.parse(short.out.stdout).msg).toContain('waited 2000 ms');
      });

      it('also after an agent that closed the connection without an answer (it died with the call): asked again once it listens', () => {
        let clock = 0;
        const slept: number[] = [];
        const answers: (TransportError | string)[] = [
          new TransportError('closed', 'ECONNRESET'),
          unreachable,
          unreachable,
          encodeResponse({ ok: true, result: RESULT }),
        ];
        let asked = 0;
        const out = runShim({
          ...io(ADD_ENV, conf(), () => {
            const a = answers[asked++]!;
            if (typeof a !== 'string') throw a;
            return a;
          }),
          fileAgeMs: () => 1_000,
          sleep: (ms) => {
            slept.push(ms);
            clock += ms;
          },
          now: () => clock,
        });
        expect(out.exitCode, out.stdout).toBe(0);
        expect(JSON.parse(out.stdout)).toEqual(RESULT);
        expect([asked, slept]).toEqual([4, [250, 250, 250]]);
      });

      it('asks an agent that hung up on the call once more, not again (the call may be what makes it crash)', () => {
        let clock = 0;
        const hangUps = fakeTransport(new TransportError('closed', 'connection closed before any answer'));
        const out = runShim({
          ...io(ADD_ENV, conf(), hangUps.connect),
          fileAgeMs: () => 1_000,
          sleep: (ms) => {
            clock += ms;
          },
          now: () => clock,
        });
        expect(JSON.parse(out.stdout)).toMatchObject({ code: CniCode.TRY_AGAIN_LATER });
        expect(hangUps.calls.length).toBe(2);
      });

      it('not without a fresh marker, not for other verbs, not after a timeout (an agent that is there), not for EACCES', () => {
        for (const age of [undefined, STATUS_GRACE_MS + 1]) {
          const r = restarting(Number.POSITIVE_INFINITY, age);
          expect(r.slept, String(age)).toEqual([]);
          expect(JSON.parse(r.out.stdout)).toMatchObject({ code: CniCode.TRY_AGAIN_LATER });
          expect(JSON.parse(r.out.stdout).msg).not.toContain('waited');
        }
        const slept: number[] = [];
        const gc = runShim({
          ...io(envFor('GC'), confFor('GC'), fakeTransport(unreachable).connect),
          fileAgeMs: () => 1_000,
          sleep: (ms) => slept.push(ms),
          now: () => 0,
        });
        expect(JSON.parse(gc.stdout)).toMatchObject({ code: CniCode.TRY_AGAIN_LATER });
        const timedOut = fakeTransport(new TransportError('timeout', 'no answer'));
        const add = runShim({
          ...io(ADD_ENV, conf(), timedOut.connect),
          fileAgeMs: () => 1_000,
          sleep: (ms) => slept.push(ms),
          now: () => 0,
        });
        expect(JSON.parse(add.stdout)).toMatchObject({ code: CniCode.AGENT_TIMEOUT });
        expect([slept, timedOut.calls.length]).toEqual([[], 1]);
        // Nor a socket this process may not use: no restart changes that.
        const denied = fakeTransport(new TransportError('unreachable', 'EACCES'));
        let clock = 0;
        const refused = runShim({
          ...io(ADD_ENV, conf(), denied.connect),
          fileAgeMs: () => 1_000,
          sleep: (ms) => {
            slept.push(ms);
            clock += ms;
          },
          now: () => clock,
        });
        expect(JSON.parse(refused.stdout)).toMatchObject({ code: CniCode.TRY_AGAIN_LATER });
        expect([slept, denied.calls.length]).toEqual([[], 1]);
        // A hung-up agent without a fresh marker is not waited for either.
        const closed = fakeTransport(new TransportError('closed', 'ECONNRESET'));
        const stale = runShim({
          ...io(ADD_ENV, conf(), closed.connect),
          fileAgeMs: () => undefined,
          sleep: (ms) => slept.push(ms),
          now: () => 0,
        });
        expect(JSON.parse(stale.stdout)).toMatchObject({ code: CniCode.TRY_AGAIN_LATER });
        expect([slept, closed.calls.length]).toEqual([[], 1]);
      });
    });

    it('markerVouches: from a refresh ahead (clock skew) to the grace', () => {
      expect(markerVouches(undefined)).toBe(false);
      expect(markerVouches(-READY_MARK_REFRESH_MS - 1)).toBe(false);
      expect(markerVouches(-READY_MARK_REFRESH_MS)).toBe(true);
      expect(markerVouches(0)).toBe(true);
      expect(markerVouches(STATUS_GRACE_MS)).toBe(true);
      expect(markerVouches(STATUS_GRACE_MS + 1)).toBe(false);
    });
  });

  it('reports a malformed agent answer as INTERNAL', () => {
    const out = runShim(io(ADD_ENV, conf(), fakeTransport('{"ok":maybe}').connect));
    expect(JSON.parse(out.stdout)).toMatchObject({ code: CniCode.INTERNAL });
    expect(JSON.parse(out.stdout).msg).toMatch(/malformed answer from the trellis agent/);
    const noResult = runShim(io(ADD_ENV, conf(), fakeTransport('{"ok":true,"result":[1]}').connect));
    expect(JSON.parse(noResult.stdout).msg).toBe('the trellis agent answered ADD without a result object');
  });

  it('bad environment, agent down: code 4 naming every missing variable, with the config cniVersion', () => {
    const t = fakeTransport(unreachable);
    const out = runShim(io({ CNI_COMMAND: 'ADD' }, conf({ cniVersion: '0.3.1' }), t.connect));
    expect(out.exitCode).toBe(1);
    const err = JSON.parse(out.stdout);
    expect(err).toMatchObject({ cniVersion: '0.3.1', code: CniCode.INVALID_ENV });
    for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) expect(err.msg).toContain(v);
    expect(t.calls).toHaveLength(1); // the agent was asked first: it checks (and logs) the call
    const none = JSON.parse(runShim(io({}, conf(), t.connect)).stdout);
    expect(none).toMatchObject({ code: 4, msg: expect.stringContaining('CNI_COMMAND is required') });
    const unknown = JSON.parse(runShim(io({ CNI_COMMAND: 'ATTACH' }, conf(), t.connect)).stdout);
    expect(unknown).toMatchObject({ code: 4, msg: expect.stringContaining('unknown CNI_COMMAND') });
    expect(t.calls).toHaveLength(1); // no verb to ask the agent about
  });

  it('bad environment, agent up: the call is forwarded and the agent refusal printed', () => {
    const refusal = encodeResponse(
      errorResponse(
        new CniError(CniCode.INVALID_ENV, 'invalid CNI environment: CNI_IFNAME is required for ADD'),
      ),
    );
    const t = fakeTransport(refusal);
    const env = { ...ADD_ENV, CNI_IFNAME: undefined };
    const out = runShim(io(env, conf({ cniVersion: '0.4.0' }), t.connect));
    expect(out.exitCode).toBe(1);
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: '0.4.0',
      code: CniCode.INVALID_ENV,
      msg: 'invalid CNI environment: CNI_IFNAME is required for ADD',
    });
    expect(JSON.parse(t.calls[0]!.line).env).not.toHaveProperty('CNI_IFNAME');
  });

  it('bad environment and a failure of the shim itself: the environment error comes first', () => {
    const t = fakeTransport(unreachable);
    const badConfig = JSON.parse(
      runShim(io({ CNI_COMMAND: 'ADD' }, conf({ socket: 'relative.sock' }), t.connect)).stdout,
    );
    expect(badConfig).toMatchObject({ code: CniCode.INVALID_ENV });
    const huge = conf({ pad: 'x'.repeat(1024 * 1024) });
    expect(JSON.parse(runShim(io({ CNI_COMMAND: 'CHECK' }, huge, t.connect)).stdout).code).toBe(4);
    expect(t.calls).toEqual([]);
    const spool = recordingSpool();
    const del = runShim(io({ CNI_COMMAND: 'DEL', CNI_IFNAME: 'eth0' }, conf(), t.connect, spool));
    expect(JSON.parse(del.stdout)).toMatchObject({
      code: 4,
      msg: expect.stringContaining('CNI_CONTAINERID'),
    });
    expect(spool.spooled).toEqual([]); // nothing spooled for a DEL that names no container
  });

  it('unreadable stdin: code 5; malformed config: 6; bad shim fields: 7; oversized: 106', () => {
    const t = fakeTransport(unreachable);
    const unreadable = runShim(
      io(
        ADD_ENV,
        () => {
          throw new Error('EIO: read failed');
        },
        t.connect,
      ),
    );
    expect(JSON.parse(unreadable.stdout)).toMatchObject({
      cniVersion: LATEST_VERSION,
      code: 5,
      msg: expect.stringContaining('EIO: read failed'),
    });
    expect(JSON.parse(runShim(io(ADD_ENV, '{"cniVersion":', t.connect)).stdout).code).toBe(6);
    expect(JSON.parse(runShim(io(ADD_ENV, '[]', t.connect)).stdout).code).toBe(6);
    const badSocket = JSON.parse(runShim(io(ADD_ENV, conf({ socket: 'relative.sock' }), t.connect)).stdout);
    expect(badSocket).toMatchObject({
      code: 7,
      msg: expect.stringContaining('"socket" must be an absolute path'),
    });
    // Too long for a unix socket: refused as the config's fault (7), not reported unreachable (11),
    // and a DEL is not spooled as done for an agent that can never listen there.
    const longSocket = `/run/${'é'.repeat(50)}.sock`; // 106 characters, 156 bytes
    for (const env of [ADD_ENV, envFor('DEL')]) {
      const spool = recordingSpool();
      const out = runShim(io(env, conf({ socket: longSocket }), t.connect, spool));
      expect(out.exitCode).toBe(1);
      expect(JSON.parse(out.stdout)).toMatchObject({
        code: 7,
        msg: expect.stringContaining('"socket" must be at most 107 bytes'),
      });
      expect(spool.spooled).toEqual([]);
    }
    const badTimeout = JSON.parse(runShim(io(ADD_ENV, conf({ timeoutMs: 0 }), t.connect)).stdout);
    expect(badTimeout).toMatchObject({ code: 7, msg: expect.stringContaining('"timeoutMs"') });
    const huge = conf({ pad: 'x'.repeat(1024 * 1024) });
    expect(JSON.parse(runShim(io(ADD_ENV, huge, t.connect)).stdout).code).toBe(CniCode.BAD_REQUEST);
    expect(t.calls).toEqual([]);
  });

  it('null socket, spoolDir and timeoutMs are "not set", as the agent reads them: the defaults apply', () => {
    const t = fakeTransport(encodeResponse({ ok: true, result: null }));
    const out = runShim(
      io(envFor('DEL'), conf({ socket: null, spoolDir: null, timeoutMs: null }), t.connect),
    );
    expect(out.exitCode).toBe(0);
    expect(t.calls[0]).toMatchObject({ socket: DEFAULT_SOCKET, timeouts: { totalMs: 60_000 } });
  });

  it('DEL, GC and STATUS go on with their default timeout past a timeoutMs they cannot use; ADD and CHECK refuse it', () => {
    for (const command of ['DEL', 'GC', 'STATUS']) {
      const t = fakeTransport(encodeResponse({ ok: true, result: null }));
      const stdin = JSON.stringify({ ...JSON.parse(confFor(command)), timeoutMs: '5000' });
      const out = runShim(io(envFor(command), stdin, t.connect));
      expect(out.exitCode, command).toBe(0);
      expect(t.calls[0]?.timeouts.totalMs, command).toBe(command === 'STATUS' ? 10_000 : 60_000);
    }
    const agentDown = fakeTransport(unreachable);
    const spool = recordingSpool();
    const spooled = runShim(io(envFor('DEL'), conf({ timeoutMs: 0 }), agentDown.connect, spool));
    expect(spooled.exitCode).toBe(0);
    expect(spool.spooled).toHaveLength(1);
    for (const command of ['ADD', 'CHECK']) {
      const t = fakeTransport(encodeResponse({ ok: true, result: null }));
      const out = runShim(io(envFor(command), conf({ timeoutMs: '5000' }), t.connect));
      expect(JSON.parse(out.stdout), command).toMatchObject({
        code: 7,
        msg: expect.stringContaining('"timeoutMs"'),
      });
      expect(t.calls, command).toEqual([]);
    }
  });

  it('a DEL too large with its prevResult goes without it (DEL never reads it); ADD and CHECK still refuse', () => {
    const bigResult = { cniVersion: '1.0.0', ips: [{ address: '10.244.1.5/32', note: '"'.repeat(600_000) }] };
    const t = fakeTransport(encodeResponse({ ok: true, result: null }));
    const del = runShim(io(envFor('DEL'), conf({ prevResult: bigResult, socket: '/tmp/x.sock' }), t.connect));
    expect(del.exitCode).toBe(0);
    const sent = JSON.parse(decodeRequest(t.calls[0]!.line).stdin) as Record<string, unknown>;
    expect(sent).toEqual({ cniVersion: '1.0.0', name: 'trellis', type: 'trellis', socket: '/tmp/x.sock' });
    const check = runShim(io(envFor('CHECK'), conf({ prevResult: bigResult }), t.connect));
    expect(JSON.parse(check.stdout).code).toBe(CniCode.BAD_REQUEST);
    expect(t.calls).toHaveLength(1);
  });

  it('a DEL too large without its prevResult goes with only the fields DEL reads, to the agent or the spool', () => {
    const bulky = {
      prevResult: RESULT,
      runtimeConfig: { portMappings: [], note: 'x'.repeat(1_100_000) },
      args: { cni: { labels: [] } },
      spoolDir: '/tmp/spool',
      timeoutMs: 9000,
    };
    const kept = {
      cniVersion: '1.0.0',
      name: 'trellis',
      type: 'trellis',
      socket: '/tmp/x.sock',
      spoolDir: '/tmp/spool',
      timeoutMs: 9000,
    };
    const t = fakeTransport(encodeResponse({ ok: true, result: null }));
    const del = runShim(io(envFor('DEL'), conf({ ...bulky, socket: '/tmp/x.sock' }), t.connect));
    expect(del.exitCode).toBe(0);
    expect(JSON.parse(decodeRequest(t.calls[0]!.line).stdin)).toEqual(kept);
    const spool = recordingSpool();
    const spooled = runShim(
      io(envFor('DEL'), conf({ ...bulky, socket: '/tmp/x.sock' }), fakeTransport(unreachable).connect, spool),
    );
    expect(spooled.exitCode).toBe(0);
    expect(spool.spooled).toHaveLength(1);
    expect(JSON.parse(decodeRequest(spool.spooled[0]![3]).stdin)).toEqual(kept);
    const add = runShim(io(ADD_ENV, conf(bulky), t.connect));
    expect(JSON.parse(add.stdout).code).toBe(CniCode.BAD_REQUEST);
    expect(t.calls).toHaveLength(1);
  });
});
