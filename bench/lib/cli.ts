/**
 * Command-line options for the bench scripts: `--help` prints the script's own header comment (its
 * usage lines live there, next to the code they describe), and a mistyped option or a value that is
 * not a number ends the script with one line and exit 2 before it builds anything, not with a stack
 * trace or a run of NaN rounds.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

/** Exit status for a bad command line, as getopt-style tools use. */
const USAGE_EXIT = 2;

/** The script's leading `/** ... *\/` comment as plain lines, or a one-line fallback. */
export function usageOf(script: string): string {
  const source = readFileSync(script, 'utf8');
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source)?.[1];
  if (header === undefined) return `usage: node_modules/.bin/node bench/${basename(script)} [options]\n`;
  const lines = header.split('\n').map((l) => l.replace(/^\s*\* ?/, ''));
  while (lines[0]?.trim() === '') lines.shift();
  while (lines.at(-1)?.trim() === '') lines.pop();
  return `${lines.join('\n')}\n`;
}

function usageError(script: string, message: string): never {
  process.stderr.write(`${basename(script)}: ${message} (--help lists the options)\n`);
  process.exit(USAGE_EXIT);
}

/**
 * parseArgs with `--help`/`-h` added, strict, and no positionals. `script` is the caller's
 * import.meta.filename.
 */
export function benchArgs<const O extends ParseArgsOptionsConfig>(
  script: string,
  options: O,
): ReturnType<typeof parseArgs<{ options: O }>>['values'] {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    usageError(script, (err as Error).message);
  }
  if (values.help === true) {
    process.stdout.write(usageOf(script));
    process.exit(0);
  }
  delete values.help;
  return values as ReturnType<typeof parseArgs<{ options: O }>>['values'];
}

/**
 * A numeric option's value: an integer of at least `min` unless `fraction` allows any finite number
 * of at least `min`. Fails like a bad option when it is not.
 */
export function numberArg(
  script: string,
  name: string,
  value: string,
  { min = 1, fraction = false }: { min?: number; fraction?: boolean } = {},
): number {
  const n = value.trim() === '' ? Number.NaN : Number(value);
  const ok = Number.isFinite(n) && n >= min && (fraction || Number.isInteger(n));
  if (!ok)
    usageError(script, `--${name} takes ${fraction ? 'a number' : 'an integer'} >= ${min}, not '${value}'`);
  return n;
}
