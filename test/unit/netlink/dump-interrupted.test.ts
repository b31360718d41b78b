/**
 * A dump the kernel marks interrupted (NLM_F_DUMP_INTR) is read again. The kernel checks a dump's
 * consistency on its NLMSG_DONE too (netlink_dump_done), so a change after the last batch of entries
 * marks only DONE. The kernel cannot be made to interrupt a dump on demand: replies scripted here.
 */
import { describe, expect, it } from 'vitest';
import { NLM_F, NLMSG_DONE } from '../../../pkg/netlink/constants.ts';
import { listRoutesVia } from '../../../pkg/netlink/off-thread-requests.ts';
import { decodeMessages, encodeMessage } from '../../../pkg/netlink/wire.ts';

/** An exchange answering each dump request with an empty dump whose DONE carries `flags[i]`. */
function scriptedDone(flags: number[]): { exchange: (req: Buffer) => Promise<Buffer>; calls: () => number } {
  let calls = 0;
  return {
    exchange: async (req) => {
      const seq = decodeMessages(req)[0]!.seq;
      const f = flags[calls++] ?? 0;
      return encodeMessage(NLMSG_DONE, NLM_F.MULTI | f, seq, [Buffer.alloc(4)]);
    },
    calls: () => calls,
  };
}

describe('an interrupted dump', () => {
  it('is read again when only its NLMSG_DONE carries NLM_F_DUMP_INTR', async () => {
    const s = scriptedDone([NLM_F.DUMP_INTR, 0]);
    expect(await listRoutesVia(s.exchange, { family: 4 })).toEqual([]);
    expect(s.calls()).toBe(2);
  });

  it('a consistent one is read once', async () => {
    const s = scriptedDone([0]);
    expect(await listRoutesVia(s.exchange, { family: 4 })).toEqual([]);
    expect(s.calls()).toBe(1);
  });
});
