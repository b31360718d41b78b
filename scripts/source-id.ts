/**
 * Which source a build or a benchmark result comes from: HEAD's short hash, and for uncommitted
 * changes to tracked files outside bench/ "+dirty." and a hash of their diff, so that a build and the
 * checkout it is compared with agree when the tracked source that goes into dist/ is the same.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';

/** undefined outside a git checkout (the image build has no .git). */
export function sourceId(root: string): string | undefined {
  try {
    const git = (...args: string[]): string =>
      execFileSync('git', ['-C', root, ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        maxBuffer: 256 << 20,
      });
    const head = git('rev-parse', '--short', 'HEAD').trim();
    // The diff with the settings that change its text pinned (external diff tools, textconv, colours,
    // prefixes, renames, context, algorithm), binary changes included; untracked files are not in it.
    const diff = git(
      'diff',
      '--no-ext-diff',
      '--no-textconv',
      '--no-color',
      '--binary',
      '--src-prefix=a/',
      '--dst-prefix=b/',
      '--no-renames',
      '--unified=3',
      '--inter-hunk-context=0',
      '--diff-algorithm=myers',
      'HEAD',
      '--',
      '.',
      ':(exclude)bench',
    );
    if (diff === '') return head;
    return `${head}+dirty.${createHash('sha1').update(diff).digest('hex').slice(0, 8)}`;
  } catch {
    return undefined;
  }
}

/** Whether bench/ itself (its scripts, not its results and chart) differs from HEAD. */
export function benchChanged(root: string): boolean {
  try {
    const out = execFileSync(
      'git',
      [
        '-C',
        root,
        'status',
        '--porcelain',
        '--untracked-files=no',
        '--',
        'bench',
        ':(exclude)bench/results',
        ':(exclude)bench/cni-add-latency.svg',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    return out.trim() !== '';
  } catch {
    return false;
  }
}
