import { repairHostSides } from '../datapath/host-side.ts';
import { hostVethName, leaseLogFields } from '../datapath/names.ts';
import type { NetlinkHandle } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import type { Lease } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * After every full pass, and soon after a pod's host route is deleted: a pod's host end that lost
 * what ADD gave it (its routes flushed, a route deleted by hand, the veth set down) gets it back,
 * said at warn per pod. One check at a time; one asked for while another runs runs after it.
 */
export class HostSideCheck {
  readonly #host: NetlinkHandle;
  readonly #log: Logger;
  readonly #whileLeased: Parameters<typeof repairHostSides>[3];
  readonly #netnsAlive: ((path: string) => boolean) | undefined;
  /** Leases already reported without a veth (attachment key and creation), so each is said once. */
  #saidVethless = new Set<string>();
  #running = false;
  #again = false;

  /**
   * `whileLeased`: runs a repair under the attachment's lock while its lease is current
   * (repairHostSides). `netnsAlive`: whether a pod's namespace still exists (its pod runs).
   */
  constructor(
    host: NetlinkHandle,
    log: Logger,
    whileLeased?: Parameters<typeof repairHostSides>[3],
    netnsAlive?: (path: string) => boolean,
  ) {
    this.#host = host;
    this.#log = log;
    this.#whileLeased = whileLeased;
    this.#netnsAlive = netnsAlive;
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
        await this.#report(await repairHostSides(this.#host, leases(), busy, this.#whileLeased));
      } while (this.#again);
    } finally {
      this.#running = false;
    }
  }

  /**
   * A running pod (its namespace is there) whose host veth is gone (`ip link del trl…`, which takes the
   * pod's end with it): its network is gone and nothing here can bring it back. Said once a lease.
   */
  async #reportVethless(vethless: readonly Lease[]): Promise<void> {
    const now = new Set<string>();
    for (const lease of vethless) {
      if (lease.netns === undefined || this.#netnsAlive?.(lease.netns) !== true) continue;
      const id = leaseId(lease);
      if (this.#saidVethless.has(id)) {
        now.add(id);
        continue;
      }
      // A DEL that ended during the listings (the runtime's first, its namespace still there) took the
      // veth and the lease: only a lease still held, looked at under its lock, is a pod cut off.
      if (this.#whileLeased !== undefined && !(await this.#whileLeased(lease, async () => {}))) continue;
      now.add(id);
      this.#log.warn(
        {
          ...leaseLogFields(lease),
          hostIf: hostVethName(lease.containerId, lease.ifname),
          netns: lease.netns,
        },
        "a running pod's veth pair was deleted by someone else: the pod has no network; recreate it (kubectl delete pod)",
      );
    }
    this.#saidVethless = now;
  }

  async #report(outcome: Awaited<ReturnType<typeof repairHostSides>>): Promise<void> {
    await this.#reportVethless(outcome.vethless);
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
