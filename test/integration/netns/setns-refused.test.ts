import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { netnsSkipReason } from '../../support/netns.ts';

const REPO = join(import.meta.dirname, '..', '..', '..');
const hasSetpriv = spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;

/**
 * setns refused to the agent (a process without CAP_SYS_ADMIN: EPERM) is the agent's trouble, said as
 * an IO failure (5): "namespace not found" (102) sent the runtime and the operator after a pod's
 * namespace that is there, and DEL takes that code for done. Run as an unprivileged user, in its own
 * namespace: the real kernel's refusal.
 */
const CHILD = `
import { withNetns } from '${join(REPO, 'pkg/netns/index.ts')}';
let out;
try {
  out = { value: withNetns('/proc/self/ns/net', () => 'entered') };
} catch (e) {
  out = { code: e.code, message: e.message };
}
process.stdout.write(JSON.stringify(out));
`;

describe.skipIf(netnsSkipReason !== undefined || !hasSetpriv)('setns refused to the agent', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('is an IO failure naming EPERM, not a namespace not found', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trl-setns-'));
    dirs.push(dir);
    chmodSync(dir, 0o755); // readable by the unprivileged user
    const script = join(dir, 'child.ts');
    writeFileSync(script, CHILD, { mode: 0o644 });
    const as = (...priv: string[]) =>
      spawnSync('setpriv', [...priv, process.execPath, script], { encoding: 'utf8', timeout: 60_000 });
    // Root enters its own namespace; uid 4242 without capabilities is refused by the kernel.
    const root = as('--reuid=0');
    expect(root.status, root.stderr).toBe(0);
    expect(JSON.parse(root.stdout)).toEqual({ value: 'entered' });
    const r = as('--reuid=4242', '--regid=4242', '--clear-groups', '--inh-caps=-all');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      code: 5,
      message: 'cannot enter network namespace /proc/self/ns/net: setns: EPERM',
    });
  });
});
