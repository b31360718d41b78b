import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import {
  type Cidr,
  cidrContains,
  type Family,
  familyName,
  formatCidr,
  formatIp,
  parseIp,
} from '../ip/index.ts';
import { chooseNext } from './allocator.ts';
import { keyProblem, ownerName, parseOwnerName, validateKey } from './key.ts';
import { isReserved, parseIpOrThrow, parseRange, usableBounds } from './range.ts';
import { LeaseStore, realFs, type StoreFs } from './store.ts';
import {
  type Lease,
  type LeasedAddress,
  type LeaseKey,
  type LeaseMeta,
  type LoadReport,
  META_FIELDS,
  type RangeUsage,
} from './types.ts';

export type { Lease, LeasedAddress, LeaseKey, LeaseMeta, LoadReport, RangeUsage } from './types.ts';

/** keepRecords scans every record at least this often, whatever the directories' stamps say. */
const RECORDS_RESCAN_MS = 60_000;

/** A lease whose records keepRecords wrote back: `missing` names them ('lease file', an address). */
export interface RecordRepair {
  lease: Lease;
  missing: string[];
}

/**
 * The facade the agent uses. Synchronous on purpose: the agent serializes IPAM calls, and sync fs
 * calls on tiny files are the fastest way to record an allocation (see store.ts); an async API would
 * add promise hops to every CNI ADD and invite interleaving that the store does not need. The
 * exceptions are allocateDeferred's and releaseDeferred's `durable`: only the fsyncs, which wait for
 * the disk, leave the JS thread, so the state in memory and on disk is decided before they return,
 * as with allocate and release.
 */
export interface Ipam {
  /** Idempotent per key: the same key returns the same lease (meta filled in where missing, `netns` updated). All families or nothing: on failure of one family nothing stays reserved. */
  allocate(key: LeaseKey, meta?: LeaseMeta): Lease;
  /**
   * allocate with the fsyncs still running when it returns: the caller sets up the pod meanwhile and
   * must await `durable` before it tells anyone about the lease. If `durable` rejects (typed
   * IPAM_STORE_FAILED), the lease may not survive a power loss: the caller fails and releases it.
   * The writes themselves are done, so a crash of the agent alone loses nothing either way.
   */
  allocateDeferred(key: LeaseKey, meta?: LeaseMeta): PendingLease;
  /**
   * Releasing an unknown key returns false and does not throw, unless its last release's fsyncs
   * failed: that retry syncs again, and throws while syncing fails.
   */
  release(key: LeaseKey): boolean;
  /**
   * release with the directory fsyncs still running when it returns (on libuv's thread pool, shared
   * with concurrent allocations'): the unlinks are done and the addresses free in memory, as after
   * release; the caller must await `durable` before it reports the release (DEL answers after it).
   * Throws where release throws, except for the fsyncs, which reject `durable` (IPAM_STORE_FAILED).
   */
  releaseDeferred(key: LeaseKey): PendingRelease;
  get(key: LeaseKey): Lease | undefined;
  /** Whether a lease holds the address (canonical text): a lookup, no copy. */
  isLeased(address: string): boolean;
  list(): Lease[];
  /**
   * Attachments whose lease record was quarantined while their addresses stay held (until
   * release(key)): their pods may still be running, so their interfaces must not be swept.
   */
  heldKeys(): LeaseKey[];
  /**
   * The addresses held for a key without a lease (heldKeys()), in range order; [] for any other key.
   * What its DEL frees; `range` is '' for an address outside the current ranges.
   */
  heldAddresses(key: LeaseKey): LeasedAddress[];
  /**
   * Turns a held attachment (heldKeys()) back into a normal lease with exactly `addresses` (what the
   * kernel shows its pod uses), so CHECK, re-ADD and DEL treat it like any other. Refused (typed
   * error, nothing changed) unless the key has no lease but held addresses, every held address is
   * among `addresses` (a restore never frees an address a pod may use), and each address is usable
   * in the current ranges (at most one per family) and either held for this key or free. Same
   * guarantees as allocate: reservations first, the lease file fsynced before it returns.
   */
  restore(key: LeaseKey, addresses: readonly string[], meta?: LeaseMeta): Lease;
  /**
   * Holds `addresses` for an attachment that has no record at all, as a quarantined one's are (never
   * handed out; heldKeys() names it; restore or release(key) ends it): its lease file was lost while
   * the agent was down and the kernel shows its pod still using them (datapath/gc.ts). Durable when
   * it returns. Refused (typed error, nothing changed) when the key has a lease or held addresses
   * already, or an address is not an IP or is reserved by anyone.
   */
  hold(key: LeaseKey, addresses: readonly string[]): void;
  /** The raw text of the attachment's quarantined lease files, newest first: untrusted hints. */
  quarantinedRecords(key: LeaseKey): string[];
  ranges(): string[];
  /**
   * Replaces the ranges (pod CIDR change); leases with any address outside the new ranges are released
   * and returned. When some could not be released, throws RangeChangeError, which still carries the
   * ones that were; calling again with the same ranges retries the rest.
   */
  setRanges(cidrs: string[]): Lease[];
  usage(): RangeUsage[];
  /**
   * Writes the state directory back from memory if it was removed under the agent (every change
   * does this first too); true when it did. Throws IPAM_STORE_FAILED when it cannot.
   */
  keepLayout(): boolean;
  /**
   * Writes back the records of leases held in memory whose lease file or address reservation was
   * removed under the agent (by hand, a cleanup of the wrong files): without them the next start
   * would find the pod without a lease. The lease file first, durable, then its reservations, as
   * allocate orders them. Returns what it wrote back; throws IPAM_STORE_FAILED when it cannot.
   */
  keepRecords(): RecordRepair[];
  /** Problems found at load (torn/corrupt records quarantined), for the agent to log. */
  readonly loadReport: LoadReport;
}

