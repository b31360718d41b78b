import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { NetnsDirWatch, PIN_RETRY_MS } from '../../../pkg/agent/netns-dir-watch.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';

/**
 * The pin directory's watch on a real directory (inotify): a new file is looked at until the handler
 * takes it for a namespace (a runtime mounts the namespace onto the file just after creating it, which
 * no event reports), for ~0.1 s at most; a removed file is reported once.
 */
describe('NetnsDirWatch (real directory)', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  function watchDir(appeared: (path: string) => 'started' | 'not-a-netns' | 'ignored') {
    const dir = mkdtempSync(join(tmpdir(), 'trl-pins-watch-'));
    const calls: { appeared: string[]; removed: string[] } = { appeared: [], removed: [] };
    const watch = new NetnsDirWatch(
      dir,
      {
        appeared: (p) => {
          calls.appeared.push(p);
          return appeared(p);
        },
        removed: (p) => calls.removed.push(p),
      },
      createLogger({ level: 'silent', destination: new PassThrough() }),
    );
    expect(watch.start()).toBe(true);
    cleanups.push(() => {
      watch.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    return { dir, calls };
  }

  const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /** A logger at warn whose lines are collected, parsed. */
  function warnings() {
    const out = new PassThrough();
    const logs: Record<string, unknown>[] = [];
    out.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n'))
        if (l !== '') logs.push(JSON.parse(l) as Record<string, unknown>);
    });
    return { log: createLogger({ level: 'warn', destination: out, pretty: false }), logs };
  }

  it('looks at a new file again until it is a namespace, then no more; its removal is reported', async () => {
    let looks = 0;
    const { dir, calls } = watchDir(() => (++looks < 4 ? 'not-a-netns' : 'started'));
    const path = join(dir, 'cni-1');
    writeFileSync(path, '');
    const deadline = Date.now() + 2000;
    while (looks < 4 && Date.now() < deadline) await settle(2);
    await settle(150); // past every retry: none may come after 'started'
    expect(calls.appeared).toEqual([path, path, path, path]);
    unlinkSync(path);
    const gone = Date.now() + 2000;
    while (calls.removed.length === 0 && Date.now() < gone) await settle(2);
    expect(calls.removed).toEqual([path]);
  });

  it('gives up on a file that never becomes a namespace after its retries', async () => {
    const { dir, calls } = watchDir(() => 'not-a-netns');
    writeFileSync(join(dir, 'plain'), '');
    const total = PIN_RETRY_MS.reduce((a: number, b: number) => a + b, 0);
    await settle(total + 200);
    expect(calls.appeared).toHaveLength(PIN_RETRY_MS.length);
  });

  it('a file removed while it is being looked at again (a pin unmounted, then removed): its removal is reported', async () => {
    const { dir, calls } = watchDir(() => 'not-a-netns');
    const path = join(dir, 'cni-2');
    writeFileSync(path, '');
    // Seven looks in (~11 ms), the next one 20 ms away: the removal's event comes while it waits.
    const deadline = Date.now() + 2000;
    while (calls.appeared.length < 7 && Date.now() < deadline) await settle(1);
    unlinkSync(path);
    const gone = Date.now() + 2000;
    while (calls.removed.length === 0 && Date.now() < gone) await settle(2);
    expect(calls.removed).toEqual([path]);
    const total = PIN_RETRY_MS.reduce((a: number, b: number) => a + b, 0);
    await settle(total);
    expect(calls.appeared.length).toBeLessThan(PIN_RETRY_MS.length); // the pending look was cancelled
  });

  it('the directory removed: said once, and the watch stops', async () => {
    const { log, logs } = warnings();
    const dir = mkdtempSync(join(tmpdir(), 'trl-pins-watch-'));
    const watch = new NetnsDirWatch(dir, { appeared: () => 'ignored', removed: () => undefined }, log);
    cleanups.push(() => {
      watch.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    expect(watch.start()).toBe(true);
    rmSync(dir, { recursive: true });
    const deadline = Date.now() + 2000;
    while (logs.length === 0 && Date.now() < deadline) await settle(5);
    expect(logs).toHaveLength(1);
    expect(String(logs[0]!.msg)).toContain('was removed');
  });

  it('the directory removed and made again at once (a runtime making it for its next pod): the new one is watched', async () => {
    const { dir, calls } = watchDir(() => 'started');
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    await settle(100); // the old directory's last events read
    const path = join(dir, 'cni-2');
    writeFileSync(path, '');
    const deadline = Date.now() + 2000;
    while (calls.appeared.length === 0 && Date.now() < deadline) await settle(5);
    expect(calls.appeared).toEqual([path]);
  });

  it('a directory that does not exist: start says so and nothing is watched', async () => {
    const { log, logs } = warnings();
    const watch = new NetnsDirWatch(
      join(tmpdir(), 'trl-no-such-dir-xyz'),
      { appeared: () => 'ignored', removed: () => undefined },
      log,
    );
    expect(watch.start()).toBe(false);
    await new Promise((r) => setImmediate(r));
    expect(logs[0]).toMatchObject({ dir: join(tmpdir(), 'trl-no-such-dir-xyz') });
    expect(String(logs[0]!.msg)).toContain('--netns-dir');
  });
});
