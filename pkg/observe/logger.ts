import pino, { type Logger } from 'pino';
import { LOG_LEVELS, type LogLevel } from './log-levels.ts';
import { redactSecrets, scrubText } from './redact.ts';

export type { Logger } from 'pino';
export { LOG_LEVELS, type LogLevel };

/** Most log text held in memory while stdout is not taking it. */
export const LOG_BUFFER_MAX_BYTES = 8 * 1024 * 1024;

export interface LoggerOptions {
  level: LogLevel;
  /** Pretty, human output; defaults to "stdout is a terminal". */
  pretty?: boolean;
  /** Where lines go; defaults to stdout (fd 1). Tests pass a stream. */
  destination?: NodeJS.WritableStream;
  base?: Record<string, unknown>;
}

/**
 * The agent's single log stream. Keys are stable camelCase because operators grep them
 * (`kubectl logs ... | grep '"verb":"ADD"'`). Secrets never reach a line: the redact list covers the
 * places a token could appear.
 */
export function createLogger(opts: LoggerOptions): Logger {
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && opts.destination === undefined);
  const options: pino.LoggerOptions = {
    level: opts.level,
    base: opts.base ?? {},
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label) => ({ level: label }),
      // Secret keys at any depth and bearer tokens inside texts (see redact.ts).
      bindings: (bindings) => redactSecrets(bindings),
      log: (object) => redactSecrets(object),
    },
    hooks: {
      logMethod(args, method) {
        const scrubbed = args.map((a: unknown) => (typeof a === 'string' ? scrubText(a) : a));
        return method.apply(this, scrubbed as Parameters<typeof method>);
      },
    },
    redact: {
      paths: ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization'],
      censor: '[redacted]',
    },
  };
  if (pretty) {
    return pino({
      ...options,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  // Bounded: a slow log reader (or a closed stdout, whose failed writes sonic-boom keeps buffered
  // and retries) would otherwise grow the agent's memory with every line; past the bound lines are
  // dropped ('drop' event) rather than held.
  const dest = opts.destination ?? pino.destination({ fd: 1, sync: false, maxLength: LOG_BUFFER_MAX_BYTES });
  if (opts.destination === undefined) {
    // A closed stdout (EPIPE: the log reader went away) must never crash the agent.
    (dest as NodeJS.EventEmitter).on('error', () => {});
  }
  return pino(options, dest);
}
