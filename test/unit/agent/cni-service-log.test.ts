import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createCniService, type Readiness } from '../../../pkg/agent/cni-service.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import { capturedLog } from '../../support/captured-log.ts';

/** A datapath whose every call fails with `error`. */
function failingDatapath(error: Error): DatapathDeps {
  const failing = new Proxy(
    {},
    {
      get: (_t, prop) =>
        prop === 'then'
          ? undefined
          : () => {
              throw error;
            },
    },
  ) as never;
  return { host: failing, netns: failing, ipam: failing, deleter: failing };
}

/** A datapath with nothing in it: DEL finds no lease and no veth, which is success. */
function emptyDatapath(): DatapathDeps {
  return {
    ipam: {
      get: () => undefined,
      heldAddresses: () => [],
      releaseDeferred: () => ({ found: false, durable: Promise.resolve() }),
    },
    deleter: { wait: async () => {} },
    host: { getLink: async () => undefined },
    netns: {},
  } as unknown as DatapathDeps;
}

const ENV = {
  CNI_CONTAINERID: 'c1',
  CNI_NETNS: '/var/run/netns/p1',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
};
const CONF = { cniVersion: '1.0.0', name: 'trellis', type: 'trellis' };

/** One call through the service: its answer and the one log line it wrote. */
async function call(
  datapath: DatapathDeps,
  command: string,
  conf: Record<string, unknown> = CONF,
  readiness: Readiness = { notReadyReason: () => undefined },
  env: Record<string, string> = {},
  level: 'info' | 'debug' = 'info',
): Promise<{ ok: boolean; line: Record<string, unknown>; code?: number }> {
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (d: Buffer) => {
    for (const l of d.toString('utf8').trim().split('\n'))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  const { handle } = createCniService({
    datapath,
    mutex: new KeyedMutex(),
    log: createLogger({ level, destination: out }),
    readiness,
    defaultMtu: () => 1500,
  });
  const response = await handle({
    v: 1,
    env: { ...ENV, CNI_COMMAND: command, ...env },
    stdin: JSON.stringify(conf),
  });
  for (let i = 0; i < 20 && lines.length === 0; i++) await new Promise((r) => setImmediate(r));
  expect(lines).toHaveLength(1);
  return { ok: response.ok, line: lines[0]!, ...(response.ok ? {} : { code: response.error.code }) };
}

async function logOf(error: Error): Promise<Record<string, unknown>> {
  const { ok, line } = await call(failingDatapath(error), 'ADD');
  expect(ok).toBe(false);
  return line;
}

describe('the CNI call log line', () => {
  it('carries the details of a failed call, such as an undo that failed and what it left', async () => {
    const details = 'undo failed: release lease: IPAM state directory /var/lib/trellis/ipam: EROFS';
    const line = await logOf(new CniError(CniCode.NETLINK_FAILED, 'RTM_NEWLINK trl0123: ENOMEM', details));
    expect(line).toMatchObject({
      level: 'warn',
      msg: 'CNI ADD failed',
      pod: 'shop/web-1',
      code: CniCode.NETLINK_FAILED,
      error: 'RTM_NEWLINK trl0123: ENOMEM',
      details,
    });
    expect(line).not.toHaveProperty('stack');
  });

  it('a call refused for its CNI_* variables still names its pod, container and interface', async () => {
    const { ok, code, line } = await call(emptyDatapath(), 'ADD', CONF, undefined, { CNI_NETNS: 'p1' });
    expect(ok).toBe(false);
    expect(code).toBe(CniCode.INVALID_ENV);
    expect(line).toMatchObject({
      level: 'warn',
      msg: 'CNI ADD failed',
      verb: 'ADD',
      pod: 'shop/web-1',
      containerId: 'c1',
      ifname: 'eth0',
      code: CniCode.INVALID_ENV,
    });
    // CNI_ARGS it cannot parse: no pod, the rest still named.
    const bad = await call(emptyDatapath(), 'ADD', CONF, undefined, { CNI_NETNS: 'p1', CNI_ARGS: 'garbage' });
    expect(bad.line).toMatchObject({ verb: 'ADD', containerId: 'c1', ifname: 'eth0' });
    expect(bad.line.pod).toBeUndefined();
  });

  it('an internal error carries its stack instead, at error level', async () => {
    const line = await logOf(new Error('boom'));
    expect(line).toMatchObject({ level: 'error', code: CniCode.INTERNAL });
    expect(String(line.stack)).toContain('boom');
    expect(line).not.toHaveProperty('details');
  });

  it('a DEL that ignored a prevResult it could not parse says so at warn, naming what and where', async () => {
    const prevResult = { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/32', gateway: '10.244.1' }] };
    const { ok, line } = await call(emptyDatapath(), 'DEL', { ...CONF, prevResult });
    expect(ok).toBe(true);
    expect(line).toMatchObject({
      level: 'warn',
      msg: 'CNI DEL ok',
      outcome: 'ok',
      prevResultIgnored: 'prevResult.ips[0].gateway "10.244.1" is not an IP address',
    });
    // With a prevResult that parses (or none) the line stays at info, without the field.
    const plain = await call(emptyDatapath(), 'DEL', { ...CONF, prevResult: { cniVersion: '1.0.0' } });
    expect(plain.line).toMatchObject({ level: 'info', msg: 'CNI DEL ok' });
    expect(plain.line).not.toHaveProperty('prevResultIgnored');
  });
});

describe('a call that does not end', () => {
  it('is said while it runs, once, with what it is; its own line follows when it ends', async () => {
    const { log, lines } = capturedLog('info');
    let release = (): void => {};
    const stuck = emptyDatapath();
    // The DEL waits for the veth's deletion in the background: here it never ends until released.
    stuck.deleter.wait = () => new Promise<void>((resolve) => (release = resolve));
    const { handle } = createCniService({
      datapath: stuck,
      mutex: new KeyedMutex(),
      log,
      readiness: { notReadyReason: () => undefined },
      defaultMtu: () => 1500,
      stuckCallMs: 50,
    });
    const answer = handle({ v: 1, env: { ...ENV, CNI_COMMAND: 'DEL' }, stdin: JSON.stringify(CONF) });
    // Its line comes once the 50 ms are up (later on a loaded machine): waited for, not slept on.
    for (let i = 0; i < 250 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100)); // and no second one
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'warn',
        msg: 'CNI DEL still running (its own line comes when it ends)',
        verb: 'DEL',
        pod: 'shop/web-1',
        containerId: 'c1',
        ifname: 'eth0',
        elapsedMs: expect.any(Number),
      }),
    ]);
    // libuv fires a timer by its cached loop time: a little before 50 ms by the clock, at times.
    expect(lines[0]!.elapsedMs as number).toBeGreaterThanOrEqual(45);
    release();
    expect((await answer).ok).toBe(true);
    for (let i = 0; i < 20 && lines.length < 2; i++) await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => l.msg)).toEqual([
      'CNI DEL still running (its own line comes when it ends)',
      'CNI DEL ok',
    ]);
  });
});

