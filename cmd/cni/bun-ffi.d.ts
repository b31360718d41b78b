/**
 * The part of Bun's `bun:ffi` the shim uses (cmd/cni/libc.ts), declared here because bun-types is not
 * installed: tsc checks cmd/cni with Node's types, and only Bun ever runs it.
 */
declare module 'bun:ffi' {
  export type Pointer = number & { readonly __pointer: unique symbol };
  type ArgType = 'i32' | 'u32' | 'u64' | 'ptr';
  type ReturnType = 'i32' | 'i64_fast' | 'ptr';
  interface Signature {
    readonly args: readonly ArgType[];
    readonly returns: ReturnType;
  }
  type Returned<R extends ReturnType> = R extends 'ptr'
    ? Pointer | null
    : R extends 'i32'
      ? number
      : number | bigint;
  type Arg = number | Pointer | null;
  export function dlopen<S extends Record<string, Signature>>(
    path: string,
    symbols: S,
  ): { symbols: { [K in keyof S]: (...args: Arg[]) => Returned<S[K]['returns']> }; close(): void };
  /** The address of a typed array's memory, plus byteOffset. */
  export function ptr(view: ArrayBufferView, byteOffset?: number): Pointer;
  export const read: { i32(p: Pointer, byteOffset?: number): number };
}
