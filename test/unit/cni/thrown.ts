import { expect } from 'vitest';
import { CniError } from '../../../pkg/cni/errors.ts';

/** The error of class `type` that `f` throws (the test fails if it returns or throws anything else). */
export function thrownAs<E extends Error>(type: abstract new (...args: never[]) => E, f: () => unknown): E {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(type);
    return err as E;
  }
  throw new Error(`expected a ${type.name}`);
}

/** The CniError `f` throws (the test fails if it returns or throws anything else). */
export function thrown(f: () => unknown): CniError {
  return thrownAs(CniError, f);
}
