import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniCode } from '../cni/errors.ts';
import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';
import { spoolFileName } from '../shim/spool.ts';
import { listSpooled, removeSpooled, setSpooledAside } from '../shim/spool-fs.ts';
import type { CniHandler, SpooledDels } from './cni-service.ts';

/** The spool directory as cni-service sees it: is a DEL of this attachment waiting there? */
export function spooledDelsIn(dir: string): SpooledDels {
  const path = (containerId: string, ifname: string): string => join(dir, spoolFileName(containerId, ifname));
  return {
    has: (containerId, ifname) => existsSync(path(containerId, ifname)),
    network: (containerId, ifname) => {
      try {
        const request = JSON.parse(readFileSync(path(containerId, ifname), 'utf8')) as { stdin?: unknown };
        const conf =
          typeof request.stdin === 'string' ? (JSON.parse(request.stdin) as { name?: unknown }) : {};
        return typeof conf.name === 'string' ? conf.name : undefined;
      } catch {
        return undefined; // unreadable: the DEL runs unscoped, as the drain would replay it
      }
    },
    remove: (containerId, ifname) => removeSpooled(path(containerId, ifname)),
  };
}

/** Codes a DEL's config or environment earns whenever it runs (CNI's 1, 2, 4, 6, 7). */
const REFUSED_FOR_GOOD: ReadonlySet<number> = new Set([
  CniCode.INCOMPATIBLE_VERSION,
  CniCode.UNSUPPORTED_FIELD,
  CniCode.INVALID_ENV,
  CniCode.DECODE_FAILED,
  CniCode.INVALID_CONFIG,
]);

/**
 * Completes the DELs the shim recorded while the agent was unreachable. Runs before the socket
 * listens, so an address in the spool is never handed out again before its DEL is done.
 */
export async function drainSpool(
  dir: string,
  handle: CniHandler,
  log: Logger,
): Promise<{ completed: number; failed: number; bad: number }> {
  const { entries, bad, unreadable } = await listSpooled(dir);
  for (const b of bad)
    log.warn({ file: b.file, movedTo: b.movedTo, reason: b.reason }, 'bad spooled DEL set aside');
  for (const u of unreadable)
    log.warn({ file: u.file, reason: u.reason }, 'spooled DEL could not be read: kept for the next drain');
  let completed = 0;
  let failed = unreadable.length;
  let refused = 0;
  // Each file as it was listed, before any DEL of this drain ran.
  const listed = new Map(entries.map((e) => [e.file, fileId(e.file)]));
  for (const entry of entries) {
    const before = listed.get(entry.file);
    // As a spooled DEL: it is skipped if an ADD of the same attachment ran it first meanwhile.
    const response = await handle(entry.request, { spooled: true });
    if (response.ok) {
      // Only the file this DEL came from: a runtime reusing the container id may have had a new
      // ADD and a DEL the shim spooled under the same name since (the next drain replays that one).
      if (fileId(entry.file) === before) {
        try {
          await removeSpooled(entry.file);
        } catch (err) {
          // A spool that takes no writes (read-only): the DEL is done; its file is replayed at the
          // next drain, where a DEL again changes nothing. The agent must start all the same.
          log.warn(
            { file: entry.file, error: errorText(err) },
            'spooled DEL done, but its file could not be removed: replayed again by the next drain',
          );
        }
      }
      completed++;
    } else if (REFUSED_FOR_GOOD.has(response.error.code)) {
      // Its config or variables can never pass (the shim checks the plain cases before spooling): a
      // replay every 30 s would fail the same way for ever. Its lease goes with the lease GC.
      const aside = setSpooledAside(entry.file, response.error.msg);
      log.warn(
        { file: aside.file, movedTo: aside.movedTo, code: response.error.code, reason: aside.reason },
        'spooled DEL refused for good: set aside',
      );
      refused++;
    } else {
      // Kept for the next drain; the log line of the call says why.
      failed++;
    }
  }
  if (entries.length > 0 || bad.length > 0 || unreadable.length > 0) {
    log.info({ completed, failed, bad: bad.length + refused, dir }, 'spooled DELs drained');
  }
  return { completed, failed, bad: bad.length + refused };
}

/** A spool file's inode and change time (undefined when it is gone): a new file under the name differs. */
function fileId(file: string): string | undefined {
  try {
    const st = statSync(file, { bigint: true });
    return `${st.ino}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}