/** setRanges could not release every lease outside the new ranges; `released` are those it did. */
export class RangeChangeError extends CniError {
  readonly released: Lease[];
  constructor(released: Lease[], cause: unknown) {
    const err = toCniError(cause);
    super(err.code, `pod CIDR change: ${err.message}`, err.details, { cause });
    this.name = 'RangeChangeError';
    this.released = released;
  }
}

/** A lease whose record is written but maybe not yet durable (Ipam.allocateDeferred). */
export interface PendingLease {
  lease: Lease;
  durable: Promise<void>;
}

/** A release whose unlinks are done but maybe not yet durable (Ipam.releaseDeferred). */
export interface PendingRelease {
  /** What release would return: false for a key IPAM knew nothing of. */
  released: boolean;
  durable: Promise<void>;
}

/**
 * Opens (creating if needed) the state directory and loads it. Leases outside `ranges` are kept (the
 * agent may still have to tear their pods down): call setRanges(ranges) to release and get them.
 */
export function openIpam(opts: IpamOptions): Ipam {
  return openIpamWith(opts, realFs);
}

export interface IpamOptions {
  dir: string;
  ranges: string[];
  /**
   * The state directory was found removed under the agent and written back from memory (before the
   * change that found it): `leases` records were rewritten. For a log line; the change then goes on.
   */
  onRewritten?: (dir: string, leases: number) => void;
}

/** openIpam over another file system (tests inject faults and crashes through it). */
export function openIpamWith(opts: IpamOptions, fs: StoreFs): Ipam {
  const ranges = parseRanges(opts.ranges);
  const store = new LeaseStore(opts.dir, fs);
  return new StoreIpam(store, ranges, opts.onRewritten);
}

interface Range {
  readonly cidr: Cidr;
  readonly text: string;
}

/** Kubernetes gives at most one pod CIDR per family; one address per family per attachment. */
/**
 * Whether `address` is usable in one of `ranges`, not merely inside it: a range shrunk to a block of
 * the old one makes addresses handed out before its network (the node's VTEP address), gateway or
 * broadcast address. A lease's own `range` text is not compared: a widened range keeps its leases.
 */
export function usableIn(ranges: readonly Range[], address: string): boolean {
  const ip = parseIpOrThrow(address);
  return ranges.some((r) => cidrContains(r.cidr, ip) && !isReserved(r.cidr, ip.value));
}

export function parseRanges(cidrs: readonly string[]): Range[] {
  if (!Array.isArray(cidrs))
    throw new CniError(CniCode.INVALID_CONFIG, 'pod CIDRs must be a list of strings');
  const out: Range[] = [];
  for (const text of cidrs) {
    if (typeof text !== 'string') {
      throw new CniError(CniCode.INVALID_CONFIG, `invalid pod CIDR ${JSON.stringify(text)}: not a string`);
    }
    const cidr = parseRange(text);
    const dup = out.find((r) => r.cidr.family === cidr.family);
    if (dup !== undefined) {
      throw new CniError(
        CniCode.INVALID_CONFIG,
        `pod CIDRs ${JSON.stringify(cidrs)} have two ${familyName(cidr.family)} ranges (${dup.text}, ${formatCidr(cidr)}): at most one per family`,
      );
    }
    out.push({ cidr, text: formatCidr(cidr) });
  }
  return out;
}

