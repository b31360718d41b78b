/**
 * The nf_tables ruleset generation (NFT_MSG_GETGEN, linux/netfilter/nf_tables.h): a counter of the
 * network namespace that every committed nf_tables transaction moves on, whatever table it touched
 * (nft's own cache uses it to tell whether what it listed is still current). An unchanged generation
 * means nothing in any table changed since it was read. Pure encoders and parsers.
 */
import { nfgenmsg } from './nft-set-messages.ts';
import { decodeAttrs, type RawMessage, u32be } from './wire.ts';

/** NFNL_SUBSYS_NFTABLES in the high byte; NFT_MSG_GETGEN and NFT_MSG_NEWGEN in the low. */
export const NFT_MSG_GETGEN = (10 << 8) | 16;
const NFT_MSG_NEWGEN = (10 << 8) | 15;
const NFTA_GEN_ID = 1;
const NFGENMSG_LEN = 4;

/** The request's body: struct nfgenmsg for no family (AF_UNSPEC), version NFNETLINK_V0. */
export function generationRequestBody(): Buffer[] {
  return [nfgenmsg(0, 0)];
}

/** NFTA_GEN_ID of the NEWGEN answer among `replies`; throws when there is none. */
export function parseGeneration(replies: readonly RawMessage[]): number {
  for (const m of replies) {
    if (m.type !== NFT_MSG_NEWGEN || m.payload.length < NFGENMSG_LEN) continue;
    const id = decodeAttrs(m.payload, NFGENMSG_LEN).get(NFTA_GEN_ID);
    if (id !== undefined && id.length >= 4) return u32be(id, 0);
  }
  throw new Error('NFT_MSG_GETGEN: the kernel answered without a generation id');
}
