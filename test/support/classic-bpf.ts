import { endianness } from 'node:os';

/**
 * A reference interpreter of the classic BPF instructions the agent's socket filters use
 * (pkg/netlink/socket-filter.ts, skip-filter.ts), with the kernel's rules where they matter: loads
 * are big-endian, a load past the packet's end ends the program with 0 (rejected), scratch memory
 * must be written before it is read, jumps only go forward. The kernel runs the same bytes in the
 * integration tests.
 */

const LE = endianness() === 'LE';

export interface BpfRun {
  /** The return value: bytes of the packet to keep (0: rejected). */
  verdict: number;
  /** Instructions executed. */
  steps: number;
}

export function runClassicBpf(program: Buffer, packet: Buffer): BpfRun {
  const count = program.length / 8;
  if (count > 4096) throw new Error(`program of ${count} instructions: the kernel takes 4,096 at most`);
  let a = 0;
  let x = 0;
  const mem: (number | undefined)[] = new Array(16).fill(undefined);
  let steps = 0;
  const load = (at: number, size: 1 | 2 | 4): number | undefined => {
    if (at < 0 || at + size > packet.length) return undefined;
    return size === 1 ? packet.readUInt8(at) : size === 2 ? packet.readUInt16BE(at) : packet.readUInt32BE(at);
  };
  const memory = (k: number): number => {
    const v = mem[k];
    if (v === undefined) throw new Error(`M[${k}] read before it was written`);
    return v;
  };
  for (let pc = 0; pc < count; pc++) {
    steps++;
    const at = pc * 8;
    const code = LE ? program.readUInt16LE(at) : program.readUInt16BE(at);
    const jt = program.readUInt8(at + 2);
    const jf = program.readUInt8(at + 3);
    const k = LE ? program.readUInt32LE(at + 4) : program.readUInt32BE(at + 4);
    const jump = (cond: boolean) => {
      pc += cond ? jt : jf;
    };
    let loaded: number | undefined;
    switch (code) {
      case 0x20: // ld w [k]
      case 0x28: // ld h [k]
      case 0x30: // ld b [k]
        loaded = load(k, code === 0x20 ? 4 : code === 0x28 ? 2 : 1);
        if (loaded === undefined) return { verdict: 0, steps };
        a = loaded;
        break;
      case 0x40: // ld w [x + k]
      case 0x48: // ld h [x + k]
      case 0x50: // ld b [x + k]
        loaded = load(x + k, code === 0x40 ? 4 : code === 0x48 ? 2 : 1);
        if (loaded === undefined) return { verdict: 0, steps };
        a = loaded;
        break;
      case 0x80: // ld len
        a = packet.length;
        break;
      case 0x60: // ld M[k]
        a = memory(k);
        break;
      case 0x61: // ldx M[k]
        x = memory(k);
        break;
      case 0x02: // st M[k]
        mem[k] = a;
        break;
      case 0x03: // stx M[k]
        mem[k] = x;
        break;
      case 0x04: // add #k
        a = (a + k) >>> 0;
        break;
      case 0x0c: // add x
        a = (a + x) >>> 0;
        break;
      case 0x1c: // sub x
        a = (a - x) >>> 0;
        break;
      case 0x4c: // or x
        a = (a | x) >>> 0;
        break;
      case 0x54: // and #k
        a = (a & k) >>> 0;
        break;
      case 0x64: // lsh #k
        a = (a << k) >>> 0;
        break;
      case 0x07: // tax
        x = a;
        break;
      case 0x05: // ja
        pc += k;
        break;
      case 0x15: // jeq #k
        jump(a === k);
        break;
      case 0x35: // jge #k
        jump(a >= k);
        break;
      case 0x45: // jset #k
        jump((a & k) !== 0);
        break;
      case 0x2d: // jgt x
        jump(a > x);
        break;
      case 0x06: // ret #k
        return { verdict: k, steps };
      default:
        throw new Error(`unexpected instruction 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error('fell off the end of the program');
}
