import { toCniError } from '../cni/errors.ts';
import { attachmentKey, hostVethName, shortId } from '../datapath/names.ts';
import { HELD_RELEASED, keyChanged, type RebuildDeps } from './lease-rebuild.ts';

/**
 * Held addresses (a quarantined or lost lease record) of pods that have gone since: released once
 * the attachment's host veth no longer exists. The rebuild (lease-rebuild.ts) runs only when the pod
 * CIDRs are set, so a held attachment it could not restore (no host routes left, say) and whose DEL
 * never came kept its addresses until the agent restarted. Veth pairs die together: without the host
 * end no pod interface carries them. Returns how many attachments were released.
 */
export async function releaseHeldWithoutVeth(
  deps: Pick<RebuildDeps, 'ipam' | 'host' | 'busy' | 'log'>,
): Promise<number> {
  let released = 0;
  for (const key of deps.ipam.heldKeys()) {
    if (deps.busy.has(attachmentKey(key))) continue;
    const hostVeth = hostVethName(key.containerId, key.ifname);
    const fields = { containerId: shortId(key.containerId), ifname: key.ifname };
    try {
      if ((await deps.host.getLink(hostVeth)) !== undefined) continue;
      // Checked again after the read yielded: a CNI call may have started, an ADD made a lease, or a
      // DEL released the hold.
      if (keyChanged(deps, key)) continue;
      deps.ipam.release(key);
      released++;
      deps.log.info(
        { ...fields, reason: `host veth ${hostVeth} does not exist (the pod is gone)` },
        HELD_RELEASED,
      );
    } catch (err) {
      deps.log.warn(
        { ...fields, error: toCniError(err).message },
        'held addresses of a pod gone could not be released; tried again later',
      );
    }
  }
  return released;
}
