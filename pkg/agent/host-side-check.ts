import { repairHostSides } from '../datapath/host-side.ts';
import { hostVethName, leaseLogFields } from '../datapath/names.ts';
import { namedByPid } from '../datapath/netns-identity.ts';
import type { NetlinkHandle } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import type { Lease } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';

export interface HostSideCheckOptions {
  /** Runs a repair under the attachment's lock while its lease is current (repairHostSides). */
  whileLeased?: Parameters<typeof repairHostSides>[3];
  /**
   * Whether a lease's pod namespace is still there, the one ADD used (leaseNetnsLive): a pair is
   * made again only into that namespace.
   */
  netnsLive?: (lease: Lease) => boolean;
  /**
   * Sets a running pod's veth pair up again from its lease, as ADD did (called under the lock, for
   * a lease still held). Without it such a pod is only reported.
   */
  reattach?: (lease: Lease) => Promise<void>;
}

/**
 * After every full pass, and soon after a pod's host route is deleted: a pod's host end that lost
 * what ADD gave it (its routes flushed, a route deleted by hand, the veth set down) gets it back,
 * and a running pod whose veth pair was deleted gets a new one, said at warn per pod. One check at a
 * time; one asked for while another runs runs after it.
 */
export class HostSideCheck {
  readonly #host: NetlinkHandle;
  readonly #log: Logger;
  readonly #opts: HostSideCheckOptions;
  /** Leases already reported without a veth (attachment key and creation), so each is said once. */
  #saidVethless = new Set<string>();
  /** Of those, the ones whose pair could not be made again: tried again at every check (not said again). */
  #remakeFailed = new Set<string>();
  #running = false;
  #again = false;

  constructor(host: NetlinkHandle, log: Logger, opts: HostSideCheckOptions = {}) {
    this.#host = host;
    this.#log = log;
    this.#opts = opts;
  }

  /** `leases`: read at the start of each check (a check that runs again sees the leases of then). */
  async run(leases: () => readonly Lease[], busy: ReadonlySet<string>): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        await this.#report(await repairHostSides(this.#host, leases(), busy, this.#opts.whileLeased));
      } while (this.#again);
    } finally {
      this.#running = false;
    }
  }

  /**
   * A running pod (its namespace is there) whose host veth is gone (`ip link del trl…`, which takes the
   * pod's end with it): its network is gone. It gets a new pair from its lease, with the addresses,
   * routes, alias, pod MAC (derived from the attachment) and MTU ADD gave it (the network config's
   * own `mtu`, which the lease records, or else the node's for new pods), and a new host-end MAC.
   * Without `reattach`, or when that fails, it is said once a lease, with what to do; a failed one is
   * tried again at every check (the kernel refusing for a moment must not leave the pod cut off).
   */
  async #reattachVethless(vethless: readonly Lease[]): Promise<void> {
    const { whileLeased, netnsLive, reattach } = this.#opts;
    const now = new Set<string>();
    const failedNow = new Set<string>();
    for (const lease of vethless) {
      if (lease.netns === undefined || netnsLive?.(lease) !== true) continue;
      const id = leaseId(lease);
      const said = this.#saidVethless.has(id);
      if (said && !this.#remakeFailed.has(id)) {
        now.add(id);
        continue;
      }
      const fields = {
        ...leaseLogFields(lease),
        hostIf: hostVethName(lease.containerId, lease.ifname),
        netns: lease.netns,
      };
      // A DEL that ended during the listings (the runtime's first, its namespace still there) took the
      // veth and the lease: only a lease still held, looked at under its lock, is a pod cut off.
      let failure: unknown;
      let reattached = false;
      const unsure = pidPathUnsure(lease);
      const held =
        whileLeased === undefined
          ? true
          : await whileLeased(lease, async () => {
              if (reattach === undefined || unsure !== undefined) return;
              try {
                await reattach(lease);
                reattached = true;
              } catch (err) {
                failure = err;
              }
            });
      if (!held) continue;
      if (reattached) {
        this.#log.warn(
          { ...fields, addresses: lease.addresses.map((a) => a.address) },
          "a running pod's veth pair was deleted by someone else; made again from its lease",
        );
        continue;
      }
      now.add(id);
      if (failure !== undefined) failedNow.add(id);
      if (said) continue;
      this.#log.warn(
        {
          ...fields,
          ...(failure === undefined ? {} : { error: errorText(failure) }),
          ...(unsure === undefined ? {} : { notRemade: unsure }),
        },
        "a running pod's veth pair was deleted by someone else: the pod has no network; recreate it (kubectl delete pod)",
      );
    }
    this.#saidVethless = now;
    this.#remakeFailed = failedNow;
  }

  async #report(outcome: Awaited<ReturnType<typeof repairHostSides>>): Promise<void> {
    await this.#reattachVethless(outcome.vethless);
    for (const d of outcome.repaired) {
      this.#log.warn(
        { ...leaseLogFields(d.lease), hostIf: d.link.name, missing: d.missing },
        "a pod's host end had lost what ADD gave it; put back",
      );
    }
    for (const { drift, error } of outcome.failed) {
      this.#log.warn(
        {
          ...leaseLogFields(drift.lease),
          hostIf: drift.link.name,
          missing: drift.missing,
          error: errorText(error),
        },
        "a pod's host end lacks what ADD gave it and could not be put back; the next pass tries again",
      );
    }
  }
}

/**
 * Whether a veth pair may be made again for a lease whose veth is gone: its pod's namespace is still
 * there, and it is the pod's. A lease that records which namespace ADD used (netnsId) is checked
 * against it; one that does not (written before trellis kept it, or rebuilt from the kernel) is taken
 * at its path's word, except a path named by PID (cri-dockerd's /proc/PID/ns/net): after a reboot or
 * a lost DEL that PID may be any process's, and the pair would give another namespace the pod's
 * address and default route.
 */
export function mayRemakePair(lease: Lease, netnsLive: ((lease: Lease) => boolean) | undefined): boolean {
  if (lease.netns === undefined || netnsLive?.(lease) !== true) return false;
  return pidPathUnsure(lease) === undefined;
}

/** Why a lease's path, named by process id and with no recorded identity, is no proof of its pod. */
function pidPathUnsure(lease: Lease): string | undefined {
  if (lease.netnsId !== undefined || lease.netns === undefined || !namedByPid(lease.netns)) return undefined;
  return `${lease.netns} names a process, which may not be the pod's any more, and the lease (from before trellis recorded which namespace ADD used) cannot tell`;
}

/** A lease's identity for the reports: its attachment and creation (a new ADD of the key is another). */
function leaseId(l: Lease): string {
  return `${l.containerId}\0${l.ifname}\0${l.createdAt}`;
}

/** The lease IPAM holds for `lease`'s attachment is still that one (same creation, same addresses). */
export function stillLeased(current: Lease | undefined, lease: Lease): boolean {
  return (
    current !== undefined &&
    current.createdAt === lease.createdAt &&
    current.addresses.length === lease.addresses.length &&
    current.addresses.every((a, i) => a.address === lease.addresses[i]?.address)
  );
}
