import { createHash } from 'node:crypto';

/** Every host-side veth trellis creates starts with this; GC and doctor recognise ours by it. */
export const HOST_VETH_PREFIX = 'trl';

/**
 * The host end's name is derived from (container ID, ifname) so DEL, CHECK and GC find it without
 * state, and a retried ADD lands on the same name. 3 + 12 hex chars = 15, the kernel's IFNAMSIZ-1.
 */
export function hostVethName(containerId: string, ifname: string): string {
  const key = `${containerId}\0${ifname}`;
  let name = vethNames.get(key);
  if (name === undefined) {
    const digest = createHash('sha256').update(key).digest('hex');
    name = `${HOST_VETH_PREFIX}${digest.slice(0, 12)}`;
    // Every host-end check names every lease's veth, a few times: a hash each was ~10 % of it.
    if (vethNames.size >= VETH_NAMES_KEPT) vethNames.clear();
    vethNames.set(key, name);
  }
  return name;
}

/** hostVethName's answers: more than a node's pods, cleared when full (a pure function of its key). */
const vethNames = new Map<string, string>();
const VETH_NAMES_KEPT = 4096;

export function isHostVethName(name: string): boolean {
  return name.length === 15 && name.startsWith(HOST_VETH_PREFIX) && /^[0-9a-f]{12}$/.test(name.slice(3));
}

/**
 * An attachment as one string ("<containerId>\0<ifname>"; neither part can hold a NUL): the key of
 * the per-attachment lock and of the set of attachments with a CNI call in flight.
 */
export function attachmentKey(k: { containerId: string; ifname: string }): string {
  return `${k.containerId}\0${k.ifname}`;
}

/**
 * The network a lease's attachment belongs to when it is not `network`, else undefined. A lease that
 * records none is `unrecorded`'s; with no `network` to compare with, no attachment is another's.
 */
export function otherNetworkOf(
  lease: { network?: string } | undefined,
  network: string | undefined,
  unrecorded: string | undefined,
): string | undefined {
  if (lease === undefined || network === undefined) return undefined;
  const owner = lease.network ?? unrecorded;
  return owner !== undefined && owner !== network ? owner : undefined;
}

/** The attachment an attachmentKey names. */
export function attachmentOfKey(key: string): { containerId: string; ifname: string } {
  const at = key.indexOf('\0');
  return { containerId: key.slice(0, at), ifname: key.slice(at + 1) };
}

/** Short container ID for log lines, like the runtimes print. */
export function shortId(containerId: string): string {
  return containerId.slice(0, 12);
}

/** A lease's pod as log lines name it: pod (when the runtime said), short container id, interface. */
export function leaseLogFields(l: {
  containerId: string;
  ifname: string;
  podNamespace?: string;
  podName?: string;
}): Record<string, string> {
  return {
    ...(l.podName === undefined ? {} : { pod: `${l.podNamespace ?? ''}/${l.podName}` }),
    containerId: shortId(l.containerId),
    ifname: l.ifname,
  };
}
