import { endianness } from 'node:os';
import { ACCEPT, JMP_JEQ_K, JMP_JSET_K, LD_B_ABS, LD_H_ABS, LD_W_ABS, REJECT, RET_K } from './bpf-ops.ts';

/**
 * Classic BPF socket filters (SO_ATTACH_FILTER) for notification sockets: the kernel runs the
 * program on every message before queueing it, and a message it rejects is never queued, woken
 * for, read or parsed. Every rtnetlink notification is its own skb, so "packet" here means one
 * netlink message starting at its nlmsghdr. A filtered message is not a drop: the socket's drop
 * counter (our overflow signal) does not move.
 *
 * The program accepts a message when any clause matches: a clause is the message type and, where
 * given, bytes or 32-bit words of the fixed header after the nlmsghdr (rtmsg, nhmsg, ifinfomsg, …) at
 * known offsets, 16-bit fields that must not hold a value, and bits of 32-bit words that must be
 * set or clear.
 */

export interface FilterClause {
  /** nlmsg_type, e.g. RTM_DELROUTE. */
  type: number;
  /** Bytes of the message that must hold these values (offsets from the start of the nlmsghdr). */
  bytes?: readonly { offset: number; value: number }[];
  /** 32-bit fields in host order (an ifindex) that must hold these values, offsets as for bytes. */
  words?: readonly { offset: number; value: number }[];
  /** 16-bit fields in host order (a neighbour's state) that must NOT hold these values. */
  notHalfwords?: readonly { offset: number; value: number }[];
  /** 32-bit fields in host order (a link's flags) with any of `mask`'s bits set, or (`clear`) none. */
  wordBits?: readonly { offset: number; mask: number; clear?: true }[];
}

/** Offset of the family header (rtmsg, ifinfomsg, nhmsg) after the 16-byte nlmsghdr. */
export const NLMSG_HDRLEN = 16;
const NLMSG_TYPE_OFFSET = 4;

const MAX_JUMP = 255;

export interface Instruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

const littleEndian = endianness() === 'LE';

/** BPF_H loads read network (big-endian) order; nlmsg_type is in host order. */
export function asLoadedHalfword(value: number): number {
  return littleEndian ? ((value & 0xff) << 8) | (value >> 8) : value;
}

/** BPF_W loads read network (big-endian) order too; netlink's 32-bit fields are in host order. */
function asLoadedWord(value: number): number {
  const v = value >>> 0;
  if (!littleEndian) return v;
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/**
 * The program as struct sock_filter[] bytes (host order), for SO_ATTACH_FILTER. Each check that
 * fails jumps to the next clause; a clause whose checks all pass accepts; after the last, reject.
 */
export function compileAcceptFilter(clauses: readonly FilterClause[]): Buffer {
  const program: Instruction[] = [];
  for (const clause of clauses) {
    const checks: { code: number; offset: number; value: number; not?: true; test?: number }[] = [
      { code: LD_H_ABS, offset: NLMSG_TYPE_OFFSET, value: asLoadedHalfword(clause.type) },
      ...(clause.bytes ?? []).map((b) => ({ code: LD_B_ABS, offset: b.offset, value: b.value & 0xff })),
      ...(clause.words ?? []).map((w) => ({
        code: LD_W_ABS,
        offset: w.offset,
        value: asLoadedWord(w.value),
      })),
      ...(clause.notHalfwords ?? []).map((h) => ({
        code: LD_H_ABS,
        offset: h.offset,
        value: asLoadedHalfword(h.value & 0xffff),
        not: true as const,
      })),
      // JSET jumps when (A & k) != 0: "any bit set" passes on it, "clear" fails on it.
      ...(clause.wordBits ?? []).map((w) => ({
        code: LD_W_ABS,
        offset: w.offset,
        value: asLoadedWord(w.mask),
        test: JMP_JSET_K,
        ...(w.clear === true ? { not: true as const } : {}),
      })),
    ];
    // Instructions of this clause after each jump: the remaining checks (2 each) and the accept.
    checks.forEach((check, i) => {
      const toNextClause = 2 * (checks.length - i - 1) + 1;
      if (toNextClause > MAX_JUMP) throw new RangeError('socket filter clause too long');
      program.push({ code: check.code, jt: 0, jf: 0, k: check.offset });
      const code = check.test ?? JMP_JEQ_K;
      program.push(
        check.not === true
          ? { code, jt: toNextClause, jf: 0, k: check.value }
          : { code, jt: 0, jf: toNextClause, k: check.value },
      );
    });
    program.push({ code: RET_K, jt: 0, jf: 0, k: ACCEPT });
  }
  program.push({ code: RET_K, jt: 0, jf: 0, k: REJECT });
  return encodeProgram(program);
}

/** struct sock_filter[] bytes in host order, for SO_ATTACH_FILTER. */
export function encodeProgram(program: readonly Instruction[]): Buffer {
  const out = Buffer.alloc(program.length * 8);
  program.forEach((ins, i) => {
    const at = i * 8;
    if (littleEndian) {
      out.writeUInt16LE(ins.code, at);
      out.writeUInt32LE(ins.k, at + 4);
    } else {
      out.writeUInt16BE(ins.code, at);
      out.writeUInt32BE(ins.k, at + 4);
    }
    out.writeUInt8(ins.jt, at + 2);
    out.writeUInt8(ins.jf, at + 3);
  });
  return out;
}