/** A lease with its fields in a stable order (key, meta, addresses, createdAt) for readable files. */
function makeLease(key: LeaseKey, meta: LeaseMeta, addresses: LeasedAddress[], createdAt: string): Lease {
  const picked: LeaseMeta = {};
  for (const f of META_FIELDS) if (typeof meta[f] === 'string') picked[f] = meta[f];
  if (meta.mtu !== undefined) picked.mtu = meta.mtu;
  return { containerId: key.containerId, ifname: key.ifname, ...picked, addresses, createdAt };
}

function copyLease(lease: Lease): Lease {
  return { ...lease, addresses: lease.addresses.map((a) => ({ ...a })) };
}

/** Why restore (or hold) will not do what it was asked (nothing was changed). */
function refusal(owner: string, why: string, what = 'restore the lease of'): CniError {
  return new CniError(CniCode.INVALID_CONFIG, `cannot ${what} ${owner}: ${why}`);
}

class StoreIpam implements Ipam {
  readonly loadReport: LoadReport;
  readonly #store: LeaseStore;
  #ranges: Range[];
  /** owner name -> lease */
  readonly #leases: Map<string, Lease>;
  /** Every reservation known on disk: canonical address -> owner name ('' unknown). */
  readonly #reserved: Map<string, string>;
  /** Addresses still reserved for quarantined leases, by owner. */
  readonly #held: Map<string, Set<string>>;
  /**
   * Reservations whose unlink failed in a release that had already dropped their lease or .held list,
   * by owner: nothing else names them, so the owner's next release (the runtime retries a failed DEL)
   * tries them again rather than leave them taken until a restart's load frees them.
   */
  readonly #stranded = new Map<string, Set<string>>();
  /**
   * Owners whose release's directory fsyncs failed (the caller failed): the runtime retries the DEL,
   * which finds nothing left to release and must not report success before those unlinks are durable.
   * A later release's sync that succeeds makes them durable too, and clears them.
   */
  readonly #releaseNotDurable = new Set<string>();
  /** Per range text: the reserved addresses inside it (what the allocator must skip). */
  #used = new Map<string, Set<bigint>>();
  /** Per range text: the last address handed out (round-robin pointer). */
  readonly #last: Map<string, string>;

  readonly #onRewritten: ((dir: string, leases: number) => void) | undefined;
  /** A write-back of the state directory started and has not completed (keepLayout). */
  #rewriting = false;
  /** keepRecords: the directories' stamps at its last scan that found nothing, and when it ran. */
  #recordsStamp: string | undefined;
  #recordsScannedAt = Number.NEGATIVE_INFINITY;

  constructor(store: LeaseStore, ranges: Range[], onRewritten?: (dir: string, leases: number) => void) {
    const state = store.load();
    this.#store = store;
    this.#onRewritten = onRewritten;
    this.#ranges = ranges;
    this.#leases = state.leases;
    this.#reserved = state.reservations;
    this.#held = state.held;
    this.loadReport = state.report;
    this.#last = state.last;
    this.#rebuildUsed();
    this.#carryLast(false);
  }

  allocate(key: LeaseKey, meta: LeaseMeta = {}): Lease {
    return this.#allocate(key, meta, true).lease;
  }

  allocateDeferred(key: LeaseKey, meta: LeaseMeta = {}): PendingLease {
    return this.#allocate(key, meta, false);
  }

