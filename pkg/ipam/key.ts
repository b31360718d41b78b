import { CniCode, CniError } from '../cni/errors.ts';
import type { LeaseKey } from './types.ts';

/**
 * A lease key becomes a file name (the owner name "<containerId>@<ifname>"), so it is validated here
 * even though the CNI layer validated it already: nothing that could climb out of the state directory
 * or collide with another key may reach the file system.
 */

// The CNI specification's container id alphabet; '@' is not in it, which keeps owner names unambiguous.
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
// A safe subset of Linux interface names (IFNAMSIZ - 1 = 15 bytes). Narrower than what Linux and the
// CNI spec allow (`e@1`, `a+b`), on purpose: lease file names of a wider alphabet would be quarantined
// by the agents of earlier releases, whose start-up sweep then removes those pods' veths on a rollback.
const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
// Keeps "<id>@<ifname>.json.<timestamp>" well under NAME_MAX (255).
const MAX_CONTAINER_ID = 192;

export function keyProblem(key: LeaseKey): string | undefined {
  const { containerId, ifname } = key;
  if (typeof containerId !== 'string' || !CONTAINER_ID.test(containerId)) {
    return `CNI_CONTAINERID ${JSON.stringify(containerId)}: expected letters, digits, '_', '.', '-', starting with a letter or digit`;
  }
  if (containerId.length > MAX_CONTAINER_ID) {
    return `CNI_CONTAINERID is ${containerId.length} characters long; trellis takes at most ${MAX_CONTAINER_ID} (it names the pod's lease file)`;
  }
  if (typeof ifname !== 'string' || !IFNAME.test(ifname)) {
    return `CNI_IFNAME ${JSON.stringify(ifname)}: trellis takes 1-15 letters, digits, '_', '.', '-', starting with a letter or digit (it names the pod's lease file)`;
  }
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
  const at = name.indexOf('@');
  if (at < 0) return undefined;
  const key = { containerId: name.slice(0, at), ifname: name.slice(at + 1) };
  return keyProblem(key) === undefined ? key : undefined;
}
