import { interfaceNameProblem, MAX_CONTAINER_ID_LENGTH } from '../cni/env.ts';
import { CniCode, CniError } from '../cni/errors.ts';
import { isCniName } from '../cni/text.ts';
import type { LeaseKey } from './types.ts';

/**
 * A lease key becomes a file name (the owner name "<containerId>@<ifname>"), so it is validated here
 * even though the CNI layer validated it already: nothing that could climb out of the state directory
 * or collide with another key may reach the file system. The rules are the CNI layer's own
 * (cni/env.ts), so every attachment the environment check lets through has a lease key:
 * - the container id is the spec's alphabet (letters, digits, '_', '.', '-'), at most
 *   MAX_CONTAINER_ID_LENGTH characters: no '/', never "." or "..", and no '@';
 * - the interface name is any name Linux accepts (interfaceNameProblem): no '/' or NUL, not "." or
 *   "..", at most 15 bytes. It may contain '@' ("e@1"): owner names split at the FIRST '@', which
 *   the container id never holds, so the split is unambiguous.
 */

export function keyProblem(key: LeaseKey): string | undefined {
  const { containerId, ifname } = key;
  if (typeof containerId !== 'string' || !isCniName(containerId)) {
    return `invalid container id ${JSON.stringify(containerId)}: expected letters, digits, '_', '.', '-', starting with a letter or digit`;
  }
  if (containerId.length > MAX_CONTAINER_ID_LENGTH) {
    return `invalid container id: longer than ${MAX_CONTAINER_ID_LENGTH} characters`;
  }
  if (typeof ifname !== 'string') return `invalid interface name ${JSON.stringify(ifname)}: not a string`;
  const problem = interfaceNameProblem(ifname);
  if (problem !== undefined) return `invalid interface name ${JSON.stringify(ifname)}: ${problem}`;
  return undefined;
}

export function validateKey(key: LeaseKey): void {
  const problem = keyProblem(key);
  if (problem !== undefined) throw new CniError(CniCode.INVALID_ENV, problem);
}

export function ownerName(key: LeaseKey): string {
  return `${key.containerId}@${key.ifname}`;
}

/** The key an owner name stands for, or undefined when the name is not one ownerName produces. */
export function parseOwnerName(name: string): LeaseKey | undefined {
  const at = name.indexOf('@'); // the first: a container id holds none, an interface name may
  if (at < 0) return undefined;
  const key = { containerId: name.slice(0, at), ifname: name.slice(at + 1) };
  return keyProblem(key) === undefined ? key : undefined;
}
