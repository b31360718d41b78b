import { randomBytes } from 'node:crypto';
import type { Logger } from '../observe/logger.ts';
import type { BackgroundDeleter } from './background-deleter.ts';
import { deleteLinkIfNamedInBackground } from './delete-link.ts';
import { randomMac } from './mac.ts';
import { isOwnNetnsFd } from './own-netns.ts';
import { IPV6_MIN_MTU, type LinkInfo, type NetlinkHandle, type NetnsPort, type PodNetlink } from './ports.ts';
import { setVethSysctls } from './veth-sysctls.ts';

/** Host ends of prepared pairs: "trlp" + 11 hex, never a name isHostVethName accepts (no GC takes one). */
export const PREPARED_PREFIX = 'trlp';

export function isPreparedName(name: string): boolean {
  return name.length === 15 && name.startsWith(PREPARED_PREFIX) && /^[0-9a-f]{11}$/.test(name.slice(4));
}

/** A veth pair made for a pod's namespace before its ADD: both ends down, under a temporary name. */
export interface PreparedPair {
  /** The host end as the kernel made it (its temporary name). */
  host: LinkInfo;
  /** The pod end: its index in the pod's namespace, its name there (the same temporary name). */
  podIndex: number;
  podName: string;
  /** Both ends' MTU. */
  mtu: number;
  /** The sysctls were written for a pod with IPv6 (true) or without (false); ADD rewrites on a mismatch. */
  ipv6: boolean;
  /**
   * A netlink socket in the pod's namespace, opened when the pair was made: ADD configures the pod
   * end through it instead of entering the namespace to open one (~0.3 ms of its critical path on a
   * slow VM). Whoever takes the pair closes it.
   */
  pod: PodNetlink;
}

/**
 * skipped: not made, the agent being busy (a call or another pair in progress) or 64 waiting;
 * unsuitable: made for a pod with(out) IPv6 and taken by an ADD whose lease says otherwise (deleted).
 */
export type PreparedOutcome = 'used' | 'expired' | 'gone' | 'failed' | 'skipped' | 'unsuitable';

export interface PreparedPairsDeps {
  host: Pick<NetlinkHandle, 'createVeth' | 'getLink' | 'getLinkByIndex' | 'deleteLink'>;
  netns: Pick<
    NetnsPort,
    | 'openNetnsFd'
    | 'closeFd'
    | 'namespaceId'
    | 'openPodNetlink'
    | 'writeSysctl'
    | 'writeSysctlsInFd'
    | 'readSysctl'
  >;
  deleter: BackgroundDeleter;
  /** What ADD would give a pod now (MTU, IPv6 or not); undefined while ADD is not served. */
  settings(): { mtu: number; ipv6: boolean } | undefined;
  /** A CNI call is in progress: the agent is not idle, and a pair made now would compete with it. */
  busy?(): boolean;
  log: Logger;
  /** How long a pair waits for its ADD before it is deleted. */
  ttlMs?: number;
  /** At most this many pairs wait at once; a namespace beyond is left to its ADD. */
  max?: number;
  onOutcome?(outcome: PreparedOutcome): void;
}

/** containerd and CRI-O run the plugin right after pinning the namespace; 10 s is long past that. */
export const PREPARED_TTL_MS = 10_000;
export const PREPARED_MAX = 64;
/** How many namespaces ADD has been into are remembered (see PreparedPairs.served). */
const SERVED_REMEMBERED = 256;

