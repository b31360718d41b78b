/** The host's own firewall, as far as it decides whether the node forwards its pods' traffic. */
export {
  ACCEPT_COMMENT,
  type AcceptPlan,
  acceptCommand,
  commandText,
  deleteCommand,
  describeRule,
  distinctAccepts,
  type FirewallCommand,
  ownAccepts,
  planAccepts,
  type RuleAt,
} from './accept.ts';
export { DOCKER_NOTE, describeBlock, fixCommand } from './advice.ts';
export {
  type Direction,
  type ForwardBlock,
  forwardBlocks,
  type PacketKind,
  packetKinds,
  ruleMatches,
  undecidedChains,
} from './forward-analysis.ts';
export { IptablesSaveError, parseIptablesSave, splitSaveLine } from './iptables-save.ts';
export { hostLegacyIptables } from './legacy-host.ts';
export {
  aggregate,
  changesPodNetwork,
  type FamilyCover,
  MAX_EXACT,
  type PodNetwork,
  type PodNetworkInput,
  podNetwork,
} from './pod-network.ts';
export { deletePortmapLeftovers, portmapCleanup } from './portmap-leftovers.ts';
export {
  deleteOwnAccepts,
  type LegacyIptables,
  type NftRun,
  type ReadOptions,
  readForwardRuleset,
} from './read.ts';
export { type ForwardRead, type ReadOnChangeDeps, readOnChange } from './read-on-change.ts';
export {
  type BaseChain,
  type ChainFamily,
  type ChainRef,
  chainKey,
  describeUnread,
  type ForwardFamily,
  type ForwardRuleset,
  isLegacy,
  LEGACY_LIST_UNREADABLE,
  type LegacyFamily,
  parseChainRules,
  parseForwardBaseChains,
  parseRulesetRules,
  type Rule,
  rulesWithChains,
  type UnreadTable,
} from './ruleset.ts';
export {
  describeVxlanBlock,
  VXLAN_NOTE,
  type VxlanInBlock,
  type VxlanInKind,
  vxlanFixCommand,
  vxlanInputBlocks,
  vxlanJudge,
} from './vxlan-input.ts';
