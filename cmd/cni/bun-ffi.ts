/**
 * Bun's native FFI functions, taken from the object `bun:ffi` wraps (`Bun.FFI`) instead of from the
 * module. `bun:ffi` is a JavaScript module that Bun compiles from source on every start: importing it
 * cost the shim 1.6-2 ms on the test VM, twice the dlopen it exists for, in every CNI call
 * (bench/HISTORY.md).
 * The three functions the shim uses are the module's own exports or thin wrappers of them (dlopen's
 * turns a returned Error into a throw, as this one does). `Bun.FFI` is not documented, but the shim
 * is compiled with the Bun that package-lock pins and carries it inside: it cannot change under a
 * built binary, and test/integration/shim runs every path of the binary, so a Bun upgrade that
 * removes it fails the tests instead of the runtime's calls.
 *
 * Declared here because bun-types is not installed: tsc checks cmd/cni with Node's types, and only
 * Bun ever runs it.
 */

export type Pointer = number & { readonly __pointer: unique symbol };
type ArgType = 'i32' | 'u32' | 'i64' | 'u64' | 'ptr';
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
type Symbols<S extends Record<string, Signature>> = {
  [K in keyof S]: (...args: Arg[]) => Returned<S[K]['returns']>;
};

export interface Ffi {
  /** Binds `symbols` of the shared library at `path`; throws when it cannot. */
  dlopen<S extends Record<string, Signature>>(path: string, symbols: S): Symbols<S>;
  /** The address of a typed array's memory, plus byteOffset. */
  ptr(view: ArrayBufferView, byteOffset?: number): Pointer;
  read: { i32(p: Pointer, byteOffset?: number): number };
}

interface NativeFfi {
  /** Returns (does not throw) an Error when it fails. */
  dlopen(path: string, symbols: Record<string, Signature>): { symbols: Record<string, unknown> } | Error;
  ptr(view: ArrayBufferView, byteOffset?: number): Pointer;
  read: { i32(p: Pointer, byteOffset?: number): number };
}

/** Bun's native FFI; throws when this runtime has none (not Bun, or a Bun without `Bun.FFI`). */
export function bunFfi(): Ffi {
  const native = (globalThis as { Bun?: { FFI?: Partial<NativeFfi> } }).Bun?.FFI;
  if (
    typeof native?.dlopen !== 'function' ||
    typeof native.ptr !== 'function' ||
    typeof native.read?.i32 !== 'function'
  ) {
    throw new Error('this runtime has no Bun.FFI with dlopen, ptr and read (the shim is built for Bun 1.4)');
  }
  const { dlopen, ptr, read } = native as NativeFfi;
  return {
    dlopen<S extends Record<string, Signature>>(path: string, symbols: S): Symbols<S> {
      const lib = dlopen(path, symbols);
      if (lib instanceof Error) throw lib;
      return lib.symbols as Symbols<S>;
    },
    // Called with one argument when there is no offset, as bun:ffi's wrapper does.
    ptr: (view, byteOffset) => (byteOffset === undefined ? ptr(view) : ptr(view, byteOffset)),
    read,
  };
}
