/** The CNI protocol library: pure, shared by the shim (Bun) and the agent (Node). */
export { type CniArgs, cniArgsProblems, parseCniArgs } from './args.ts';
export {
  CNI_COMMANDS,
  type CniCommand,
  type CniEnv,
  interfaceNameProblem,
  parseCniEnv,
  REQUIRED_ENV,
} from './env.ts';
export { CniCode, type CniCodeValue, CniError, type CniErrorJson, toCniError } from './errors.ts';
export { type Cidr, ipFamily, parseCidr, parseIp } from './ip.ts';
export { type JsonErrorPosition, jsonErrorPosition } from './json-position.ts';
export {
  type BandwidthConfig,
  DEFAULT_SOCKET,
  DEFAULT_SPOOL_DIR,
  decodeJson,
  type GcAttachment,
  LOG_LEVELS,
  type LogLevel,
  MAX_NETCONF_BYTES,
  MTU_MAX,
  MTU_MIN,
  type NetConf,
  type NetConfCommand,
  type PortMapping,
  parseNetConf,
  type RuntimeConfig,
  TIMEOUT_MS_MAX,
  versionRequestVersion,
} from './netconf.ts';
export {
  type CniResult,
  convertResult,
  errorJson,
  isLegacyShape,
  type ParseResultOptions,
  parseDns,
  parseResult,
  type ResultDns,
  type ResultInterface,
  type ResultIp,
  type ResultRoute,
} from './result.ts';
export { isCniName, isObject, jsonType, quote, utf8Length } from './text.ts';
export {
  checkVersion,
  checkVersionAllows,
  compareVersions,
  isSupportedVersion,
  LATEST_VERSION,
  MIN_VERSION_FOR,
  parseVersion,
  type SpecVersion,
  SUPPORTED_VERSIONS,
  selectConfigVersion,
  type VersionReply,
  versionAtLeast,
  versionReply,
} from './version.ts';
