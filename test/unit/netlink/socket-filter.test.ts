import { endianness } from 'node:os';
import { describe, expect, it } from 'vitest';
import { compileAcceptFilter, NLMSG_HDRLEN } from '../../../pkg/netlink/socket-filter.ts';
import { runClassicBpf } from '../../support/classic-bpf.ts';
import { kernelVerdict } from '../../support/kernel-bpf.ts';

/**
 * The program's jumps and encodings, run by the kernel (attached to a socket, kernel-bpf.ts) and by a
 * reference interpreter, which must agree on every vector (netlink.test.ts runs the programs on real
 * notifications).
 */

const LE = endianness() === 'LE';

function run(program: Buffer, packet: Buffer): number {
  const verdict = runClassicBpf(program, packet).verdict;
  expect(kernelVerdict(program, packet), 'the kernel disagrees with the interpreter').toBe(
    verdict === 0 ? 'rejected' : 'accepted',
  );
  return verdict;
}

/** An nlmsghdr of this type followed by the given header bytes. */
function message(type: number, header: number[]): Buffer {
  const b = Buffer.alloc(NLMSG_HDRLEN + 12);
  if (LE) b.writeUInt16LE(type, 4);
  else b.writeUInt16BE(type, 4);
  Buffer.from(header).copy(b, NLMSG_HDRLEN);
  return b;
}

const ACCEPT = 0xffffffff;

describe('compileAcceptFilter', () => {
  const program = compileAcceptFilter([
    {
      type: 24,
      bytes: [
        { offset: NLMSG_HDRLEN + 4, value: 254 },
        { offset: NLMSG_HDRLEN + 5, value: 2 },
      ],
    },
    { type: 25, bytes: [{ offset: NLMSG_HDRLEN + 5, value: 126 }] },
    { type: 17 },
  ]);

  it('accepts a message matching every check of some clause, whichever clause it is', () => {
    expect(run(program, message(24, [0, 0, 0, 0, 254, 2]))).toBe(ACCEPT);
    expect(run(program, message(25, [0, 0, 0, 0, 7, 126]))).toBe(ACCEPT);
    expect(run(program, message(17, []))).toBe(ACCEPT);
  });

  it('rejects a message that fails any check of each clause, first check or last', () => {
    expect(run(program, message(24, [0, 0, 0, 0, 254, 126]))).toBe(0); // last byte of clause 1
    expect(run(program, message(24, [0, 0, 0, 0, 255, 2]))).toBe(0); // first byte of clause 1
    expect(run(program, message(25, [0, 0, 0, 0, 254, 2]))).toBe(0); // clause 2's byte
    expect(run(program, message(16, []))).toBe(0); // no clause's type
  });

  it('compares the whole 16-bit type in host order, not one byte of it', () => {
    expect(run(program, message(17 + 256, []))).toBe(0);
    expect(run(program, message(17 * 256, []))).toBe(0);
  });

  it('rejects everything without clauses, and a message too short to hold the bytes checked', () => {
    expect(run(compileAcceptFilter([]), message(24, []))).toBe(0);
    expect(run(program, message(24, []).subarray(0, NLMSG_HDRLEN + 4))).toBe(0);
  });
});

describe('compileAcceptFilter: 32-bit fields (an ifinfomsg index)', () => {
  const at = NLMSG_HDRLEN + 4;
  const program = compileAcceptFilter([
    { type: 16, words: [{ offset: at, value: 2 }] },
    { type: 16, words: [{ offset: at, value: 0x01020304 }] },
  ]);
  const link = (index: number): Buffer => {
    const b = message(16, []);
    if (LE) b.writeUInt32LE(index, at);
    else b.writeUInt32BE(index, at);
    return b;
  };

  it('accepts exactly the indexes named, read in host order, all four bytes', () => {
    expect(run(program, link(2))).toBe(ACCEPT);
    expect(run(program, link(0x01020304))).toBe(ACCEPT);
    for (const other of [3, 2 + 256, 2 + 2 ** 24, 0x04030201, 0x01020305]) {
      expect(run(program, link(other)), String(other)).toBe(0);
    }
  });

  it('takes an index above 2^31 (unsigned)', () => {
    const high = compileAcceptFilter([{ type: 16, words: [{ offset: at, value: 0xfffffffe }] }]);
    expect(run(high, link(0xfffffffe))).toBe(ACCEPT);
    expect(run(high, link(0x7ffffffe))).toBe(0);
  });
});

