/** The host's own firewall, as far as it decides whether the node forwards its pods' traffic. */
export {
  ACCEPT_COMMENT,
  acceptArgs,
  deleteArgs,
  describeRule,
  distinctAccepts,
  ownAccepts,
} from './accept.ts';
export { DOCKER_NOTE, describeBlock, fixCommand } from './advice.ts';
export {
  type Direction,
  type ForwardBlock,
  forwardBlocks,
  type PacketKind,
  packetKinds,
  ruleMatches,
} from './forward-analysis.ts';
export { deleteOwnAccepts, type NftRun, readForwardRuleset } from './read.ts';
export {
  type BaseChain,
  type ChainRef,
  chainKey,
  type ForwardFamily,
  type ForwardRuleset,
  parseChainRules,
  parseForwardBaseChains,
  parseRulesetRules,
  type Rule,
  rulesWithChains,
} from './ruleset.ts';
