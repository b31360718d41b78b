/**
 * trellis-agent: parses the command line and hands over to the subcommand: run (run.ts, the agent
 * until SIGTERM/SIGINT), install-cni (the init container), uninstall, and the operator commands
 * (status, routes, leases, doctor, coverage: pkg/ops). The only place that calls process.exit, once
 * the output is written.
 */
// First: its handlers are in place before the other modules load (stop-signal.ts).
import './stop-signal.ts';
import { hostname } from 'node:os';
import { ConfigError, parseAgentConfig, subcommandUsage, USAGE } from '../../pkg/agent/config.ts';
import { createK8sClient, K8sError, K8sReason, loadKubeConfig } from '../../pkg/k8s/index.ts';
import { openHostNetlink } from '../../pkg/netns/index.ts';
import { createLogger } from '../../pkg/observe/logger.ts';
import { OPS_COMMANDS, OPS_USAGE, runOpsCommand } from '../../pkg/ops/cli.ts';
import { trellisVersion } from '../../pkg/version.ts';
import { runInstallCni } from './install-cni.ts';
import { runAgent } from './run.ts';
import { runUninstall } from './uninstall.ts';

const SUBCOMMANDS = ['run', 'install-cni', 'uninstall'] as const;

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--version') || argv.includes('-v')) {
    process.stdout.write(`trellis-agent ${trellisVersion()}\n`);
    return 0;
  }
  const ops = OPS_COMMANDS.find((c) => c === argv[0]);
  if (argv.includes('--help') || argv.includes('-h')) {
    const maintenance = (['install-cni', 'uninstall'] as const).find((s) => s === argv[0]);
    process.stdout.write(
      ops !== undefined
        ? OPS_USAGE
        : maintenance !== undefined
          ? subcommandUsage(maintenance)
          : `${USAGE}\n${OPS_USAGE}`,
    );
    return 0;
  }
  if (ops !== undefined) {
    return runOpsCommand(ops, argv.slice(1), {
      stdout: (t) => process.stdout.write(t),
      stderr: (t) => process.stderr.write(t),
      env: process.env,
      openHost: openHostNetlink,
      nodeReader: (kubeconfig, env) =>
        createK8sClient(
          loadKubeConfig({ env, ...(kubeconfig === undefined ? {} : { kubeconfigPath: kubeconfig }) }),
        ),
    });
  }
  const sub = SUBCOMMANDS.find((s) => s === argv[0]) ?? 'run';
  const rest = sub === argv[0] ? argv.slice(1) : argv;
  // A ConfigError (or an unusable kubeconfig) ends the process with exit 2 at the bottom of this file.
  const config = parseAgentConfig(rest, process.env, { requireNode: sub === 'run' });
  // The node the agent runs as (standalone: the host name), so every line, CNI calls' included, names it.
  const log = createLogger({ level: config.logLevel, base: { node: config.nodeName ?? hostname() } });

  // Every line names its component once: children are made from this root, never from each other.
  if (sub === 'install-cni') return runInstallCni(config, log.child({ component: 'install-cni' }));
  if (sub === 'uninstall') return runUninstall(config, log.child({ component: 'uninstall' }));
  return runAgent(config, log);
}

process.on('unhandledRejection', (reason) => {
  process.stderr.write(
    `trellis-agent: unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}\n`,
  );
});

/** A setting the operator has to fix (a flag, a variable, the kubeconfig): its message, for exit 2. */
function usageError(err: unknown): string | undefined {
  if (err instanceof ConfigError) return err.message;
  if (err instanceof K8sError && err.reason === K8sReason.CONFIG) return err.message;
  return undefined;
}

/**
 * Exits once what was written to stdout and stderr is out. On a pipe (`kubectl exec … routes --json`,
 * `| jq`) Node queues what the pipe does not take at once, and process.exit drops the queue: a report
 * cut at 64 KiB under exit code 0. A write's callback runs after every write before it; a reader that
 * went away (EPIPE) or never reads leaves the wait to the timer.
 */
function exitWhenWritten(code: number): void {
  process.exitCode = code;
  const streams = [process.stdout, process.stderr];
  let left = streams.length;
  const done = (): void => {
    left -= 1;
    if (left === 0) process.exit(code);
  };
  for (const stream of streams) {
    let settled = false;
    const once = (): void => {
      if (settled) return;
      settled = true;
      done();
    };
    stream.on('error', once);
    stream.write('', once);
  }
  setTimeout(() => process.exit(code), 5000).unref();
}

main(process.argv.slice(2)).then(exitWhenWritten, (err: unknown) => {
  const usage = usageError(err);
  process.stderr.write(`trellis-agent: ${usage ?? (err instanceof Error ? err.stack : String(err))}\n`);
  exitWhenWritten(usage === undefined ? 1 : 2);
});
