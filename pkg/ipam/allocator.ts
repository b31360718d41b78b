import { CniCode, CniError } from '../cni/errors.ts';
import { type Cidr, familyName, formatCidr } from '../ip/index.ts';
import { usableBounds } from './range.ts';

/**
 * Chooses the next free address of a range (pure).
 *
 * Round-robin: the search starts AFTER the last allocated address and wraps around, so an address
 * that was just released (a crash-looping pod) is the last one to be handed out again, which gives
 * conntrack entries and caches elsewhere time to forget it.
 *
 * The scan never enumerates the range: among `used.size + 1` consecutive candidates at least one is
 * free (pigeonhole), so a /64 with a hundred pods costs at most a hundred and one steps.
 */
export function chooseNext(cidr: Cidr, used: ReadonlySet<bigint>, last: bigint | undefined): bigint {
  const { first, last: end, count } = usableBounds(cidr);
  let candidate = last !== undefined && last >= first && last < end ? last + 1n : first;
  const cap = BigInt(used.size) + 1n < count ? BigInt(used.size) + 1n : count;
  for (let step = 0n; step < cap; step++) {
    if (!used.has(candidate)) return candidate;
    candidate = candidate === end ? first : candidate + 1n;
  }
  let inUse = 0n;
  for (const v of used) if (v >= first && v <= end) inUse++;
  throw new CniError(
    CniCode.IPAM_EXHAUSTED,
    `${familyName(cidr.family)} range ${formatCidr(cidr)} is exhausted (${inUse} of ${count} addresses in use)`,
  );
}