  /**
   * Before every change too: two lstat calls (microseconds). Without them a state directory removed
   * under the agent failed every ADD with 107 until a restart.
   */
  keepLayout(): boolean {
    // A rewrite that failed halfway made the directories already: it is not done until it completes.
    if (!this.#rewriting && this.#store.layoutPresent()) return false;
    this.#rewriting = true;
    this.#store.rewrite({ leases: this.#leases.values(), reservations: this.#reserved, held: this.#held });
    this.#rewriting = false;
    this.#store.putLast(this.#last);
    this.#onRewritten?.(this.#store.dir, this.#leases.size);
    return true;
  }

  keepRecords(): RecordRepair[] {
    this.keepLayout();
    const store = this.#store;
    // Nothing was removed since the last scan when the directories' stamps have not moved (read
    // before the scan, so a removal during it shows next time): the check costs two lstats, not
    // three calls per lease (~10 % of an idle agent's JS time at 100 pods). A scan a minute all the
    // same, for file systems whose timestamps are coarser than a removal right after the read.
    const stamp = store.recordsStamp();
    const now = performance.now();
    if (
      stamp !== undefined &&
      stamp === this.#recordsStamp &&
      now - this.#recordsScannedAt < RECORDS_RESCAN_MS
    ) {
      return [];
    }
    type Gap = { owner: string; lease: Lease; fileGone: boolean; unreserved: string[]; wrong: string[] };
    const gaps: Gap[] = [];
    for (const [owner, lease] of this.#leases) {
      const fileGone = !store.hasLease(owner);
      const unreserved: string[] = [];
      // A link naming another owner (an addrs/ restored from a backup): the next load would free the
      // running pod's address, so it is pointed back at the lease that holds it.
      const wrong: string[] = [];
      for (const { address } of lease.addresses) {
        const by = store.reservedBy(address);
        if (by === undefined) unreserved.push(address);
        else if (by !== owner) wrong.push(address);
      }
      if (fileGone || unreserved.length > 0 || wrong.length > 0)
        gaps.push({ owner, lease, fileGone, unreserved, wrong });
    }
    this.#recordsScannedAt = now;
    // After a write-back the stamps move: the next check scans again and finds nothing.
    this.#recordsStamp = gaps.length === 0 ? stamp : undefined;
    if (gaps.length === 0) return [];
    for (const g of gaps) if (g.fileGone) store.replaceLease(g.lease);
    store.flush(); // every lease durable before a reservation it accounts for
    for (const g of gaps) {
      for (const a of g.unreserved) store.reserve(a, g.owner);
      for (const a of g.wrong) {
        store.unreserve(a);
        store.reserve(a, g.owner);
      }
    }
    store.flush();
    return gaps.map((g) => ({
      lease: copyLease(g.lease),
      missing: [
        ...(g.fileGone ? ['lease file'] : []),
        ...g.unreserved,
        ...g.wrong.map((a) => `${a} (its reservation named another attachment)`),
      ],
    }));
  }

  #allocate(key: LeaseKey, meta: LeaseMeta, sync: boolean): PendingLease {
    validateKey(key);
    this.keepLayout();
    const owner = ownerName(key);
    const existing = this.#leases.get(owner);
    if (existing !== undefined) {
      return { lease: copyLease(this.#fillMeta(owner, existing, meta)), durable: Promise.resolve() };
    }
    if (this.#ranges.length === 0) {
      throw new CniError(CniCode.INVALID_CONFIG, 'no pod CIDR ranges are configured: cannot allocate');
    }
    const store = this.#store;
    store.secureLeftInPlace(owner); // before anything is reserved: a refusal leaves nothing to undo
    const reservedHere: string[] = [];
    const addresses: LeasedAddress[] = [];
    let written = false;
    try {
      for (const range of this.#ranges) {
        const used = this.#usedIn(range);
        for (;;) {
          const lastText = this.#last.get(range.text);
          const last = lastText === undefined ? undefined : parseIp(lastText)?.value;
          const value = chooseNext(range.cidr, used, last);
          const address = formatIp(range.cidr.family, value);
          if (store.reserve(address, owner)) {
            reservedHere.push(address);
            addresses.push({ family: range.cidr.family, address, range: range.text });
            break;
          }
          // Reserved on disk but not known here (left by a rollback that could not finish): skip it;
          // the next load sorts out who owns it.
          this.#addReserved(address, '');
        }
      }
      const lease = makeLease(key, meta, addresses, new Date().toISOString());
      written = true; // from here on a lease file may exist: the rollback removes it
      let durable = Promise.resolve();
      if (sync) {
        store.createLease(lease);
        store.flush();
      } else {
        durable = store.createLeaseDeferred(lease); // nothing below throws: it is always returned
      }
      for (const a of reservedHere) this.#addReserved(a, owner);
      this.#leases.set(owner, lease);
      for (const a of addresses) this.#last.set(a.range, a.address);
      store.putLast(this.#last);
      return { lease: copyLease(lease), durable };
    } catch (err) {
      this.#rollback(owner, reservedHere, written);
      throw err;
    }
  }

  /** Undoes a failed allocation on disk; what cannot be undone is left to the next load to free. */
  #rollback(owner: string, reserved: string[], written: boolean): void {
    if (!written && reserved.length === 0) return; // e.g. the first family was exhausted
    const store = this.#store;
    try {
      if (written) store.deleteLease(owner);
    } catch {
      // The lease file stays; in memory it does not exist, and a retry of the same key rewrites it.
    }
    for (const address of reserved) {
      try {
        store.unreserve(address);
      } catch {
        this.#addReserved(address, '');
      }
    }
    try {
      store.flush();
    } catch {
      // Nothing more to do: the error that got us here is what the caller needs to see.
    }
  }

  /**
   * A repeated ADD fills in what the record lacks. An ADD of the same attachment in another namespace
   * (a runtime reusing a container id after a lost DEL) moves it there, veth and all, so `netns`
   * follows: a record left naming the old one would fail every later ADD's idempotence check, and the
   * sweeps would judge the pod's liveness by a namespace it left. `netnsId` follows the namespace the
   * ADD opened: another one (also at the same path), or none known when the path moved.
   */
  #fillMeta(owner: string, lease: Lease, meta: LeaseMeta): Lease {
    const moved = typeof meta.netns === 'string' && lease.netns !== undefined && lease.netns !== meta.netns;
    const given = (f: (typeof META_FIELDS)[number]) =>
      f === 'netnsId'
        ? meta.netnsId !== lease.netnsId && (typeof meta.netnsId === 'string' || moved)
        : typeof meta[f] === 'string' && (lease[f] === undefined || (f === 'netns' && lease[f] !== meta[f]));
    const changed = META_FIELDS.filter(given);
    // The config's MTU follows a repeated ADD's, as the pod's veth does (ADD sets it on a pair it keeps).
    const mtuChanged = meta.mtu !== lease.mtu && (meta.mtu !== undefined || lease.mtu !== undefined);
    if (changed.length === 0 && !mtuChanged) return lease;
    const merged: LeaseMeta = { mtu: meta.mtu };
    for (const f of META_FIELDS) merged[f] = changed.includes(f) ? meta[f] : lease[f];
    const ordered = makeLease(lease, merged, lease.addresses, lease.createdAt);
    this.#store.replaceLease(ordered);
    this.#store.flush();
    this.#leases.set(owner, ordered);
    return ordered;
  }

  release(key: LeaseKey): boolean {
    const { found, failure } = this.#release(key);
    if (found || this.#releaseNotDurable.has(ownerName(key))) this.#flushRelease(ownerName(key));
    if (failure !== undefined) throw failure;
    return found;
  }

  releaseDeferred(key: LeaseKey): PendingRelease {
    const { found, failure } = this.#release(key);
    const owner = ownerName(key);
    if (failure !== undefined) {
      // The rare failed unlink keeps release's synchronous path: flush what was done, then throw.
      this.#flushRelease(owner);
      throw failure;
    }
    if (!found && !this.#releaseNotDurable.has(owner)) return { released: false, durable: Promise.resolve() };
    // Found, or a retry of a release whose fsyncs failed: answered once they are durable.
    const before = [...this.#releaseNotDurable];
    const durable = this.#store.flushDeferred().then(
      () => this.#synced(before, owner),
      (err: unknown) => {
        this.#releaseNotDurable.add(owner);
        throw err;
      },
    );
    return { released: found, durable };
  }

  /** release's fsyncs on the JS thread; a failure is remembered for the owner's retried release. */
  #flushRelease(owner: string): void {
    const before = [...this.#releaseNotDurable];
    try {
      this.#store.flush(true);
    } catch (err) {
      this.#releaseNotDurable.add(owner);
      throw err;
    }
    this.#synced(before, owner);
  }

  /** A release's sync succeeded: its owner's unlinks are durable, and every earlier failed one's. */
  #synced(before: readonly string[], owner: string): void {
    for (const o of before) this.#releaseNotDurable.delete(o);
    this.#releaseNotDurable.delete(owner);
  }

  /**
   * release without the directory fsyncs: in memory and on disk (unlinked, not yet durable) the key
   * is gone when it returns, except for an address whose unlink failed, which stays reserved (the
   * failure is returned). A failure to remove the lease file is thrown, with the lease kept.
   */
  #release(key: LeaseKey): { found: boolean; failure?: unknown } {
    if (keyProblem(key) !== undefined) return { found: false };
    this.keepLayout();
    const owner = ownerName(key);
    const lease = this.#leases.get(owner);
    const held = this.#held.get(owner);
    // A quarantined record of this attachment kept its addresses reserved: DEL is the moment they can
    // go. Its .held list goes before the lease (a restore that crashed after making the lease durable
    // leaves both): a crash after it leaves a valid lease, or reservations that nothing accounts for,
    // which the next load frees. Dropped after the lease, a crash in between kept an address held by
    // a key that no longer had a lease until the next DEL. A record load could not move aside
    // (LoadReport.leftInPlace) is still in leases/ and goes first: while it is there a reload holds
    // its addresses again. The key stays held in memory until its addresses are freed, so a DEL that
    // failed part-way (a lease file the disk would not remove) finds it again when retried.
    if (held !== undefined) {
      if (lease === undefined) this.#store.deleteLease(owner);
      this.#store.dropHeld(owner);
    }
    if (lease !== undefined) {
      const failure = this.#dropLease(owner, lease);
      if (failure !== undefined) return { found: true, failure };
    }
    if (held !== undefined) {
      this.#held.delete(owner);
      const failure = this.#unreserveAll(
        owner,
        [...held].filter((a) => this.#reserved.get(a) === owner),
      );
      if (failure !== undefined) return { found: true, failure };
    }
    const stranded = this.#stranded.get(owner);
    if (stranded !== undefined) {
      this.#stranded.delete(owner);
      const failure = this.#unreserveAll(
        owner,
        [...stranded].filter((a) => this.#reserved.get(a) === owner),
      );
      if (failure !== undefined) return { found: true, failure };
    }
    // The attachment is gone: so is what quarantine/ kept of it.
    this.#store.dropQuarantined(owner);
    return { found: lease !== undefined || held !== undefined || stranded !== undefined };
  }

  /**
   * Removes a lease's file (a failure is thrown, the lease kept) and its reservations (#unreserveAll),
   * not durable until a flush. Returns the first failed reservation's error.
   */
  #dropLease(owner: string, lease: Lease): unknown {
    this.#store.deleteLease(owner);
    this.#leases.delete(owner);
    const mine = lease.addresses.map((a) => a.address).filter((a) => this.#reserved.get(a) === owner);
    return this.#unreserveAll(owner, mine);
  }

  /**
   * Unlinks each of an owner's reservations and frees it in memory; one that fails stays reserved,
   * noted as stranded for the owner's next release. The first failure.
   */
  #unreserveAll(owner: string, addresses: string[]): unknown {
    let failure: unknown;
    for (const address of addresses) {
      try {
        this.#store.unreserve(address);
        this.#removeReserved(address);
      } catch (err) {
        failure ??= err;
        const set = this.#stranded.get(owner) ?? new Set<string>();
        set.add(address);
        this.#stranded.set(owner, set);
      }
    }
    return failure;
  }

