import { describe, expect, it } from 'vitest';
import {
  intervalElements,
  NFT_MSG_DELSETELEM,
  NFT_MSG_NEWSETELEM,
  setChangeMessages,
} from '../../../pkg/netlink/nft-set-messages.ts';

const hex = (b: Buffer): string => b.toString('hex');

describe('nf_tables set element messages', () => {
  it('a range is its start and the address after it, flagged as an end (what nft sends)', () => {
    const els = intervalElements(4, [[0x0a000100n, 0x0a0001ffn]]);
    expect(els.map((e) => [hex(e.key), e.end, e.open])).toEqual([
      ['0a000100', false, false],
      ['0a000200', true, false],
    ]);
  });

  it('a range reaching the top of the address space has no end element and is marked open', () => {
    expect(intervalElements(4, [[0xffffff00n, 0xffffffffn]]).map((e) => [hex(e.key), e.end, e.open])).toEqual(
      [['ffffff00', false, true]],
    );
    const v6 = intervalElements(6, [[0xfd00n << 112n, (0xfd00n << 112n) + (1n << 64n) - 1n]]);
    expect(v6.map((e) => hex(e.key))).toEqual([
      'fd000000000000000000000000000000',
      'fd000000000000010000000000000000',
    ]);
  });

  it('removals go first, each set of a change its own message, at most 512 ranges each', () => {
    const ranges = Array.from({ length: 600 }, (_, i): [bigint, bigint] => [
      BigInt(i * 512),
      BigInt(i * 512 + 255),
    ]);
    const msgs = setChangeMessages('trellis', [
      { set: 'nomasq_v4', family: 4, remove: [], add: ranges },
      { set: 'nomasq_v6', family: 6, remove: [[0n, 0n]], add: [] },
    ]);
    expect(msgs.map((m) => [m.type, m.op])).toEqual([
      [NFT_MSG_DELSETELEM, 'NFT_MSG_DELSETELEM inet trellis nomasq_v6 (1 ranges)'],
      [NFT_MSG_NEWSETELEM, 'NFT_MSG_NEWSETELEM inet trellis nomasq_v4 (512 ranges)'],
      [NFT_MSG_NEWSETELEM, 'NFT_MSG_NEWSETELEM inet trellis nomasq_v4 (88 ranges)'],
    ]);
    // Every attribute length fits its u16.
    for (const m of msgs) expect(Buffer.concat(m.body).length).toBeLessThan(0xffff);
  });
});
