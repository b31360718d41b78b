import { endianness } from 'node:os';
import { describe, expect, it } from 'vitest';
import { nftablesSkipRule } from '../../../pkg/netlink/nft-messages.ts';
import { compileSkipFilter, SKIP_FILTER_MAX_MESSAGES } from '../../../pkg/netlink/skip-filter.ts';
import { runClassicBpf } from '../../support/classic-bpf.ts';
import { kernelVerdict } from '../../support/kernel-bpf.ts';

/**
 * The nf_tables notification filter over datagrams of several messages, as the kernel coalesces a
 * transaction's notifications; run by the kernel (attached to a socket, kernel-bpf.ts) and by a
 * reference interpreter, which must agree on every vector (the kernel runs the same program on real
 * notifications in test/integration/netlink/nft-events.test.ts).
 */

const LE = endianness() === 'LE';
const NFT = 10 << 8;
const NEWTABLE = NFT | 0;
const NEWRULE = NFT | 6;
const NEWSETELEM = NFT | 12;
const DELSETELEM = NFT | 14;
const NEWGEN = NFT | 15;
const INET = 1;
const IPV4 = 2;

function u16(b: Buffer, v: number, at: number): void {
  if (LE) b.writeUInt16LE(v, at);
  else b.writeUInt16BE(v, at);
}

/** One nf_tables message: nlmsghdr, nfgenmsg, the table name attribute, `pad` bytes of others. */
function message(type: number, family: number, table: string, pad = 24): Buffer {
  const name = Buffer.from(`${table}\0`, 'utf8');
  const attrLen = 4 + name.length;
  const len = 16 + 4 + ((attrLen + 3) & ~3) + pad;
  const b = Buffer.alloc(len);
  if (LE) b.writeUInt32LE(len, 0);
  else b.writeUInt32BE(len, 0);
  u16(b, type, 4);
  b.writeUInt8(family, 16);
  u16(b, attrLen, 20);
  u16(b, 1, 22);
  name.copy(b, 24);
  return b;
}

const program = compileSkipFilter(nftablesSkipRule(INET, 'trellis'));
/** The interpreter's verdict, which the kernel's must match. */
function run(prog: Buffer, packet: Buffer): number {
  const v = runClassicBpf(prog, packet).verdict;
  expect(kernelVerdict(prog, packet), 'the kernel disagrees with the interpreter').toBe(
    v === 0 ? 'rejected' : 'accepted',
  );
  return v;
}
const verdict = (...messages: Buffer[]): number => run(program, Buffer.concat(messages));
const ACCEPT = 0xffffffff;
const other = (type = NEWSETELEM) => message(type, IPV4, 'kube-proxy');

describe('compileSkipFilter with the nf_tables rule', () => {
  it('fits the kernel’s limit of 4,096 instructions with the longest table name, and still walks its datagrams', () => {
    expect(program.length / 8).toBeLessThanOrEqual(4096);
    const name = `t${'x'.repeat(31)}`; // the longest validateTableName takes
    const long = compileSkipFilter(nftablesSkipRule(INET, name));
    expect(long.length / 8).toBeLessThanOrEqual(4096);
    const others = (n: number) => Buffer.concat(Array.from({ length: n }, () => other()));
    expect(run(long, others(30))).toBe(0);
    expect(run(long, Buffer.concat([others(30), message(NEWRULE, INET, name)]))).toBe(ACCEPT);
  });

  it('drops a datagram of other tables’ element changes alone, however many', () => {
    expect(verdict(other())).toBe(0);
    expect(verdict(other(), other(DELSETELEM), other())).toBe(0);
    expect(verdict(...Array.from({ length: SKIP_FILTER_MAX_MESSAGES }, () => other()))).toBe(0);
  });

  it('keeps a datagram in which any message is of interest, first, last or in between', () => {
    const ours = message(NEWRULE, INET, 'trellis');
    expect(verdict(ours, other())).toBe(ACCEPT);
    expect(verdict(other(), other(), ours)).toBe(ACCEPT);
    expect(verdict(other(), ours, other())).toBe(ACCEPT);
    expect(verdict(other(), message(NEWSETELEM, INET, 'trellis'))).toBe(ACCEPT); // our elements
    expect(verdict(other(), message(DELSETELEM, INET, 'trellis'))).toBe(ACCEPT);
    expect(verdict(other(), message(NEWTABLE, IPV4, 'kube-proxy'))).toBe(ACCEPT); // not an element
    expect(verdict(other(), message(NEWGEN, 0, '', 0))).toBe(ACCEPT); // a commit
  });

  it('tells our table from one of another family or a longer or shorter name', () => {
    expect(verdict(message(NEWSETELEM, IPV4, 'trellis'))).toBe(0);
    expect(verdict(message(NEWSETELEM, INET, 'trellis2'))).toBe(0);
    expect(verdict(message(NEWSETELEM, INET, 'trelli'))).toBe(0);
    expect(verdict(message(NEWSETELEM, INET, 'trellis'))).toBe(ACCEPT);
  });

  it('keeps what it cannot read through rather than lose a change', () => {
    const many = Array.from({ length: SKIP_FILTER_MAX_MESSAGES + 1 }, () => other());
    expect(verdict(...many)).toBe(ACCEPT);
    const overlong = other();
    overlong.writeUInt32LE(overlong.length + 8, 0);
    expect(verdict(other(), overlong)).toBe(ACCEPT); // past the datagram's end
    const short = other();
    short.writeUInt32LE(12, 0);
    expect(verdict(short)).toBe(ACCEPT); // shorter than a header
    expect(verdict(other(), Buffer.alloc(8))).toBe(ACCEPT); // a tail too short for a header
  });

  it('walks messages whose lengths are not multiples of four, as netlink aligns them', () => {
    // nlmsg_len 59, padded to 60 where the next message starts.
    const unpadded = Buffer.concat([message(NEWSETELEM, IPV4, 'kube-proxy', 23), Buffer.alloc(1)]);
    expect(unpadded.readUInt32LE(0) % 4).not.toBe(0);
    expect(verdict(unpadded, other())).toBe(0);
    expect(verdict(unpadded, message(NEWRULE, INET, 'trellis'))).toBe(ACCEPT);
  });
});

describe('compileSkipFilter without exceptions', () => {
  const bare = compileSkipFilter({ types: [NEWSETELEM], unless: [] });

  it('skips every message of the types, whatever it holds', () => {
    expect(run(bare, Buffer.concat([message(NEWSETELEM, INET, 'trellis'), other()]))).toBe(0);
    expect(run(bare, Buffer.concat([other(), other(DELSETELEM)]))).toBe(ACCEPT);
  });

  it('refuses a rule without types', () => {
    expect(() => compileSkipFilter({ types: [], unless: [] })).toThrow(RangeError);
  });
});
