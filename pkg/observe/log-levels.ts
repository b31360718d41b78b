/**
 * pino's levels, as the agent takes them (--log-level) and a network config's `logLevel` is checked
 * against. A module of its own, without pino: the CNI binary's config parser reads it too.
 */
export const LOG_LEVELS = Object.freeze([
  'trace',
  'debug',
  'info',
  'warn',
  'error',
  'fatal',
  'silent',
] as const);

export type LogLevel = (typeof LOG_LEVELS)[number];
