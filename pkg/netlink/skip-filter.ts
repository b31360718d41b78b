import { endianness } from 'node:os';
import {
  ACCEPT,
  ALU_ADD_K,
  ALU_ADD_X,
  ALU_AND_K,
  ALU_LSH_K,
  ALU_OR_X,
  ALU_SUB_X,
  JMP_JA,
  JMP_JEQ_K,
  JMP_JGE_K,
  JMP_JGT_X,
  LD_B_IND,
  LD_H_IND,
  LD_MEM,
  LD_W_IND,
  LD_W_LEN,
  LDX_MEM,
  REJECT,
  RET_K,
  ST,
  STX,
  TAX,
} from './bpf-ops.ts';
import { asLoadedHalfword, encodeProgram, type Instruction, NLMSG_HDRLEN } from './socket-filter.ts';

/**
 * A classic BPF socket filter for notification groups whose datagrams carry several messages
 * (nf_tables coalesces a transaction's notifications into few datagrams): it walks the messages of a
 * datagram and rejects it only when every one of them is of no interest. socket-filter.ts's filters
 * look at a datagram's first message alone, which is exact for rtnetlink (one message per skb) but
 * would drop a datagram whose first message is of no interest and whose later ones are.
 *
 * A message is of no interest when its type is one of `types` and it does not hold all of the
 * `unless` bytes (offsets from its nlmsghdr). Anything the program cannot read through is accepted:
 * a datagram of more than maxMessages messages, a message length over 64 KB, shorter than the bytes
 * checked or past the datagram's end. Accepting costs a wake-up and a parse; rejecting wrongly would
 * lose a change.
 */
export interface SkipRule {
  types: readonly number[];
  unless: readonly { offset: number; value: number }[];
}

/**
 * Messages walked per datagram at most: the kernel coalesces notifications into datagrams of a page,
 * ~40 element changes. A block costs ~30 instructions and two per load of the `unless` bytes (up to
 * four bytes a load): 39 for "trellis", 53 for a 32-character name. The kernel allows 4,096 in all;
 * a rule too long for this many blocks gets as many as fit.
 */
export const SKIP_FILTER_MAX_MESSAGES = 48;
const BPF_MAXINSNS = 4096;
/** The instructions after the last block. */
const TAIL = 4;

/** Scratch memory: the message's length, its offset, what is left of the datagram from it. */
const M_LEN = 0;
const M_OFFSET = 1;
const M_LEFT = 2;

/** One instruction whose jumps name labels in the same message's block; resolved by `block`. */
type Step = Instruction & { jtTo?: string; jfTo?: string; at?: string };

/**
 * The program walking SKIP_FILTER_MAX_MESSAGES messages, then shorter ones, for a socket to attach the
 * first the kernel takes: a filter is charged to the socket's option memory (net.core.optmem_max:
 * 20 KB by default on older kernels, where the longest program does not fit; 128 KB on newer ones).
 */
export function compileSkipFilters(rule: SkipRule): Buffer[] {
  return [SKIP_FILTER_MAX_MESSAGES, 16, 4, 1].map((n) => compileSkipFilter(rule, n));
}

export function compileSkipFilter(rule: SkipRule, maxMessages = SKIP_FILTER_MAX_MESSAGES): Buffer {
  if (rule.types.length === 0) throw new RangeError('a skip rule needs message types');
  const one = block(rule);
  const count = Math.min(maxMessages, Math.floor((BPF_MAXINSNS - TAIL) / one.length));
  if (count < 1) throw new RangeError('a skip rule too long for a socket filter');
  const program: Instruction[] = [];
  for (let i = 0; i < count; i++) program.push(...one);
  // All walked: the datagram ends here (all of no interest), or it has more messages than walked.
  program.push(
    { code: LD_W_LEN, jt: 0, jf: 0, k: 0 },
    { code: JMP_JGT_X, jt: 0, jf: 1, k: 0 },
    { code: RET_K, jt: 0, jf: 0, k: ACCEPT },
    { code: RET_K, jt: 0, jf: 0, k: REJECT },
  );
  return encodeProgram(program);
}

