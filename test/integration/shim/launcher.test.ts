import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * dist/bin/trellis-agent, the launcher the image's entrypoint and the manifests run: it adds the
 * agent's V8 flags and passes TRELLIS_NODE_FLAGS on to node (for the flags NODE_OPTIONS refuses).
 */
const LAUNCHER = join(import.meta.dirname, '..', '..', '..', 'dist', 'bin', 'trellis-agent');
const skip = existsSync(LAUNCHER) ? undefined : 'dist/bin/trellis-agent is missing: run scripts/build.ts';

const run = (flags: string | undefined) =>
  spawnSync(LAUNCHER, ['--version'], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', ...(flags === undefined ? {} : { TRELLIS_NODE_FLAGS: flags }) },
  });

describe.skipIf(skip !== undefined)(`agent launcher${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('passes TRELLIS_NODE_FLAGS to node, which NODE_OPTIONS would refuse for --optimize-for-size', () => {
    expect(run(undefined)).toMatchObject({ status: 0, stdout: expect.stringMatching(/^trellis-agent /) });
    expect(run('--optimize-for-size --max-semi-space-size=2')).toMatchObject({ status: 0 });
    // Proof that the flags reach node at all: it rejects one it does not know.
    const bad = run('--no-such-flag');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('bad option: --no-such-flag');
  });

  it("runs node with the agent's V8 flags and MALLOC_ARENA_MAX=2, unless the environment sets one", () => {
    // -p prints the expression instead of running the agent; the rest of the command line is kept.
    const probe = (env: Record<string, string>): [string[], string] =>
      JSON.parse(
        spawnSync(LAUNCHER, ['--version'], {
          encoding: 'utf8',
          env: {
            PATH: process.env.PATH ?? '',
            TRELLIS_NODE_FLAGS: '-p JSON.stringify([process.execArgv,process.env.MALLOC_ARENA_MAX])',
            ...env,
          },
        }).stdout,
      );
    const [flags, arenas] = probe({});
    expect(flags.slice(0, 5)).toEqual([
      '--max-semi-space-size=1',
      '--optimize-for-size',
      '--no-opt',
      '--no-maglev',
      // An exit could deadlock with a Sparkplug job on a worker (scripts/build.ts says how it was found).
      '--no-concurrent-sparkplug',
    ]);
    expect(arenas).toBe('2');
    expect(probe({ MALLOC_ARENA_MAX: '4' })[1]).toBe('4');
  });
});