interface Entry {
  id: string;
  path: string;
  /** Held open while the entry lives: the namespace (and so its inode number, the key) stays unique. */
  fd: number;
  pair: Promise<PreparedPair | undefined>;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Veth pairs made ahead of ADD. A runtime pins a pod's namespace (/var/run/netns/...) and then
 * starts the CNI plugin; the few milliseconds the plugin takes to start are enough for the agent
 * to make the pair into that namespace, which ADD then only renames and configures (the kernel's
 * veth creation, ~0.5-0.8 ms of an ADD here, leaves the critical path; the two renames cost ~0.26 ms
 * of it back). Keyed by the namespace's
 * identity (nsfs dev:ino), not its path: ADD finds the pair whatever path it is given, and never one
 * made for another namespace. A pair not taken within the TTL, or whose namespace file goes, is
 * deleted; one left by a crashed agent is removed by the next start-up sweep (its prefix).
 */
export class PreparedPairs {
  private readonly deps: PreparedPairsDeps;
  private readonly entries = new Map<string, Entry>();
  /** Pairs being made (the kernel's creation under way). */
  private making = 0;
  /**
   * The namespaces ADD has been into lately, path -> id (oldest first): a namespace whose ADD came
   * before its watch event (a busy agent, a runtime quicker than inotify) needs no pair any more. By
   * path and id both: the kernel gives a freed namespace's inode number to the next one made, but
   * containerd and CRI-O pin every pod at a path of its own, so a new pod never matches an old one.
   */
  private readonly served = new Map<string, string>();
  private stopped = false;

  constructor(deps: PreparedPairsDeps) {
    this.deps = deps;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * A namespace appeared at `path`: makes its pair (off the JS thread's critical work; resolves
   * when done). Nothing when ADD is not served, the path is no network namespace (yet: the caller
   * tries again), the agent's own, already prepared, or too many wait; nor while the agent is busy
   * (a CNI call, another pair being made): a pair is worth making ahead with time that would go
   * unused. In a burst the machine has none to spare, and renaming a pair costs the kernel more than
   * half of making it (~0.26 against ~0.44 ms here), so ADD makes its own: measured, preparing every
   * pair of 20 concurrent ADDs made the burst 8-10 % slower on 2 cores.
   */
  prepare(path: string): 'started' | 'not-a-netns' | 'ignored' {
    if (this.stopped) return 'ignored';
    const settings = this.deps.settings();
    if (settings === undefined) return 'ignored';
    let fd: number;
    try {
      fd = this.deps.netns.openNetnsFd(path);
    } catch {
      return 'not-a-netns';
    }
    let id: string;
    try {
      id = this.deps.netns.namespaceId(fd);
    } catch {
      this.deps.netns.closeFd(fd);
      return 'not-a-netns';
    }
    if (this.entries.has(id) || this.served.get(path) === id || isOwnNetnsFd(fd)) {
      this.deps.netns.closeFd(fd);
      return 'ignored';
    }
    // Another namespace at this path: the one an entry was made for was unpinned (its removal event
    // read after the new pin), so its pair goes now rather than at its TTL.
    for (const e of this.entries.values()) if (e.path === path) this.drop(e, 'gone');
    if (
      this.making > 0 ||
      this.deps.busy?.() === true ||
      this.entries.size >= (this.deps.max ?? PREPARED_MAX)
    ) {
      this.deps.netns.closeFd(fd);
      this.deps.onOutcome?.('skipped');
      return 'ignored';
    }
    const entry: Entry = { id, path, fd, pair: Promise.resolve(undefined), timer: undefined };
    entry.pair = this.make(entry, settings);
    entry.timer = setTimeout(() => this.drop(entry, 'expired'), this.deps.ttlMs ?? PREPARED_TTL_MS);
    entry.timer.unref();
    this.entries.set(id, entry);
    return 'started';
  }

  /**
   * ADD into the namespace `nsFd` is open on (CNI_NETNS `path`): the pair prepared for it, once made,
   * if its sysctls suit the lease (written for a pod with IPv6 or without: `ipv6`); undefined when
   * there is none, making it failed, or it does not suit (then it is deleted). The caller owns it from
   * here (and deletes it if ADD fails).
   */
  async take(nsFd: number, path: string, ipv6: boolean, mtu: number): Promise<PreparedPair | undefined> {
    let id: string;
    try {
      id = this.deps.netns.namespaceId(nsFd);
    } catch {
      return undefined;
    }
    this.served.delete(path); // set again, last: the oldest goes first
    this.served.set(path, id);
    if (this.served.size > SERVED_REMEMBERED) this.served.delete(this.served.keys().next().value!);
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    this.forget(entry);
    const pair = await entry.pair;
    this.deps.netns.closeFd(entry.fd);
    if (pair === undefined) return undefined;
    // Made below 1280 without IPv6, its links have no IPv6 state: raised to the ADD's MTU, the kernel
    // would make it with the node's defaults (IPv6 on, router advertisements heard).
    const regainsIpv6 = !pair.ipv6 && pair.mtu < IPV6_MIN_MTU && mtu >= IPV6_MIN_MTU;
    if (pair.ipv6 !== ipv6 || regainsIpv6) {
      this.deps.onOutcome?.('unsuitable');
      pair.pod.close();
      this.delete(pair.host);
      return undefined;
    }
    this.deps.onOutcome?.('used');
    return pair;
  }

  /** Resolves once every waiting pair has been made (or failed to be). */
  async settled(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.pair));
  }