describe('STATUS of a ready agent', () => {
  it('is logged at debug: containerd 2 and CRI-O ask every few seconds, and the ADD and DEL lines must stay readable', async () => {
    const r = await call(emptyDatapath(), 'STATUS', { ...CONF, cniVersion: '1.1.0' }, undefined, {}, 'debug');
    expect(r.ok).toBe(true);
    expect(r.line).toMatchObject({ msg: 'CNI STATUS ok', level: 'debug' });
  });
});

describe('STATUS of an agent that is not ready', () => {
  const notReady = (restarting: boolean): Readiness => ({
    notReadyReason: () => 'waiting for the first reconcile',
    restarting: () => restarting,
  });

  it('fails with 50 naming the reason, unless an agent was ready here moments ago (a restart)', async () => {
    const cold = await call(emptyDatapath(), 'STATUS', { ...CONF, cniVersion: '1.1.0' }, notReady(false));
    expect(cold.ok).toBe(false);
    expect(cold.code).toBe(CniCode.NOT_AVAILABLE);
    const warm = await call(emptyDatapath(), 'STATUS', { ...CONF, cniVersion: '1.1.0' }, notReady(true));
    expect(warm.ok).toBe(true);
    expect(warm.line).toMatchObject({
      msg: 'CNI STATUS ok',
      note: 'not ready yet (waiting for the first reconcile), but ready moments ago on this node: STATUS answers ready',
    });
  });

  it('a STATUS failing the same way at every call is a warning once, then debug; ready again is said at info', async () => {
    const { log, lines } = capturedLog('debug');
    let reason: string | undefined = 'waiting for the first reconcile';
    const { handle } = createCniService({
      datapath: emptyDatapath(),
      mutex: new KeyedMutex(),
      log,
      readiness: { notReadyReason: () => reason, restarting: () => false },
      defaultMtu: () => 1500,
    });
    const status = async () => {
      const seen = lines.length;
      await handle({
        v: 1,
        env: { ...ENV, CNI_COMMAND: 'STATUS' },
        stdin: JSON.stringify({ ...CONF, cniVersion: '1.1.0' }),
      });
      for (let i = 0; i < 20 && lines.length === seen; i++) await new Promise((r) => setImmediate(r));
      return lines[lines.length - 1]!;
    };
    expect((await status()).level).toBe('warn');
    expect((await status()).level).toBe('debug');
    expect((await status()).level).toBe('debug');
    reason = 'waiting for this node to get a pod CIDR';
    expect(await status()).toMatchObject({ level: 'warn', error: expect.stringContaining('pod CIDR') });
    reason = undefined;
    expect(await status()).toMatchObject({ level: 'info', msg: 'CNI STATUS ok', failedBefore: true });
    expect((await status()).level).toBe('debug');
  });

  it('an interface name the lease store refuses is a permanent error (4), not "try again later" (11)', async () => {
    const add = await call(emptyDatapath(), 'ADD', CONF, notReady(true), { CNI_IFNAME: 'e@1' });
    expect(add.ok).toBe(false);
    expect(add.code).toBe(CniCode.INVALID_ENV);
    expect(add.line.waitedForReadyMs).toBeUndefined();
  });

  it('ADD is refused at once by an agent that was not ready moments ago', async () => {
    const add = await call(emptyDatapath(), 'ADD', CONF, notReady(false));
    expect(add.ok).toBe(false);
    expect(add.code).toBe(CniCode.TRY_AGAIN_LATER);
    expect(add.line.waitedForReadyMs).toBeUndefined();
  });
});

