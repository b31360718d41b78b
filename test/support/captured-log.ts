import { PassThrough } from 'node:stream';
import { createLogger, type Logger, type LogLevel } from '../../pkg/observe/logger.ts';

/** A real pino logger (the agent's) whose JSON lines are parsed into `lines` as they are written. */
export function capturedLog(level: LogLevel = 'info'): { log: Logger; lines: Record<string, unknown>[] } {
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (d: Buffer) => {
    for (const l of d.toString('utf8').trim().split('\n'))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { log: createLogger({ level, destination: out }), lines };
}
