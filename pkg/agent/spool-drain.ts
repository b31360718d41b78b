import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../observe/logger.ts';
import { spoolFileName } from '../shim/spool.ts';
import { listSpooled, removeSpooled } from '../shim/spool-fs.ts';
import type { CniHandler, SpooledDels } from './cni-service.ts';

/** The spool directory as cni-service sees it: is a DEL of this attachment waiting there? */
export function spooledDelsIn(dir: string): SpooledDels {
  const path = (containerId: string, ifname: string): string => join(dir, spoolFileName(containerId, ifname));
  return {
    has: (containerId, ifname) => existsSync(path(containerId, ifname)),
    remove: (containerId, ifname) => removeSpooled(path(containerId, ifname)),
  };
}

/**
 * Completes the DELs the shim recorded while the agent was unreachable. Runs before the socket
 * listens, so an address in the spool is never handed out again before its DEL is done.
 */
export async function drainSpool(
  dir: string,
  handle: CniHandler,
  log: Logger,
): Promise<{ completed: number; failed: number; bad: number }> {
  const { entries, bad } = await listSpooled(dir);
  for (const b of bad)
    log.warn({ file: b.file, movedTo: b.movedTo, reason: b.reason }, 'bad spooled DEL set aside');
  let completed = 0;
  let failed = 0;
  for (const entry of entries) {
    // As a spooled DEL: it is skipped if an ADD of the same attachment ran it first meanwhile.
    const response = await handle(entry.request, { spooled: true });
    if (response.ok) {
      await removeSpooled(entry.file);
      completed++;
    } else {
      // Kept for the next start; the log line of the call says why.
      failed++;
    }
  }
  if (entries.length > 0 || bad.length > 0) {
    log.info({ completed, failed, bad: bad.length, dir }, 'spooled DELs drained');
  }
  return { completed, failed, bad: bad.length };
}
