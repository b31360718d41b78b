import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { type HttpListener, startAdminServer } from '../../../pkg/observe/http-server.ts';
import type { LeaseRow, LeasesView } from '../../../pkg/ops/views.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';

/**
 * An operator command's report read through a pipe by a slow reader (`kubectl exec` without a TTY,
 * `| jq`): the whole report arrives, not the 64 KiB the pipe took before the process exited.
 */
const skip = builtSkipReason();
const run = promisify(execFile);

/** 1,500 leases: ~300 KB of JSON, several pipe buffers' worth. */
function manyLeases(): LeasesView {
  const leases: LeaseRow[] = [];
  for (let i = 0; i < 1500; i++) {
    leases.push({
      containerId: i.toString(16).padStart(64, 'c'),
      ifname: 'eth0',
      podNamespace: 'load',
      podName: `pod-${i}`,
      netns: `/var/run/netns/cni-${i}`,
      addresses: [`10.244.${i >> 8}.${i & 255}/16`],
      hostVeth: `trl${i.toString(16).padStart(12, '0')}`,
      createdAt: '2026-12-05T18:00:00.000Z',
    });
  }
  return { node: 'n1', leases };
}

describe.skipIf(skip !== undefined)(
  `operator output through a pipe${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let dir: string | undefined;
    let server: HttpListener | undefined;
    afterEach(async () => {
      await server?.close();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    it('`trellis-agent leases` into a reader that waits before reading: every byte, JSON and table', async () => {
      dir = mkdtempSync(join(tmpdir(), 'trl-pipe-'));
      const socket = join(dir, 'admin.sock');
      const view = manyLeases();
      server = await startAdminServer(socket, { '/leases': () => view });
      // The reader sleeps first, so the pipe fills and the rest waits in the process for it.
      const piped = (args: string) =>
        run('sh', ['-c', `"${AGENT_BINARY}" leases --admin-socket "${socket}" ${args} | (sleep 0.5; cat)`], {
          maxBuffer: 64 * 1024 * 1024,
        });
      const json = await piped('--json');
      expect(json.stdout.length).toBeGreaterThan(4 * 65536);
      expect((JSON.parse(json.stdout) as LeasesView).leases).toHaveLength(1500);
      const table = await piped('');
      expect(table.stdout).toMatch(/^load\/pod-0 /m);
      expect(table.stdout).toMatch(/^load\/pod-1499 /m);
      expect(table.stdout.trimEnd().split('\n').at(-1)).toBe('1500 leases');
    });
  },
);
