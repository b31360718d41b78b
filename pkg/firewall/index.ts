/** The host's own firewall, as far as it decides whether the node forwards its pods' traffic. */
export { acceptCommand, DOCKER_NOTE, describeBlock } from './advice.ts';
export {
  type Direction,
  type ForwardBlock,
  forwardBlocks,
  type PacketKind,
  packetKinds,
  ruleMatches,
} from './forward-analysis.ts';
export { type NftRun, readForwardRuleset } from './read.ts';
export {
  type BaseChain,
  type ChainRef,
  chainKey,
  type ForwardFamily,
  type ForwardRuleset,
  parseChainRules,
  parseForwardBaseChains,
  type Rule,
} from './ruleset.ts';
