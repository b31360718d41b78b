/**
 * trellis-agent: wires the validated config to the real adapters and runs until SIGTERM/SIGINT.
 * The only place that calls process.exit.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Agent } from '../../pkg/agent/agent.ts';
import { ConfigError, parseAgentConfig, USAGE } from '../../pkg/agent/config.ts';
import { openNetlink } from '../../pkg/netlink/index.ts';
import { createNetnsPort, lockFile } from '../../pkg/netns/index.ts';
import { createLogger } from '../../pkg/observe/logger.ts';
import { trellisVersion } from '../../pkg/version.ts';

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--version') || argv.includes('-v')) {
    process.stdout.write(`trellis-agent ${trellisVersion()}\n`);
    return 0;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  let config: ReturnType<typeof parseAgentConfig>;
  try {
    config = parseAgentConfig(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`trellis-agent: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger({ level: config.logLevel, base: { node: config.nodeName } });
  log.info(
    { version: trellisVersion(), node: process.version, standalone: config.podCIDRs.length > 0 },
    'starting',
  );

  const agent = new Agent(
    config,
    {
      netns: createNetnsPort(),
      openHostNetlink: openNetlink,
      lockStateDir: (dir) => {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        return lockFile(join(dir, 'agent.lock'));
      },
    },
    log,
  );
  try {
    await agent.start();
  } catch (err) {
    log.fatal({ error: err instanceof Error ? err.message : String(err) }, 'agent failed to start');
    await agent.stop().catch(() => {});
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'stopping: finishing in-flight CNI calls; routes, config and rules stay in place');
  await agent.stop();
  return 0;
}

process.on('unhandledRejection', (reason) => {
  process.stderr.write(
    `trellis-agent: unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}\n`,
  );
});

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`trellis-agent: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
