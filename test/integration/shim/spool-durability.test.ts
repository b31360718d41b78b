import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * A replayed spool file's removal must be on disk before the agent goes on (a removal a crash undoes
 * replays the DEL later, possibly over a pod ADDed again under the same container ID). What the
 * process asks of the kernel is traced: the unlink, then the directory opened and fsynced.
 */
const strace = spawnSync('strace', ['-V']).status === 0;
const why = strace ? undefined : 'strace is not installed';

describe.skipIf(why !== undefined)(
  `spool removal is durable${why === undefined ? '' : ` (skipped: ${why})`}`,
  () => {
    it('removeSpooled syncs the spool directory after the unlink', () => {
      const dir = mkdtempSync(join(tmpdir(), 'trl-spool-'));
      try {
        const file = join(dir, 'entry.json');
        writeFileSync(file, '{}');
        const trace = join(dir, 'trace');
        const script = `import { removeSpooled } from ${JSON.stringify(join(import.meta.dirname, '../../../pkg/shim/spool-fs.ts'))};\nawait removeSpooled(${JSON.stringify(file)});\n`;
        const r = spawnSync(
          'strace',
          [
            '-f',
            '-qq',
            '-e',
            'trace=unlink,unlinkat,openat,fsync',
            '-o',
            trace,
            process.execPath,
            '--input-type=module',
            '-e',
            script,
          ],
          { encoding: 'utf8' },
        );
        expect(r.status, r.stderr).toBe(0);
        const lines = readFileSync(trace, 'utf8').split('\n');
        const unlinked = lines.findIndex((l) => /unlink(at)?\(.*entry\.json"/.test(l) && / = 0$/.test(l));
        expect(unlinked).toBeGreaterThanOrEqual(0);
        // The directory opened after it, and that descriptor fsynced.
        const after = lines.slice(unlinked + 1);
        const open = after
          .map((l) => new RegExp(`openat\\(AT_FDCWD, "${dir}", .*\\) = (\\d+)$`).exec(l))
          .find((m) => m !== null);
        expect(open).toBeDefined();
        expect(after.some((l) => new RegExp(`fsync\\(${open![1]}\\) += 0$`).test(l))).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);