  get(key: LeaseKey): Lease | undefined {
    if (keyProblem(key) !== undefined) return undefined;
    const lease = this.#leases.get(ownerName(key));
    return lease === undefined ? undefined : copyLease(lease);
  }

  isLeased(address: string): boolean {
    const owner = this.#reserved.get(address);
    return owner !== undefined && this.#leases.has(owner);
  }

  list(): Lease[] {
    return [...this.#leases.values()].map(copyLease);
  }

  heldKeys(): LeaseKey[] {
    return [...this.#held.keys()]
      .filter((owner) => !this.#leases.has(owner))
      .map(parseOwnerName)
      .filter((k): k is LeaseKey => k !== undefined);
  }

  heldAddresses(key: LeaseKey): LeasedAddress[] {
    if (keyProblem(key) !== undefined) return [];
    const owner = ownerName(key);
    const held = this.#held.get(owner);
    if (held === undefined || this.#leases.has(owner)) return [];
    const out: LeasedAddress[] = [];
    for (const text of held) {
      const ip = parseIp(text);
      if (ip === undefined) continue;
      out.push({
        family: ip.family,
        address: formatIp(ip.family, ip.value),
        range: this.#rangeOf(ip.family, ip.value)?.text ?? '',
      });
    }
    return this.#inRangeOrder(out);
  }

  restore(key: LeaseKey, addresses: readonly string[], meta: LeaseMeta = {}): Lease {
    validateKey(key);
    this.keepLayout();
    const owner = ownerName(key);
    const wanted = this.#restorable(owner, addresses);
    const store = this.#store;
    store.secureLeftInPlace(owner); // before the rollback below could remove the record it replaces
    const reservedHere: string[] = [];
    let written = false;
    let lease: Lease;
    try {
      for (const a of wanted) {
        if (this.#reserved.get(a.address) === owner) continue; // held for this key already
        if (!store.reserve(a.address, owner)) {
          this.#addReserved(a.address, ''); // on disk but unknown here: the next load sorts it out
          throw refusal(owner, `${a.address} is already reserved on disk`);
        }
        reservedHere.push(a.address);
      }
      lease = makeLease(key, meta, wanted, new Date().toISOString());
      written = true;
      store.createLease(lease);
      store.flush();
    } catch (err) {
      this.#rollback(owner, reservedHere, written);
      throw err;
    }
    for (const a of reservedHere) this.#addReserved(a, owner);
    this.#leases.set(owner, lease);
    try {
      // The lease accounts for the held addresses now; its .held lists are no longer needed. If they
      // cannot be removed they stay known in memory, and release(key) removes them with the lease.
      store.dropHeld(owner);
      store.flush(true);
      this.#held.delete(owner);
      store.dropQuarantined(owner); // The records were hints for this restore.
    } catch {
      // Harmless: a .held list next to a valid lease of the same key changes nothing at load.
    }
    return copyLease(lease);
  }

  hold(key: LeaseKey, addresses: readonly string[]): void {
    validateKey(key);
    this.keepLayout();
    const owner = ownerName(key);
    const refuse = (why: string) => refusal(owner, why, 'hold the addresses of');
    if (this.#leases.has(owner)) throw refuse('it has a lease');
    if (this.#held.has(owner)) throw refuse('IPAM holds addresses for it already');
    const wanted: string[] = [];
    for (const text of addresses) {
      const ip = parseIp(text);
      if (ip === undefined) throw refuse(`${JSON.stringify(text)} is not an IP address`);
      const address = formatIp(ip.family, ip.value);
      const holder = this.#reserved.get(address);
      if (holder !== undefined)
        throw refuse(`${address} is reserved by ${holder || 'an unreadable reservation'}`);
      if (!wanted.includes(address)) wanted.push(address);
    }
    if (wanted.length === 0) throw refuse('no addresses given');
    const store = this.#store;
    store.writeHeld(owner, wanted);
    const reservedHere: string[] = [];
    try {
      for (const address of wanted) {
        if (!store.reserve(address, owner)) {
          this.#addReserved(address, ''); // on disk but unknown here: the next load sorts it out
          throw refuse(`${address} is already reserved on disk`);
        }
        reservedHere.push(address);
      }
      store.flush();
    } catch (err) {
      this.#rollback(owner, reservedHere, false);
      try {
        store.dropHeld(owner);
      } catch {
        // A .held list whose addresses its owner does not reserve holds nothing at load.
      }
      throw err;
    }
    for (const address of wanted) this.#addReserved(address, owner);
    this.#held.set(owner, new Set(wanted));
  }

  quarantinedRecords(key: LeaseKey): string[] {
    if (keyProblem(key) !== undefined) return [];
    return this.#store.quarantinedRecords(ownerName(key)).map((b) => Buffer.from(b).toString('utf8'));
  }

  /** The checks of restore, before anything is written: the addresses in range order, or a refusal. */
  #restorable(owner: string, addresses: readonly string[]): LeasedAddress[] {
    if (this.#leases.has(owner)) throw refusal(owner, 'it has a lease already');
    const held = this.#held.get(owner);
    if (held === undefined)
      throw refusal(owner, 'IPAM holds no addresses for it (released, or never quarantined)');
    if (!Array.isArray(addresses) || addresses.length === 0) throw refusal(owner, 'no addresses given');
    const wanted: LeasedAddress[] = [];
    for (const text of addresses) {
      const ip = typeof text === 'string' ? parseIp(text) : undefined;
      if (ip === undefined) throw refusal(owner, `${JSON.stringify(text)} is not an IP address`);
      const address = formatIp(ip.family, ip.value);
      const range = this.#rangeOf(ip.family, ip.value);
      if (range === undefined) {
        throw refusal(owner, `${address} is outside the pod CIDRs [${this.ranges().join(', ')}]`);
      }
      if (isReserved(range.cidr, ip.value)) {
        throw refusal(owner, `${address} is not a usable address of ${range.text}`);
      }
      if (wanted.some((w) => w.family === ip.family)) {
        throw refusal(owner, `more than one ${familyName(ip.family)} address`);
      }
      const holder = this.#reserved.get(address);
      if (holder !== undefined && holder !== owner) {
        throw refusal(owner, `${address} is reserved by ${holder || 'an unreadable reservation'}`);
      }
      wanted.push({ family: ip.family, address, range: range.text });
    }
    const dropped = [...held].filter((a) => !wanted.some((w) => w.address === a));
    if (dropped.length > 0) {
      throw refusal(
        owner,
        `held address(es) ${dropped.join(', ')} would be dropped (the pod may still use them)`,
      );
    }
    return this.#inRangeOrder(wanted);
  }

  /** Sorted in place by the order of their ranges (an address outside every range last). */
  #inRangeOrder(addresses: LeasedAddress[]): LeasedAddress[] {
    const order = (a: LeasedAddress): number => {
      const i = this.#ranges.findIndex((r) => r.text === a.range);
      return i < 0 ? this.#ranges.length : i;
    };
    return addresses.sort((a, b) => order(a) - order(b));
  }

  ranges(): string[] {
    return this.#ranges.map((r) => r.text);
  }

  setRanges(cidrs: string[]): Lease[] {
    const next = parseRanges(cidrs);
    const inside = (a: LeasedAddress): boolean => usableIn(next, a.address);
    this.#ranges = next;
    this.#rebuildUsed();
    this.#carryLast(true);
    const released: Lease[] = [];
    // Every lease outside is tried, whatever fails before it: the caller must learn of each one that
    // went (its pod's veth and routes go too), and a failure leaves only that lease behind. It goes
    // as a DEL would take it: with what a quarantined record of the same key still held (a restore
    // that crashed after its lease was durable leaves both), whose attachment goes with the lease.
    // Kept, those addresses stayed on the .held list while their reservations went with the lease,
    // so another pod could be given an address the list said was held.
    let failure: unknown;
    for (const [owner, lease] of [...this.#leases]) {
      if (lease.addresses.every(inside)) continue;
      try {
        const dropped = this.#release(parseOwnerName(owner)!).failure; // not `failure ??= …`: that would skip the call
        this.#flushRelease(owner);
        failure ??= dropped;
      } catch (err) {
        failure ??= err;
      }
      if (!this.#leases.has(owner)) released.push(copyLease(lease));
    }
    if (failure !== undefined) throw new RangeChangeError(released, failure);
    return released;
  }

  /**
   * A range new since the last allocation (the node's pod CIDR widened or narrowed) goes on from the
   * last address handed out in an earlier range that lies inside it: without it the next pod
   * would get the first address, as likely as not one just freed, while other nodes and caches still
   * know it as another pod's. The highest such address, when several do. `prune`: pointers of ranges
   * gone are dropped (a pod CIDR change), not kept in last.json for ever.
   */
  #carryLast(prune: boolean): void {
    let changed = false;
    for (const range of this.#ranges) {
      if (this.#last.has(range.text)) continue;
      let best: { text: string; value: bigint } | undefined;
      for (const text of this.#last.values()) {
        const ip = parseIp(text);
        if (ip === undefined || !cidrContains(range.cidr, ip)) continue;
        if (best === undefined || ip.value > best.value) best = { text, value: ip.value };
      }
      if (best === undefined) continue;
      this.#last.set(range.text, best.text);
      changed = true;
    }
    if (prune) {
      const current = new Set(this.#ranges.map((r) => r.text));
      for (const key of [...this.#last.keys()]) {
        if (current.has(key)) continue;
        this.#last.delete(key);
        changed = true;
      }
    }
    if (changed) this.#store.putLast(this.#last);
  }

  usage(): RangeUsage[] {
    return this.#ranges.map((r) => {
      const { first, last, count } = usableBounds(r.cidr);
      let used = 0;
      for (const v of this.#usedIn(r)) if (v >= first && v <= last) used++;
      const capacity = count <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(count) : count;
      return { family: r.cidr.family, range: r.text, capacity, used };
    });
  }

  #usedIn(range: Range): Set<bigint> {
    let set = this.#used.get(range.text);
    if (set === undefined) {
      set = new Set();
      this.#used.set(range.text, set);
    }
    return set;
  }

  #rangeOf(family: Family, value: bigint): Range | undefined {
    return this.#ranges.find((r) => cidrContains(r.cidr, { family, value }));
  }

  #addReserved(address: string, owner: string): void {
    this.#reserved.set(address, owner);
    const ip = parseIpOrThrow(address);
    const range = this.#rangeOf(ip.family, ip.value);
    if (range !== undefined) this.#usedIn(range).add(ip.value);
  }

  #removeReserved(address: string): void {
    this.#reserved.delete(address);
    const ip = parseIpOrThrow(address);
    const range = this.#rangeOf(ip.family, ip.value);
    if (range !== undefined) this.#usedIn(range).delete(ip.value);
  }

  #rebuildUsed(): void {
    this.#used = new Map();
    for (const address of this.#reserved.keys()) {
      const ip = parseIpOrThrow(address);
      const range = this.#rangeOf(ip.family, ip.value);
      if (range !== undefined) this.#usedIn(range).add(ip.value);
    }
  }
}
