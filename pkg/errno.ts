import type * as Util from 'node:util';

/**
 * The symbolic name of a kernel errno ('ECONNREFUSED' for 111; either sign), as Node and Bun report
 * it. node:util is loaded on first use, not imported: the CNI shim (a fresh Bun process per call)
 * would otherwise load it at start-up, ~1 ms, and it needs a name only when a call failed.
 */
export function errnoName(errno: number): string {
  try {
    const { getSystemErrorName }: typeof Util = process.getBuiltinModule('node:util');
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `errno ${errno}`;
  }
}