describe('ADD to a restarted agent that is not ready yet (STATUS vouched for the node)', () => {
  /** Ready after `polls` readiness checks beyond the first; never when Infinity. */
  const readyAfter = (polls: number, stopping?: AbortSignal): Readiness & { checks: () => number } => {
    let checks = 0;
    return {
      notReadyReason: () => (checks++ > polls ? undefined : 'waiting for the first reconcile'),
      restarting: () => true,
      ...(stopping === undefined ? {} : { stopping }),
      checks: () => checks,
    };
  };
  const datapathError = new CniError(CniCode.IO_FAILURE, 'the datapath was reached');

  it('waits for readiness, then does the ADD', async () => {
    const readiness = readyAfter(3);
    const add = await call(failingDatapath(datapathError), 'ADD', CONF, readiness);
    // The datapath's own error: the ADD went on once the agent was ready.
    expect(add.code).toBe(CniCode.IO_FAILURE);
    expect(readiness.checks()).toBe(5);
    expect(add.line.waitedForReadyMs).toBeGreaterThan(0);
  });

  it("waits under the attachment's lock: a DEL the runtime sends meanwhile runs after the ADD", async () => {
    let ready = false;
    const out = new PassThrough();
    const verbs: string[] = [];
    out.on('data', (d: Buffer) => {
      for (const l of d.toString('utf8').trim().split('\n'))
        verbs.push((JSON.parse(l) as { verb: string }).verb);
    });
    const { handle } = createCniService({
      datapath: emptyDatapath(),
      mutex: new KeyedMutex(),
      log: createLogger({ level: 'info', destination: out }),
      readiness: { notReadyReason: () => (ready ? undefined : 'starting'), restarting: () => true },
      defaultMtu: () => 1500,
    });
    const request = (command: string) => ({
      v: 1 as const,
      env: { ...ENV, CNI_COMMAND: command },
      stdin: JSON.stringify(CONF),
    });
    const add = handle(request('ADD'));
    await new Promise((r) => setTimeout(r, 120));
    const del = handle(request('DEL'));
    await new Promise((r) => setTimeout(r, 120));
    ready = true;
    await Promise.all([add, del]);
    for (let i = 0; i < 20 && verbs.length < 2; i++) await new Promise((r) => setImmediate(r));
    expect(verbs).toEqual(['ADD', 'DEL']);
  });

  it('gives up after a quarter of the call timeout with 11, and at once when the agent stops', async () => {
    const add = await call(
      failingDatapath(datapathError),
      'ADD',
      { ...CONF, timeoutMs: 400 },
      readyAfter(Infinity),
    );
    expect(add.code).toBe(CniCode.TRY_AGAIN_LATER);
    expect(add.line.waitedForReadyMs).toBeGreaterThanOrEqual(50);
    expect(add.line.waitedForReadyMs).toBeLessThan(400);
    const stopped = readyAfter(Infinity, AbortSignal.abort());
    const refused = await call(failingDatapath(datapathError), 'ADD', CONF, stopped);
    expect(refused.code).toBe(CniCode.TRY_AGAIN_LATER);
    expect(stopped.checks()).toBe(1);
  });
});

