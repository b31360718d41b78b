import { expect } from 'vitest';
import { CniError } from '../../../pkg/cni/errors.ts';

/** The CniError `f` throws (the test fails if it returns or throws anything else). */
export function thrown(f: () => unknown): CniError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('expected a CniError');
}
