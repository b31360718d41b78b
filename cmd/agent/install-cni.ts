/** `trellis-agent install-cni`: the init container's copy of the CNI binaries into the host's bin dir. */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AgentConfig, ConfigError } from '../../pkg/agent/config.ts';
import { cniSourceDirProblem, describeCniInstall, installCniBinaries } from '../../pkg/agent/host-setup.ts';
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
  const results = await installCniBinaries({
    binDir: config.cniBinDir,
    shimPath: findShim(config.cniSourceDir),
    sourceDir: config.cniSourceDir,
  });
  const { fields, message } = describeCniInstall(results);
  log.info({ dir: config.cniBinDir, ...fields }, message);
  return 0;
}
