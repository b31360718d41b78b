/** The public shapes of IPAM; see ipam.ts for the operations. */

export interface LeaseKey {
  containerId: string;
  ifname: string;
}

export interface LeasedAddress {
  family: 4 | 6;
  address: string;
  /** the range it came from, e.g. "10.244.1.0/24" */
  range: string;
}

export interface LeaseMeta {
  netns?: string;
  /**
   * Which namespace `netns` named at ADD: "<boot id>/<nsfs dev>:<ino>" (netns-identity.ts). A path
   * can name another namespace later (cri-dockerd's /proc/PID/ns/net once the PID is reused, or
   * after a reboot): a pod's namespace is still there only while the path names this one. Absent in
   * records written before it was kept, in ones rebuilt from the kernel, and where it could not be read.
   */
  netnsId?: string;
  podNamespace?: string;
  podName?: string;
  podUid?: string;
  /**
   * The CNI network (its config list's `name`) the attachment was added to: GC collects per network.
   * Absent in records written before it was kept (and ignored by agents from before then).
   */
  network?: string;
  /**
   * The network config's own `mtu`, when it sets one: a pod's veth pair made again from the lease
   * (HostSideCheck) gets it rather than the node's MTU for new pods. Absent for most pods.
   */
  mtu?: number;
}

export interface Lease extends LeaseKey, LeaseMeta {
  addresses: LeasedAddress[];
  /** ISO 8601 */
  createdAt: string;
}

export interface RangeUsage {
  family: 4 | 6;
  range: string;
  /** Addresses the range can hand out (reserved ones excluded); a bigint when beyond 2^53. */
  capacity: bigint | number;
  used: number;
}

export interface LoadReport {
  /**
   * Records set aside at load. `leftInPlace`: moving it to quarantine/ failed (the error; e.g. a full
   * disk), so it stays in leases/, its owner's addresses held in memory until its DEL, and the next
   * load tries again. The agent starts either way: DEL is what frees a full disk.
   */
  quarantined: { file: string; reason: string; leftInPlace?: string }[];
  /**
   * Paths of addrs/ entries that name no owner (a regular file, or a symlink to something that is not
   * "<containerId>@<ifname>"): kept reserved, since something may use the address, but no DEL or GC
   * can ever free them; an operator has to look (absent when there are none).
   */
  unowned?: string[];
  /**
   * Repairs load could not write because the state directory takes no writes (EROFS): a leftover tmp
   * file, a lost reservation symlink, an orphan reservation. Held in memory as the repair would have
   * left them (an address in doubt stays taken), and tried again by the next load (absent when none).
   */
  readOnly?: string[];
}

export const META_FIELDS = ['netns', 'netnsId', 'podNamespace', 'podName', 'podUid', 'network'] as const;
