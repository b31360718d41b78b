import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Runs the kind end-to-end suite (run.sh) when a Docker engine and kind are available; otherwise the
 * suite is skipped with run.sh's own one-line reason. run.sh decides (--preflight), so the two never
 * disagree about what "available" means.
 */

const runSh = join(dirname(fileURLToPath(import.meta.url)), 'run.sh');

const skipReason: string | undefined = (() => {
  const r = spawnSync('bash', [runSh, '--preflight'], { encoding: 'utf8', timeout: 60_000 });
  if (r.status === 0) return undefined;
  return (r.stdout.trim() || r.stderr.trim() || `run.sh --preflight exited ${r.status}`).replace(
    /^kind e2e skipped: /,
    '',
  );
})();

describe.skipIf(skipReason !== undefined)(`kind e2e${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  it(
    'trellis installs on kind and the pod network works (IPv4 and dual-stack clusters)',
    () => {
      // --require: from here on a missing prerequisite is a failure, not a silent skip.
      const r = spawnSync('bash', [runSh, '--require'], { stdio: 'inherit', timeout: 55 * 60_000 });
      expect(r.error).toBeUndefined();
      expect(r.status).toBe(0);
    },
    60 * 60_000,
  );
});
