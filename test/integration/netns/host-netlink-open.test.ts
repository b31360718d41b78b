import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

const REPO = join(import.meta.dirname, '..', '..', '..');

/**
 * The agent's host netlink handle (one socket of its own, four off-thread) opened with too few file
 * descriptors left: a real EMFILE, made by filling a child's table under a low RLIMIT_NOFILE. Every
 * outcome is either the whole handle or an error with nothing left open; a handle without its
 * off-thread sockets (deletions then block the JS thread for good) was returned before, and the
 * sockets opened before the failure stayed open.
 */
const CHILD = `
import { closeSync, openSync, readdirSync } from 'node:fs';
import { openHostNetlink } from '${join(REPO, 'pkg/netns/index.ts')}';
const open = () => readdirSync('/proc/self/fd').length;
const out = [];
for (let free = 1; free <= 8; free++) {
  const fillers = [];
  for (;;) {
    try { fillers.push(openSync('/dev/null', 'r')); } catch { break; }
  }
  for (let i = 0; i < free; i++) closeSync(fillers.pop());
  const before = open();
  let r;
  try {
    const h = openHostNetlink();
    r = { free, whole: typeof h.deleteLinkInBackground === 'function' };
    h.close();
  } catch (e) {
    // An off-thread socket's close waits for its queue (a microtask here): counted after a tick.
    await new Promise((done) => setTimeout(done, 10));
    r = { free, threw: String(e.message), leaked: open() - before };
  }
  for (const fd of fillers) closeSync(fd);
  out.push(r);
}
process.stdout.write(JSON.stringify(out));
`;

/**
 * A namespace opened with no descriptor left: the agent's trouble, said as such (5), not a missing
 * namespace (102); and a lease's namespace judged then is no verdict at all, not "gone" (the sweeps
 * would free a running pod's address). With descriptors again, the same calls see the namespace.
 */
const NETNS_CHILD = `
import { closeSync, openSync } from 'node:fs';
import { leaseNetnsLive, netnsIdentityOf } from '${join(REPO, 'pkg/datapath/netns-identity.ts')}';
import { createNetnsPort, isNetns, openNetnsFd } from '${join(REPO, 'pkg/netns/index.ts')}';
const port = createNetnsPort();
const path = '/proc/self/ns/net';
const lease = { netns: path, netnsId: netnsIdentityOf(port, path) };
const attempt = (f) => {
  try {
    return { value: f() };
  } catch (e) {
    return { code: e.code, message: e.message };
  }
};
const fillers = [];
for (;;) {
  try { fillers.push(openSync('/dev/null', 'r')); } catch { break; }
}
const out = {
  open: attempt(() => { closeSync(openNetnsFd(path)); return 'opened'; }),
  isNetns: attempt(() => isNetns(path)),
  identity: attempt(() => netnsIdentityOf(port, path)),
  live: attempt(() => leaseNetnsLive(lease, port)),
  liveByPath: attempt(() => leaseNetnsLive({ netns: path }, port)),
  pid: process.pid,
};
// One descriptor free: the namespace of a path named by process id opens, its process's stat does not.
const byPid = \`/proc/\${process.pid}/ns/net\`;
closeSync(fillers.pop());
out.pidIdentity = attempt(() => netnsIdentityOf(port, byPid));
out.pidLive = attempt(() => leaseNetnsLive({ netns: byPid, netnsId: 'recorded' }, port));
for (const fd of fillers) closeSync(fd);
out.after = {
  isNetns: isNetns(path),
  live: leaseNetnsLive(lease, port),
  recorded: typeof lease.netnsId,
  pidIdentity: typeof netnsIdentityOf(port, byPid),
};
process.stdout.write(JSON.stringify(out));
`;

describe.skipIf(netnsSkipReason !== undefined)(
  'openHostNetlink out of file descriptors (real EMFILE)',
  () => {
    const pool = new NetnsPool();
    const dirs: string[] = [];
    afterEach(() => {
      pool.cleanup();
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });

    /** `source` run by Node in a namespace of its own, with at most `nofile` descriptors. */
    function runLimited(source: string, nofile: number): SpawnSyncReturns<string> {
      const ns = pool.add('fdlim');
      const dir = mkdtempSync(join(tmpdir(), 'trl-fdlim-'));
      dirs.push(dir);
      const script = join(dir, 'child.ts');
      writeFileSync(script, source);
      return spawnSync(
        'ip',
        ['netns', 'exec', ns.name, 'prlimit', `--nofile=${nofile}`, process.execPath, script],
        {
          encoding: 'utf8',
          timeout: 60_000,
        },
      );
    }

    it("a namespace opened or judged out of descriptors: an IO failure naming EMFILE, not 'namespace not found' or 'gone'", () => {
      const r = runLimited(NETNS_CHILD, 256);
      expect(r.status, r.stderr).toBe(0);
      const emfile = { code: 5, message: 'cannot open network namespace /proc/self/ns/net: EMFILE' };
      const pidPath = `/proc/${JSON.parse(r.stdout).pid}/ns/net`;
      const statEmfile = { code: 5, message: `cannot open network namespace ${pidPath}: EMFILE` };
      expect(JSON.parse(r.stdout)).toEqual({
        open: emfile,
        isNetns: emfile,
        identity: emfile,
        live: emfile,
        liveByPath: emfile,
        pid: expect.any(Number),
        pidIdentity: statEmfile,
        pidLive: statEmfile,
        after: { isNetns: true, live: true, recorded: 'string', pidIdentity: 'string' },
      });
    });

    it('gives the whole handle or fails with nothing left open, whatever socket the limit hits', () => {
      const r = runLimited(CHILD, 512);
      expect(r.status, r.stderr).toBe(0);
      const outcomes = JSON.parse(r.stdout) as {
        free: number;
        whole?: boolean;
        threw?: string;
        leaked?: number;
      }[];
      // Some attempts fail (too few fds), at least one succeeds (enough): the range covers the edge.
      expect(outcomes.some((o) => o.threw !== undefined)).toBe(true);
      expect(outcomes.some((o) => o.whole === true)).toBe(true);
      for (const o of outcomes) {
        if (o.threw !== undefined) expect(o, JSON.stringify(outcomes)).toMatchObject({ leaked: 0 });
        else expect(o.whole, JSON.stringify(outcomes)).toBe(true);
      }
    });
  },
);
