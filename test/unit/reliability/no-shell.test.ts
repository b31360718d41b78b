/**
 * Nothing trellis runs goes through a shell: nft (and every other child process) gets an argv array
 * and stdin, never a command line. Grep-level, over every source file that ships: a shell option,
 * child_process.exec/execSync, or a spawn of `sh`/`bash` would let a container id, interface name or
 * CIDR become shell syntax.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..', '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

const shipped = [...sources(join(ROOT, 'pkg')), ...sources(join(ROOT, 'cmd'))];

describe('no shell anywhere in shipped code', () => {
  it('finds the shipped sources', () => {
    expect(shipped.length).toBeGreaterThan(30);
    expect(shipped.some((f) => f.endsWith(join('pkg', 'masq', 'nft.ts')))).toBe(true);
  });

  it.each(shipped.map((f) => [relative(ROOT, f), f]))('%s', (_rel, file) => {
    const text = readFileSync(file, 'utf8');
    expect(text, 'a shell option').not.toMatch(/\bshell\s*:\s*(true|['"`])/);
    expect(text, 'child_process.exec/execSync (a shell)').not.toMatch(
      /import\s*\{[^}]*\b(exec|execSync)\b[^}]*\}\s*from\s*'node:child_process'/,
    );
    expect(text, 'spawning a shell').not.toMatch(
      /(spawn|execFile|execFileSync|spawnSync)\(\s*['"`](\/bin\/)?(sh|bash)['"`]/,
    );
  });
});
