import { hostVethName } from './names.ts';
import type { AttachmentKey, PodRef } from './types.ts';

/**
 * The alias ADD gives a pod's host veth (IFLA_IFALIAS, `ip link` prints it): whose it is, in the
 * kernel, next to the routes that say which addresses it carries. An operator reads the pod off `ip
 * link`; a start-up that finds a routed veth without a lease record (a state directory lost or
 * replaced while the agent was down) reads the attachment off it and rebuilds the lease instead of
 * cutting a running pod off (gc.ts, lease-rebuild.ts).
 *
 *   trellis id=<containerId> if=<ifname> net=<network> pod=<namespace>/<name> uid=<uid>
 *
 * Only id and if are needed; the rest is dropped where unknown, where it holds characters outside
 * the names' alphabet (CNI_ARGS are the runtime's text), or where the alias would pass the kernel's
 * 255 bytes.
 */
export interface VethOwner extends AttachmentKey {
  network?: string;
  pod?: PodRef;
}

const PREFIX = 'trellis';
const MAX_ALIAS = 255; // IFALIASZ - 1
const TOKEN = /^[A-Za-z0-9_.:-]+$/;

/** The alias for `owner`'s host veth; undefined when even id and if do not fit. */
export function vethAlias(owner: VethOwner): string | undefined {
  const required = `${PREFIX} id=${owner.containerId} if=${owner.ifname}`;
  if (required.length > MAX_ALIAS || !TOKEN.test(owner.containerId) || !TOKEN.test(owner.ifname))
    return undefined;
  const { network, pod } = owner;
  const optional = [
    network !== undefined && TOKEN.test(network) ? `net=${network}` : '',
    pod?.namespace !== undefined &&
    pod.name !== undefined &&
    TOKEN.test(pod.namespace) &&
    TOKEN.test(pod.name)
      ? `pod=${pod.namespace}/${pod.name}`
      : '',
    pod?.uid !== undefined && TOKEN.test(pod.uid) ? `uid=${pod.uid}` : '',
  ];
  let alias = required;
  for (const part of optional) {
    if (part !== '' && alias.length + 1 + part.length <= MAX_ALIAS) alias += ` ${part}`;
  }
  return alias;
}

/**
 * The owner `alias` names, when it is trellis's and names the attachment veth `linkName` belongs to
 * (the name is derived from id and if): anything else, an alias written by hand or another link's,
 * is not believed.
 */
export function ownerOfAlias(linkName: string, alias: string | undefined): VethOwner | undefined {
  if (alias === undefined) return undefined;
  const [prefix, ...tokens] = alias.split(' ');
  if (prefix !== PREFIX) return undefined;
  const fields = new Map<string, string>();
  for (const t of tokens) {
    const eq = t.indexOf('=');
    if (eq > 0 && TOKEN.test(t.slice(eq + 1).replace('/', ''))) fields.set(t.slice(0, eq), t.slice(eq + 1));
  }
  const containerId = fields.get('id');
  const ifname = fields.get('if');
  if (containerId === undefined || ifname === undefined) return undefined;
  if (hostVethName(containerId, ifname) !== linkName) return undefined;
  const owner: VethOwner = { containerId, ifname };
  const network = fields.get('net');
  if (network !== undefined) owner.network = network;
  const pod = fields.get('pod');
  const slash = pod?.indexOf('/') ?? -1;
  if (pod !== undefined && slash > 0 && slash < pod.length - 1) {
    owner.pod = { namespace: pod.slice(0, slash), name: pod.slice(slash + 1) };
    const uid = fields.get('uid');
    if (uid !== undefined) owner.pod.uid = uid;
  }
  return owner;
}
