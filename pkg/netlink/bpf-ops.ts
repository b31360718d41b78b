/**
 * Classic BPF instruction codes (linux/filter.h: class | size | mode for loads, class | op | source
 * for ALU and jumps) and verdicts, for the socket filters (socket-filter.ts, skip-filter.ts).
 */
export const LD_W_ABS = 0x00 | 0x00 | 0x20;
export const LD_H_ABS = 0x00 | 0x08 | 0x20;
export const LD_B_ABS = 0x00 | 0x10 | 0x20;
export const LD_W_IND = 0x00 | 0x00 | 0x40;
export const LD_H_IND = 0x00 | 0x08 | 0x40;
export const LD_B_IND = 0x00 | 0x10 | 0x40;
export const LD_W_LEN = 0x00 | 0x00 | 0x80;
export const LD_MEM = 0x00 | 0x60;
export const LDX_MEM = 0x01 | 0x60;
export const ST = 0x02;
export const STX = 0x03;
export const ALU_ADD_K = 0x04 | 0x00 | 0x00;
export const ALU_ADD_X = 0x04 | 0x00 | 0x08;
export const ALU_SUB_X = 0x04 | 0x10 | 0x08;
export const ALU_OR_X = 0x04 | 0x40 | 0x08;
export const ALU_AND_K = 0x04 | 0x50 | 0x00;
export const ALU_LSH_K = 0x04 | 0x60 | 0x00;
export const JMP_JA = 0x05 | 0x00;
export const JMP_JEQ_K = 0x05 | 0x10 | 0x00;
export const JMP_JGT_X = 0x05 | 0x20 | 0x08;
export const JMP_JGE_K = 0x05 | 0x30 | 0x00;
export const JMP_JSET_K = 0x05 | 0x40 | 0x00;
export const TAX = 0x07 | 0x00;
export const RET_K = 0x06;
/** A return value is how many bytes of the packet to keep: all of it, or 0 for none (rejected). */
export const ACCEPT = 0xffffffff;
export const REJECT = 0;
