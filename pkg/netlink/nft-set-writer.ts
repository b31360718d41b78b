/**
 * Changes interval set elements of an nf_tables table over netlink, each call one transaction. The
 * masquerade syncer's fast path for a Node added or deleted: spawning nft costs ~20 ms of CPU and
 * reads the whole set (~50 ms with 5,000 ranges), a netlink batch well under a millisecond. It also
 * reads the ruleset's generation, with which the periodic checks (the masquerade table's, the host
 * firewall's) skip listing what no transaction can have changed (nft-generation.ts).
 *
 * The socket binds to the network namespace of the thread that creates the writer.
 */
import { Protocol } from 'netlink/dist/constants.js';
import type { IntervalSetChange } from '../datapath/ports.ts';
import { NLM_F } from './constants.ts';
import { generationRequestBody, NFT_MSG_GETGEN, parseGeneration } from './nft-generation.ts';
import {
  batchBody,
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFT_MSG_NEWSETELEM,
  setChangeMessages,
} from './nft-set-messages.ts';
import { RtnlSocket } from './socket.ts';

export class NftSetWriter {
  private readonly sock = new RtnlSocket({ protocol: Protocol.NETFILTER });

  /** The socket's netlink port: nf_tables notifications of our transactions carry it. */
  get port(): number {
    return this.sock.port;
  }

  /** Applies the changes to sets of table `inet TABLE` atomically; rejects (NetlinkError) with nothing changed. */
  async update(table: string, changes: readonly IntervalSetChange[]): Promise<void> {
    const reqs = setChangeMessages(table, changes).map((m) => ({
      ...m,
      // Like `nft add element`: an element already there is no error.
      flags: m.type === NFT_MSG_NEWSETELEM ? NLM_F.CREATE : 0,
    }));
    await this.sock.transaction(
      { type: NFNL_MSG_BATCH_BEGIN, flags: 0, body: batchBody(), op: 'NFNL_MSG_BATCH_BEGIN' },
      reqs,
      { type: NFNL_MSG_BATCH_END, flags: 0, body: batchBody(), op: 'NFNL_MSG_BATCH_END' },
    );
  }

  /** The namespace's nf_tables ruleset generation; rejects (NetlinkError) when the kernel refuses. */
  async generation(): Promise<number> {
    const replies = await this.sock.request({
      type: NFT_MSG_GETGEN,
      flags: 0,
      body: generationRequestBody(),
      op: 'NFT_MSG_GETGEN',
    });
    return parseGeneration(replies);
  }

  close(): void {
    this.sock.close();
  }
}
