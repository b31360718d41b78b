/** CNI config publication: the config list (pure rendering) and atomic host-file writes (thin fs). */

export {
  BinaryRefusedError,
  checkFileName,
  entryExists,
  HostFileError,
  removeStaleTemps,
  writeFileAtomic,
} from './atomic.ts';
export {
  type ChainBinary,
  type ChainCheck,
  ChainVersionProbe,
  commonVersions,
  describeChainProblems,
  MountNsUnreachable,
  parseVersionReply,
  pluginVersions,
  runtimeMountNs,
  type VersionAnswer,
} from './chain-versions.ts';
export { type ChainedParts, chainedParts, chainedTypes, withChained } from './chained.ts';
export {
  CNI_CONF_EXTENSIONS,
  configsBefore,
  configsShadowing,
  installBinary,
  installBinaryIfAbsent,
  isMetaPluginConfig,
  publishConflist,
  removeConflist,
} from './publish.ts';
export {
  buildConflist,
  CONFLIST_FILE_NAME,
  type Conflist,
  ConflistConfigError,
  type ConflistOptions,
  conflistText,
  type DnsConfig,
  KNOWN_CNI_VERSIONS,
  renderConflist,
} from './render.ts';
