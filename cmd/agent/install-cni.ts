/** `trellis-agent install-cni`: the init container's copy of the CNI binaries into the host's bin dir. */
import { existsSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AgentConfig, ConfigError } from '../../pkg/agent/config.ts';
import { cniSourceDirProblem, describeCniInstall, installCniBinaries } from '../../pkg/agent/host-setup.ts';
import { BinaryRefusedError, ChainVersionProbe, runtimeMountNs } from '../../pkg/cniconf/index.ts';
import type { Logger } from '../../pkg/observe/logger.ts';

/** The CNI shim next to this build: dist/bin/trellis (from dist/cmd/agent or from a checkout). */
function findShim(sourceDir: string): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    sourceDir === '' ? undefined : join(sourceDir, 'trellis'),
    join(here, '..', '..', 'bin', 'trellis'),
    join(here, '..', '..', 'dist', 'bin', 'trellis'),
  ].filter((c): c is string => c !== undefined);
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

export async function runInstallCni(config: AgentConfig, log: Logger): Promise<number> {
  // Set by the operator (or the image): it must be what it claims, not silently replaced by the defaults.
  const sourceProblem = config.cniSourceDir === '' ? undefined : cniSourceDirProblem(config.cniSourceDir);
  if (sourceProblem !== undefined) {
    throw new ConfigError(`${config.names.cniSourceDir} ${config.cniSourceDir} ${sourceProblem}`);
  }
  mkdirSync(config.cniBinDir, { recursive: true });
  const shimPath = findShim(config.cniSourceDir);
  let results: Awaited<ReturnType<typeof installCniBinaries>>;
  try {
    results = await installCniBinaries({
      binDir: config.cniBinDir,
      shimPath,
      sourceDir: config.cniSourceDir,
      checkBinary: binaryRunsOnHost(config.hostProc, log),
    });
  } catch (err) {
    if (!(err instanceof BinaryRefusedError)) throw err;
    // The init container fails, so the rollout stops at this node, while the runtime keeps the shim
    // that ran: the old agent's pods keep their DELs (spooled for the new agent) instead of every CNI
    // call failing on a binary the host cannot start. A plugin the node lacks and cannot run from the
    // image (an older glibc) is the node's to provide.
    const name = basename(err.path);
    const advice =
      name === 'trellis'
        ? err.kept
          ? 'the installed one was kept'
          : 'there is none installed'
        : `install the node's own build of it (containernetworking-plugins) in ${config.cniBinDir}`;
    log.error(
      { binary: err.path, from: name === 'trellis' ? shimPath : undefined, problem: err.problem },
      `not installing the new CNI binary: it ${err.problem} on this node; ${advice}`,
    );
    return 1;
  }
  const { fields, message } = describeCniInstall(results);
  log.info({ dir: config.cniBinDir, ...fields }, message);
  return 0;
}

/**
 * A new binary (the shim, or a plugin the node lacks) must answer VERSION where the runtime will run
 * it: in the host's mount namespace (--host-proc), whose glibc and page size may not be the image's.
 * The agent checks this again before it publishes the config list, but by then an upgrade has already
 * put the binary under the old list. Without --host-proc, or when that namespace cannot be entered,
 * it runs in this container: a binary for another CPU or a broken copy is still caught.
 */
function binaryRunsOnHost(hostProc: string, log: Logger): (copy: string) => Promise<string | undefined> {
  const mountNs = runtimeMountNs(hostProc);
  const probe = new ChainVersionProbe(mountNs === undefined ? {} : { mountNs });
  return async (copy) => {
    const check = await probe.check([{ path: copy, chained: false }]);
    if (check.hostUnreachable !== undefined) {
      log.warn(
        { hostProc, error: check.hostUnreachable },
        "cannot enter the host's mount namespace: the new CNI binary is checked in this container's own",
      );
    }
    return check.problems[0]?.problem;
  };
}