describe('busy keys with a lock shared with other work', () => {
  it('a key is busy while CNI calls on it are queued or running, and not after, whatever else holds the lock', async () => {
    const mutex = new KeyedMutex();
    const { handle, busyKeys } = createCniService({
      datapath: emptyDatapath(),
      mutex,
      log: createLogger({ level: 'silent' }),
      readiness: { notReadyReason: () => undefined },
      defaultMtu: () => 1500,
    });
    const key = 'c1\0eth0';
    // A host-end repair holds the key; a DEL queues behind it; another repair queues behind the DEL.
    let releaseFirst!: () => void;
    const first = mutex.run(key, () => new Promise<void>((r) => (releaseFirst = r)));
    const del = handle({ v: 1, env: { ...ENV, CNI_COMMAND: 'DEL' }, stdin: JSON.stringify(CONF) });
    let releaseSecond!: () => void;
    const second = mutex.run(key, () => new Promise<void>((r) => (releaseSecond = r)));
    await new Promise((r) => setImmediate(r));
    expect([...busyKeys]).toEqual([key]);
    releaseFirst();
    expect((await del).ok).toBe(true);
    // The DEL is over while the second repair still holds the lock: the key is no longer busy.
    expect([...busyKeys]).toEqual([]);
    await new Promise((r) => setImmediate(r));
    releaseSecond();
    await Promise.all([first, second]);
    expect([...busyKeys]).toEqual([]);
  });

  it("the agent's own work through `locked` (a veth pair made again) makes the key busy, and CNI calls wait for it", async () => {
    const { handle, busyKeys, locked } = createCniService({
      datapath: emptyDatapath(),
      mutex: new KeyedMutex(),
      log: createLogger({ level: 'silent' }),
      readiness: { notReadyReason: () => undefined },
      defaultMtu: () => 1500,
    });
    const order: string[] = [];
    let finish!: () => void;
    const reattach = locked('c1', 'eth0', async () => {
      order.push('reattach');
      await new Promise<void>((r) => (finish = r));
      order.push('reattached');
    });
    const del = handle({ v: 1, env: { ...ENV, CNI_COMMAND: 'DEL' }, stdin: JSON.stringify(CONF) }).then(
      (r) => {
        order.push('DEL');
        return r;
      },
    );
    await new Promise((r) => setImmediate(r));
    expect([...busyKeys]).toEqual(['c1\0eth0']);
    finish();
    await reattach;
    expect((await del).ok).toBe(true);
    expect(order).toEqual(['reattach', 'reattached', 'DEL']);
    expect([...busyKeys]).toEqual([]);
  });
});