describe('compileAcceptFilter: 16-bit fields that must not hold a value (a neighbour state)', () => {
  const index = NLMSG_HDRLEN + 4;
  const state = NLMSG_HDRLEN + 8;
  const program = compileAcceptFilter([
    { type: 29, words: [{ offset: index, value: 5 }], notHalfwords: [{ offset: state, value: 0x40 }] },
  ]);
  const deletion = (ifindex: number, nud: number): Buffer => {
    const b = message(29, []);
    if (LE) {
      b.writeUInt32LE(ifindex, index);
      b.writeUInt16LE(nud, state);
    } else {
      b.writeUInt32BE(ifindex, index);
      b.writeUInt16BE(nud, state);
    }
    return b;
  };

  it('accepts every other value, read in host order, both bytes', () => {
    for (const nud of [0x80, 0x20, 0x04, 0x00, 0x40 << 8, 0x40 | 0x100]) {
      expect(run(program, deletion(5, nud)), nud.toString(16)).toBe(ACCEPT);
    }
  });

  it('rejects the value, and still requires the other checks of its clause', () => {
    expect(run(program, deletion(5, 0x40))).toBe(0);
    expect(run(program, deletion(6, 0x80))).toBe(0);
  });
});

describe('compileAcceptFilter: bits of 32-bit fields (a link set down)', () => {
  const flagsAt = NLMSG_HDRLEN + 8;
  const changeAt = NLMSG_HDRLEN + 12;
  const program = compileAcceptFilter([
    {
      type: 16,
      wordBits: [
        { offset: changeAt, mask: 0x1 },
        { offset: changeAt, mask: 0x40, clear: true },
        { offset: flagsAt, mask: 0x1, clear: true },
      ],
    },
  ]);
  const newlink = (flags: number, change: number): Buffer => {
    const b = Buffer.alloc(NLMSG_HDRLEN + 16);
    b.set(message(16, []).subarray(0, NLMSG_HDRLEN));
    if (LE) {
      b.writeUInt32LE(flags >>> 0, flagsAt);
      b.writeUInt32LE(change >>> 0, changeAt);
    } else {
      b.writeUInt32BE(flags >>> 0, flagsAt);
      b.writeUInt32BE(change >>> 0, changeAt);
    }
    return b;
  };

  it('accepts the bit changed and clear, whatever else changed (but the excluded bit) or is set, in host order', () => {
    for (const [flags, change] of [
      [0x1000, 0x1],
      [0x0, 0x1 | 0x2],
      [0x2 | 0x1000 | 0x10000, 0x1 | 0x10000],
      [0xfffffffe, 0xffffffbf], // every bit changed but the excluded one
      [0x1000000, 0x1], // flags' bit 24, where a byte-order slip would look: not bit 0
    ] as const) {
      expect(run(program, newlink(flags, change)), `${flags} ${change}`).toBe(ACCEPT);
    }
  });

  it('rejects the bit set or unchanged (in any byte), and the excluded bit changed', () => {
    expect(run(program, newlink(0x1 | 0x1000, 0x1))).toBe(0); // set up
    expect(run(program, newlink(0x0, 0x10000))).toBe(0); // carrier only
    expect(run(program, newlink(0x0, 0x100))).toBe(0);
    expect(run(program, newlink(0x0, 0x1000000))).toBe(0);
    expect(run(program, newlink(0x0, 0))).toBe(0); // a rename, an MTU
    expect(run(program, newlink(0x0, 0x1 | 0x40))).toBe(0); // closed before a deletion
    expect(run(program, newlink(0x1000, 0xffffffff))).toBe(0); // a new link, made down
  });
});