  /** The namespace file at `path` went (the runtime removed the pod): its pair goes too. */
  discard(path: string): void {
    for (const entry of this.entries.values()) if (entry.path === path) this.drop(entry, 'gone');
    this.served.delete(path);
  }

  /** Deletes every waiting pair and prepares no more; resolves when their deletions are scheduled. */
  async stop(): Promise<void> {
    this.stopped = true;
    const entries = [...this.entries.values()];
    for (const entry of entries) this.drop(entry, 'gone');
    await Promise.all(entries.map((e) => e.pair));
  }

  private forget(entry: Entry): void {
    clearTimeout(entry.timer);
    this.entries.delete(entry.id);
  }

  private drop(entry: Entry, outcome: 'expired' | 'gone'): void {
    if (this.entries.get(entry.id) !== entry) return;
    this.forget(entry);
    void entry.pair.then((pair) => {
      this.deps.netns.closeFd(entry.fd);
      if (pair === undefined) return;
      this.deps.onOutcome?.(outcome);
      this.deps.log.debug({ netns: entry.path, link: pair.host.name, outcome }, 'prepared veth pair deleted');
      pair.pod.close();
      this.delete(pair.host);
    });
  }

  private delete(host: LinkInfo): void {
    // By index, and only while it still has its temporary name: never a link ADD has renamed.
    this.deps.deleter.schedule(host.name, () =>
      deleteLinkIfNamedInBackground(this.deps.host, host.index, host.name),
    );
  }

  private async make(
    entry: Entry,
    settings: { mtu: number; ipv6: boolean },
  ): Promise<PreparedPair | undefined> {
    const name = `${PREPARED_PREFIX}${randomBytes(6).toString('hex').slice(0, 11)}`;
    let host: LinkInfo | undefined;
    let pod: PodNetlink | undefined;
    this.making++;
    try {
      const created = await this.deps.host.createVeth({
        name,
        mtu: settings.mtu,
        mac: randomMac(),
        peerName: name,
        peerNetnsFd: entry.fd,
        peerMtu: settings.mtu,
        peerMac: randomMac(), // ADD gives the pod end the attachment's own (mac.ts podMac)
      });
      host = created ?? (await this.deps.host.getLink(name));
      if (host === undefined) throw new Error(`link ${name} is missing right after its creation`);
      pod = this.deps.netns.openPodNetlink(entry.fd, entry.path);
      const podIndex = host.peerIndex ?? (await this.lookUpPodEnd(pod, entry.path, name));
      setVethSysctls(
        this.deps.netns,
        { fd: entry.fd, path: entry.path, name },
        name,
        settings.ipv6,
        settings.mtu,
      );
      return { host, podIndex, podName: name, mtu: settings.mtu, ipv6: settings.ipv6, pod };
    } catch (err) {
      pod?.close();
      this.deps.onOutcome?.('failed');
      this.deps.log.warn(
        { netns: entry.path, link: name, error: err instanceof Error ? err.message : String(err) },
        'preparing a veth pair failed; the ADD makes its own',
      );
      // Made but not reported (an error reading the kernel's answer): found by its name.
      const made = host ?? (await this.deps.host.getLink(name).catch(() => undefined));
      if (made !== undefined) this.delete(made);
      return undefined;
    } finally {
      this.making--;
    }
  }

  private async lookUpPodEnd(pod: PodNetlink, path: string, name: string): Promise<number> {
    const link = await pod.getLink(name);
    if (link === undefined) throw new Error(`the pod end ${name} is missing in ${path}`);
    return link.index;
  }
}
