import { repairHostSides } from '../datapath/host-side.ts';
import { shortId } from '../datapath/names.ts';
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
  #running = false;
  #again = false;

  /** `whileLeased`: runs a repair under the attachment's lock while its lease is current (repairHostSides). */
  constructor(host: NetlinkHandle, log: Logger, whileLeased?: Parameters<typeof repairHostSides>[3]) {
    this.#host = host;
    this.#log = log;
    this.#whileLeased = whileLeased;
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
        this.#report(await repairHostSides(this.#host, leases(), busy, this.#whileLeased));
      } while (this.#again);
    } finally {
      this.#running = false;
    }
  }

  #report(outcome: Awaited<ReturnType<typeof repairHostSides>>): void {
    for (const d of outcome.repaired) {
      this.#log.warn(
        { ...podFields(d.lease), hostIf: d.link.name, missing: d.missing },
        "a pod's host end had lost what ADD gave it; put back",
      );
    }
    for (const { drift, error } of outcome.failed) {
      this.#log.warn(
        {
          ...podFields(drift.lease),
          hostIf: drift.link.name,
          missing: drift.missing,
          error: errorText(error),
        },
        "a pod's host end lacks what ADD gave it and could not be put back; the next pass tries again",
      );
    }
  }
}

/** A lease's pod as the log names it: pod (when the runtime said), container id and interface. */
function podFields(l: Lease): Record<string, string> {
  return {
    ...(l.podName === undefined ? {} : { pod: `${l.podNamespace}/${l.podName}` }),
    containerId: shortId(l.containerId),
    ifname: l.ifname,
  };
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
