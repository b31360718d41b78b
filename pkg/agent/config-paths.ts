/**
 * The directories the running agent writes, checked at start: one that exists as something other
 * than a directory (a file left where a hostPath should be, a socket path under a file) stops the
 * agent with exit 2 naming its flag, before anything is created, instead of failing every pass
 * (EEXIST, ENOTDIR) in a log line that names no setting.
 */
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AgentConfig } from './config.ts';

/** Why a directory the agent needs cannot be one, naming the flag; undefined when all can. */
export function configPathProblem(config: AgentConfig): string | undefined {
  const dirs: [string, string][] = [
    ['--state-dir', config.stateDir],
    ['--spool-dir', config.spoolDir],
    ['--socket', dirname(config.socket)],
    ...(config.adminSocket === ''
      ? []
      : ([['--admin-socket', dirname(config.adminSocket)]] as [string, string][])),
    ...(config.publishCniConfig ? ([['--cni-conf-dir', config.cniConfDir]] as [string, string][]) : []),
    ['--cni-bin-dir', config.cniBinDir],
  ];
  for (const [flag, dir] of dirs) {
    const blocker = firstNonDirectory(dir);
    if (blocker === undefined) continue;
    const where = blocker === dir ? dir : `${dir} (${blocker} is in the way)`;
    return flag === '--socket' || flag === '--admin-socket'
      ? `${flag} ${flag === '--socket' ? config.socket : config.adminSocket}: its directory ${where} is not a directory`
      : `${flag} ${where} is not a directory`;
  }
  return undefined;
}

/** The path itself or its nearest existing ancestor when that is not a directory; undefined otherwise. */
function firstNonDirectory(path: string): string | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      return statSync(p).isDirectory() ? undefined : p;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') continue; // an ancestor is a file: find it
      if (code !== 'ENOENT') return undefined; // not ours to judge (EACCES): the agent says at its write
    }
    if (dirname(p) === p) return undefined;
  }
}
