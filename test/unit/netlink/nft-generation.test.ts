import { describe, expect, it } from 'vitest';
import {
  generationRequestBody,
  NFT_MSG_GETGEN,
  parseGeneration,
} from '../../../pkg/netlink/nft-generation.ts';
import { attr, type RawMessage } from '../../../pkg/netlink/wire.ts';

/** A NEWGEN answer as the kernel sends it: nfgenmsg, NFTA_GEN_ID (be32), NFTA_GEN_PROC_PID. */
function newgen(id: number): RawMessage {
  const idBytes = Buffer.alloc(4);
  idBytes.writeUInt32BE(id);
  const pid = Buffer.alloc(4);
  pid.writeUInt32BE(4242);
  const payload = Buffer.concat([Buffer.alloc(4), attr(1, idBytes), attr(2, pid)]);
  return { type: (10 << 8) | 15, flags: 0, seq: 1, pid: 0, payload };
}

describe('nf_tables ruleset generation messages', () => {
  it('asks nf_tables (subsystem 10) for NFT_MSG_GETGEN with an AF_UNSPEC nfgenmsg', () => {
    expect(NFT_MSG_GETGEN).toBe(0x0a10);
    expect(Buffer.concat(generationRequestBody())).toEqual(Buffer.from([0, 0, 0, 0]));
  });

  it('reads NFTA_GEN_ID big-endian from the NEWGEN answer, whatever comes beside it', () => {
    expect(parseGeneration([newgen(0x01020304)])).toBe(0x01020304);
    expect(parseGeneration([newgen(0xffffffff)])).toBe(0xffffffff);
    const other: RawMessage = { type: 2, flags: 0, seq: 1, pid: 0, payload: Buffer.alloc(20) };
    expect(parseGeneration([other, newgen(7)])).toBe(7);
  });

  it('throws when no answer carries a generation id', () => {
    expect(() => parseGeneration([])).toThrow(/without a generation id/);
    const bare: RawMessage = { type: (10 << 8) | 15, flags: 0, seq: 1, pid: 0, payload: Buffer.alloc(4) };
    expect(() => parseGeneration([bare])).toThrow(/without a generation id/);
  });
});
