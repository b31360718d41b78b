/**
 * The agent's nftables table: masquerade for pod traffic leaving the cluster and the MSS clamp into the
 * VXLAN devices, as nftables text (pure), and the nft runner (adapter).
 */

export { NftError, NftRunner, type NftRunnerOptions } from './nft.ts';
export {
  DEFAULT_TABLE,
  MasqConfigError,
  type MasqOptions,
  type MasqPlan,
  planMasq,
  renderDeleteTable,
  renderMasqRuleset,
  type SkippedCidr,
  validateNoMasqueradeCIDRs,
  validateTableName,
} from './render.ts';
export { MasqSyncer } from './sync.ts';
export { MasqTableWatch, NFPROTO_INET } from './table-watch.ts';
