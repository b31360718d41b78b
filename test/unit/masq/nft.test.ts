import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NftError, NftRunner } from '../../../pkg/masq/nft.ts';

// The runner's process handling, exercised with real programs standing in for nft (no root needed).
// nft itself is exercised in test/integration/masq.
describe('NftRunner process handling', () => {
  it('passes the ruleset on stdin and argv verbatim, without a shell', async () => {
    const cat = new NftRunner({ nftPath: 'cat' });
    const text = 'table inet x {}\n$(touch /tmp/should-not-exist) ; `id`\n';
    expect(await cat.run(['-'], text)).toBe(text);
    const echo = new NftRunner({ nftPath: 'echo', argvPrefix: ['env'] });
    expect(await echo.run(['a b', '$HOME', ';', '|'])).toBe('a b $HOME ; |\n');
  });

  it('types failures with exit code and stderr', async () => {
    const sh = new NftRunner({ nftPath: 'sh' });
    const err = await sh.run(['-c', 'echo "Error: syntax error" >&2; exit 1']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).exitCode).toBe(1);
    expect((err as NftError).stderr).toBe('Error: syntax error\n');
    expect((err as NftError).message).toMatch(/exit code 1: Error: syntax error$/);
  });

  it('reports a missing binary as NftError', async () => {
    const missing = new NftRunner({ nftPath: '/nonexistent/nft' });
    const err = await missing.apply('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).exitCode).not.toBe(0);
    // Said in words: the operator reads the message, not the cause (errno -2 is no exit code).
    expect((err as NftError).message).toBe(
      '/nonexistent/nft -f -: could not start: /nonexistent/nft not found (ENOENT; is nftables installed and on PATH?)',
    );
  });

  it('remembers the pids of the processes it ran (the committers its nf_tables notifications name)', async () => {
    const sh = new NftRunner({ nftPath: 'sh' });
    const pid = Number(await sh.run(['-c', 'echo $$']));
    expect(pid).toBeGreaterThan(1);
    expect(sh.ran(pid)).toBe(true);
    expect(sh.ran(process.pid)).toBe(false);
  });

  it('kills nft after the timeout', async () => {
    const slow = new NftRunner({ nftPath: 'sleep', timeoutMs: 100 });
    const t0 = Date.now();
    const err = await slow.run(['10']).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).timedOut).toBe(true);
  });
});

describe('NftRunner when the process is out of file descriptors', () => {
  it('rejects with NftError instead of taking the process down (spawn without pipes: EMFILE)', () => {
    // A Node process with a tiny fd limit that uses up its descriptors, then asks the runner for nft:
    // spawn cannot make its pipes, hands back a child without stdio and emits 'error' a tick later.
    const program = `
      import { openSync } from 'node:fs';
      import { NftRunner } from ${JSON.stringify(join(import.meta.dirname, '..', '..', '..', 'pkg', 'masq', 'nft.ts'))};
      const held = [];
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
      const err = await new NftRunner({ nftPath: 'true' }).run([]).then(() => undefined, (e) => e);
      console.log(JSON.stringify({ name: err?.name, message: err?.message, cause: err?.cause?.code }));
      // spawn's timeout timer outlives a child that never started: without this, 10 s more.
      process.exit(0);
    `;
    const r = spawnSync(
      'prlimit',
      ['--nofile=40:40', process.execPath, '--input-type=module', '-e', program],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { name: string; message: string; cause: string };
    expect(out).toMatchObject({ name: 'NftError', cause: 'EMFILE' });
    expect(out.message).toContain('could not start');
  });
});