/** The instructions for one message at offset X; falls through to the next with X at the next one. */
function block(rule: SkipRule): Instruction[] {
  const minLen = Math.max(NLMSG_HDRLEN, ...rule.unless.map((u) => u.offset + 1));
  const lastType = rule.types.length - 1;
  // With no exception a message of the types is skippable as it is.
  const skippable = rule.unless.length === 0 ? 'next' : 'skippable';
  const steps: Step[] = [
    // At or past the datagram's end: every message was of no interest.
    op(LD_W_LEN),
    op(JMP_JGT_X, 0, undefined, 'reject'),
    op(ALU_SUB_X),
    op(JMP_JGE_K, NLMSG_HDRLEN, undefined, 'accept'),
    op(ST, M_LEFT),
    ...lengthIntoA(),
    op(JMP_JGE_K, minLen, undefined, 'accept'),
    op(LDX_MEM, M_LEFT),
    op(JMP_JGT_X, 0, 'accept'),
    op(LDX_MEM, M_OFFSET),
    op(LD_H_IND, 4),
    ...rule.types.map((t, j) =>
      op(JMP_JEQ_K, asLoadedHalfword(t), skippable, j === lastType ? 'accept' : undefined),
    ),
    ...loads(rule.unless).flatMap((l, j) => [
      { ...op(l.code, l.offset), ...(j === 0 ? { at: 'skippable' } : {}) },
      op(JMP_JEQ_K, l.value, undefined, 'next'),
    ]),
    ...(rule.unless.length === 0 ? [] : [op(RET_K, ACCEPT)]),
    { ...op(LD_MEM, M_LEN), at: 'next' },
    op(ALU_ADD_K, 3),
    op(ALU_AND_K, 0xfffffffc), // NLMSG_ALIGN
    op(ALU_ADD_X),
    op(TAX),
    op(JMP_JA, 2),
    { ...op(RET_K, ACCEPT), at: 'accept' },
    { ...op(RET_K, REJECT), at: 'reject' },
  ];
  const where = new Map(steps.flatMap((s, i) => (s.at === undefined ? [] : [[s.at, i] as const])));
  return steps.map((s, i) => {
    const to = (label: string | undefined): number => {
      if (label === undefined) return 0;
      const target = where.get(label);
      if (target === undefined || target <= i || target - i - 1 > 255)
        throw new RangeError(`jump to ${label}`);
      return target - i - 1;
    };
    return { code: s.code, jt: to(s.jtTo), jf: to(s.jfTo), k: s.k };
  });
}

/**
 * The `unless` bytes as few loads as possible: runs of consecutive offsets read four, two or one
 * bytes at a time. BPF's wider loads read the bytes in memory order as a big-endian number, so the
 * value compared is the bytes in that order whatever the host's byte order.
 */
function loads(bytes: SkipRule['unless']): { code: number; offset: number; value: number }[] {
  const at = new Map(bytes.map((b) => [b.offset, b.value & 0xff]));
  const out: { code: number; offset: number; value: number }[] = [];
  for (const offset of [...at.keys()].sort((a, b) => a - b)) {
    if (!at.has(offset)) continue; // taken by an earlier load
    let size = 1;
    while (size < 4 && at.has(offset + size)) size++;
    if (size === 3) size = 2;
    let value = 0;
    for (let i = 0; i < size; i++) {
      value = (value << 8) | at.get(offset + i)!;
      at.delete(offset + i);
    }
    out.push({ code: size === 4 ? LD_W_IND : size === 2 ? LD_H_IND : LD_B_IND, offset, value: value >>> 0 });
  }
  return out;
}

function op(code: number, k = 0, jtTo?: string, jfTo?: string): Step {
  return {
    code,
    jt: 0,
    jf: 0,
    k,
    ...(jtTo === undefined ? {} : { jtTo }),
    ...(jfTo === undefined ? {} : { jfTo }),
  };
}

/**
 * A = M_LEN = nlmsg_len (host order, byte by byte: BPF's wider loads are big-endian); M_OFFSET = X.
 * A length of 64 KB or more is accepted rather than read through.
 */
function lengthIntoA(): Step[] {
  const le = endianness() === 'LE';
  const [b0, b1] = le ? [0, 1] : [3, 2];
  return [
    op(LD_H_IND, le ? 2 : 0), // the high half: both bytes 0
    op(JMP_JEQ_K, 0, undefined, 'accept'),
    op(LD_B_IND, b1),
    op(ALU_LSH_K, 8),
    op(ST, M_LEN),
    op(LD_B_IND, b0),
    op(STX, M_OFFSET),
    op(LDX_MEM, M_LEN),
    op(ALU_OR_X),
    op(ST, M_LEN),
  ];
}
