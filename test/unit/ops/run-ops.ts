import { type OpsCommand, type OpsDeps, runOpsCommand } from '../../../pkg/ops/cli.ts';

/**
 * `trellis-agent CMD ARGS` in-process: its exit code and what it printed. Deps a test leaves out are
 * an empty environment and a host handle and API reader that must not be used.
 */
export async function runOps(
  cmd: OpsCommand,
  args: readonly string[],
  deps: Partial<Omit<OpsDeps, 'stdout' | 'stderr'>> = {},
): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runOpsCommand(cmd, [...args], {
    env: {},
    openHost: () => {
      throw new Error('not used');
    },
    nodeReader: () => {
      throw new Error('not used');
    },
    ...deps,
    stdout: (t) => {
      out += t;
    },
    stderr: (t) => {
      err += t;
    },
  });
  return { code, out, err };
}
