/**
 * The bench scripts' command lines (bench/lib/cli.ts), through the real scripts: each one is started
 * as a user starts it, and must answer --help, a mistyped option and a bad number before it builds a
 * namespace or an agent (none of these runs needs root).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { usageOf } from '../../../bench/lib/cli.ts';
import { type ChildOutput, childOutput } from '../../support/child-output.ts';

const BENCH = join(import.meta.dirname, '..', '..', '..', 'bench');
const SCRIPTS = readdirSync(BENCH).filter((f) => f.endsWith('.ts'));

function run(script: string, args: string[]): Promise<ChildOutput> {
  return childOutput(
    spawn(process.execPath, [join(BENCH, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
}

describe('bench scripts: the command line', () => {
  it('finds the scripts', () => {
    expect(SCRIPTS).toEqual(expect.arrayContaining(['cni-latency.ts', 'route-convergence.ts', 'soak.ts']));
  });

  it('--help prints each script’s header with its own invocation, exit 0', async () => {
    const runs = await Promise.all(SCRIPTS.map((s) => run(s, ['--help'])));
    SCRIPTS.forEach((script, i) => {
      const r = runs[i]!;
      expect(r.code, `${script}: ${r.stderr}`).toBe(0);
      expect(r.stdout, script).toContain(`bench/${script}`);
      expect(r.stdout, script).not.toMatch(/^\s*\*/m);
      expect(r.stdout).toBe(usageOf(join(BENCH, script)));
    });
  });

  it('a mistyped option: one line naming the script and the option, exit 2, nothing on stdout', async () => {
    const runs = await Promise.all(SCRIPTS.map((s) => run(s, ['--rns', '4'])));
    SCRIPTS.forEach((script, i) => {
      expect(runs[i], script).toEqual({
        code: 2,
        stdout: '',
        stderr: `${script}: Unknown option '--rns' (--help lists the options)\n`,
      });
    });
  });

  it.each([
    ['cni-latency.ts', ['--runs', 'four'], "--runs takes an integer >= 1, not 'four'"],
    ['cni-latency.ts', ['--pods', '0'], "--pods takes an integer >= 1, not '0'"],
    ['cni-latency.ts', ['--concurrent', ''], "--concurrent takes an integer >= 1, not ''"],
    ['route-convergence.ts', ['--nodes', '1'], "--nodes takes an integer >= 2, not '1'"],
    ['footprint.ts', ['--minutes=-1'], "--minutes takes a number >= 0.1, not '-1'"],
    ['soak.ts', ['--ping-every', '2.5'], "--ping-every takes an integer >= 0, not '2.5'"],
    ['datapath.ts', ['--seconds', 'Infinity'], "--seconds takes an integer >= 1, not 'Infinity'"],
  ])('%s %j: exit 2 before any work', async (script, args, message) => {
    expect(await run(script, args)).toEqual({
      code: 2,
      stdout: '',
      stderr: `${script}: ${message} (--help lists the options)\n`,
    });
  });
});

describe('usageOf', () => {
  const dir = mkdtempSync(join(tmpdir(), 'trl-benchcli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes the leading doc comment, without its stars, blank edge lines or what follows', () => {
    const file = join(dir, 'demo.ts');
    writeFileSync(
      file,
      '/**\n *\n * What it measures.\n *\n *   node bench/demo.ts [--runs 3]\n */\nimport x from "y";\n/** later */\n',
    );
    expect(usageOf(file)).toBe('What it measures.\n\n  node bench/demo.ts [--runs 3]\n');
  });

  it('a script without one gets a one-line usage', () => {
    const file = join(dir, 'bare.ts');
    writeFileSync(file, 'import x from "y";\n/** not leading */\n');
    expect(usageOf(file)).toBe('usage: node_modules/.bin/node bench/bare.ts [options]\n');
  });
});
