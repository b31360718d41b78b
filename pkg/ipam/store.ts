import * as nodeFs from 'node:fs';
import { dirname, join } from 'node:path';
import { CniCode, CniError } from '../cni/errors.ts';
import { compareOrdinal } from '../compare.ts';
import { errorText } from '../error-text.ts';
import { canonicalIp, parseCidr } from '../ip/index.ts';
import { GroupSync } from './group-sync.ts';
import { ownerName, parseOwnerName } from './key.ts';
import { SpareFiles } from './spares.ts';
import { type Lease, type LeasedAddress, type LoadReport, META_FIELDS } from './types.ts';

/**
 * The durable IPAM state. On-disk layout under the state directory (directories 0700, files 0600):
 *
 *   leases/<containerId>@<ifname>.json   one lease per attachment, JSON (created + fsync + fsync(dir);
 *                                        rewritten as .<name>.tmp + fsync + rename + fsync(dir))
 *   addrs/<address>                      symlink -> "<containerId>@<ifname>": the reservation of one
 *                                        address (canonical text, e.g. addrs/fd00:10:244:1::5)
 *   last.json                            round-robin pointers {range: last address}, best effort
 *   spare/<name>                         empty files a new lease file is renamed from (spares.ts)
 *   quarantine/<file>.<ms>               lease files that could not be trusted at load,
 *   quarantine/<file>.<ms>.reason        why,
 *   quarantine/<file>.<ms>.held          and the addresses kept reserved for them, one a line
 *
 * Why two records: the symlink is created with symlink(2), which fails with EEXIST when the address
 * is taken, so even a bug in the in-memory state cannot hand an address out twice; and it survives a
 * lease file that is torn or corrupted later, so a quarantined lease keeps its addresses reserved.
 * A symlink's target is written with its directory entry in one metadata operation, so it needs no
 * fsync of its own: the fsync of the directory makes it durable (a file per address with its own
 * fsync measured ~0.5 ms more per address here).
 *
 * Ordering (what a crash at any point leaves, and what load makes of it):
 *   allocate: symlinks, lease file created + written + fsync, fsync dirs, THEN return. (The
 *     deferred form returns after the writes, with the three fsyncs running at once; its caller
 *     answers no one before they all resolve, so what was returned is durable all the same.)
 *     crash before the lease file exists: symlinks whose owner has no lease (freed: the lease was
 *     never returned). Crash while writing it: a torn lease file, quarantined with its addresses
 *     held (never handed out) until release(key). After its fsync: complete; a missing symlink is
 *     recreated from it.
 *   meta update of an existing lease: tmp + fsync + rename, so a returned lease is never torn.
 *   restore (a quarantined key back to a normal lease, ipam.ts): the missing symlinks, lease file
     created + written + fsync, fsync dirs, THEN its .held lists removed. A crash before the fsync
     leaves what one inside allocate does (the held addresses stay held either way); after it, a
     .held list next to a valid lease of the same key, which changes nothing (release drops both).
   release: the key's .held lists removed + fsync, unlink lease, unlink symlinks, fsync dirs. A
 *     crash in between leaves the lease, or symlinks whose owner has neither lease nor .held list:
 *     freed.
 *   hold (a running pod's addresses without a lease): .held list + fsync, THEN symlinks, fsync dirs.
 *     A crash before the first symlink holds nothing; one between two symlinks leaves the owner
 *     reserving part of its list, and load reserves the rest for it again.
 *   rewrite (the state directory removed under a running agent, from memory): directories, .held
 *     lists + fsync, every lease (tmp + rename) + fsync, THEN symlinks, fsync dirs. A crash midway
 *     leaves leases without symlinks (recreated from them at load), never a reservation without its
 *     lease; a quarantined record's addresses are held again only once their symlinks are back too
 *     (a crash before that frees them, as the directory's loss alone would have at a restart).
 * The symlink decides ownership: a lease naming an address whose symlink points elsewhere is stale
 * (quarantined), so an old record can never resurrect an address that was handed out again.
 */

/** The sync file system calls the store uses (node:fs by default; tests inject faults). */
export interface StoreFs {
  mkdirSync(path: string, mode: number): void;
  chmodSync(path: string, mode: number): void;
  openSync(path: string, flags: number, mode?: number): number;
  writeSync(fd: number, data: Uint8Array, offset: number): number;
  /** pwrite(2): data from `offset`, at file position `position`. */
  writePositionSync(fd: number, data: Uint8Array, offset: number, position: number): number;
  ftruncateSync(fd: number, length: number): void;
  fsyncSync(fd: number): void;
  /** fsync(2) on libuv's thread pool: the agent's one JS thread keeps serving while the disk works. */
  fsync(fd: number): Promise<void>;
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
  symlinkSync(target: string, path: string): void;
  readlinkSync(path: string): string;
  readdirSync(path: string): string[];
  readFileSync(path: string): Uint8Array;
  isSymlink(path: string): boolean;
  /** Whether the path itself (lstat) is a regular file; optional: without it, only links are told. */
  isRegularFile?(path: string): boolean;
  /** The permission bits of a path (lstat). */
  modeOf(path: string): number;
  /**
   * What changes whenever an entry is added to, removed from or renamed in a directory (its inode,
   * mtime and ctime, lstat); optional: without it, records are scanned at every check.
   */
  stampOf?(path: string): string;
  /** An empty file (O_CREAT|O_EXCL, 0600) created on the thread pool (spares.ts); optional. */
  createEmpty?(path: string): Promise<void>;
}

export const realFs: StoreFs = {
  mkdirSync: (path, mode) => {
    nodeFs.mkdirSync(path, { recursive: true, mode });
  },
  chmodSync: (path, mode) => nodeFs.chmodSync(path, mode),
  openSync: (path, flags, mode) => nodeFs.openSync(path, flags, mode),
  writeSync: (fd, data, offset) => nodeFs.writeSync(fd, data, offset),
  writePositionSync: (fd, data, offset, position) =>
    nodeFs.writeSync(fd, data, offset, data.length - offset, position),
  ftruncateSync: (fd, length) => nodeFs.ftruncateSync(fd, length),
  fsyncSync: (fd) => nodeFs.fsyncSync(fd),
  fsync: (fd) =>
    new Promise<void>((resolve, reject) =>
      nodeFs.fsync(fd, (err) => (err === null ? resolve() : reject(err))),
    ),
  closeSync: (fd) => nodeFs.closeSync(fd),
  renameSync: (from, to) => nodeFs.renameSync(from, to),
  unlinkSync: (path) => nodeFs.unlinkSync(path),
  symlinkSync: (target, path) => nodeFs.symlinkSync(target, path),
  readlinkSync: (path) => nodeFs.readlinkSync(path, 'utf8'),
  readdirSync: (path) => nodeFs.readdirSync(path),
  readFileSync: (path) => nodeFs.readFileSync(path),
  isSymlink: (path) => nodeFs.lstatSync(path).isSymbolicLink(),
  isRegularFile: (path) => nodeFs.lstatSync(path).isFile(),
  modeOf: (path) => nodeFs.lstatSync(path).mode & 0o7777,
  stampOf: (path) => {
    const s = nodeFs.lstatSync(path, { bigint: true });
    return `${s.ino}:${s.mtimeNs}:${s.ctimeNs}`;
  },
  createEmpty: (path) =>
    new Promise<void>((resolve, reject) =>
      nodeFs.open(path, 'wx', FILE_MODE, (err, fd) => {
        if (err !== null) return reject(err);
        nodeFs.close(fd, (closeErr) => (closeErr === null ? resolve() : reject(closeErr)));
      }),
    ),
};

const { O_WRONLY, O_CREAT, O_TRUNC, O_RDONLY, O_DIRECTORY } = nodeFs.constants;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const RECORD_VERSION = 1;

/** Read errors that are the record's (its sector, its permissions, what it is): it is quarantined. */
const UNREADABLE_RECORD = ['EIO', 'EACCES', 'EPERM', 'EISDIR', 'ELOOP', 'ENXIO', 'EINVAL'];
const LEASE_SUFFIX = '.json';
const TMP_SUFFIX = '.tmp';
const HELD_SUFFIX = '.held';
const HELD = /^(.+)\.json\.\d+(-\d+)?\.held$/;
const RECORD = /^(.+)\.json\.\d+(-\d+)?$/;
/** A record's .reason, a record or a .held list: the owner it is of. */
const QUARANTINED = /^(.+)\.json\.\d+(-\d+)?(\.held|\.reason)?$/;

function quarantineOwner(name: string): string | undefined {
  const owner = QUARANTINED.exec(name)?.[1];
  return owner !== undefined && parseOwnerName(owner) !== undefined ? owner : undefined;
}
const MAX_RECORD_HINT = 64 * 1024;

/** What load found and repaired; the facade builds its indexes from it. */
export interface LoadedState {
  /** Valid leases by owner name. */
  leases: Map<string, Lease>;
  /** Every reservation on disk: canonical address -> owner name ('' when unreadable). */
  reservations: Map<string, string>;
  /** Addresses still reserved for quarantined leases, by owner: they stay until release(owner). */
  held: Map<string, Set<string>>;
  /** Round-robin pointers: range -> last allocated address. */
  last: Map<string, string>;
  report: LoadReport;
}

function setOf<K, V>(map: Map<K, Set<V>>, key: K): Set<V> {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  return set;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'EUNKNOWN';
}

export class LeaseStore {
  readonly dir: string;
  readonly #fs: StoreFs;
  readonly #leases: string;
  readonly #addrs: string;
  readonly #quarantine: string;
  readonly #spareDir: string;
  readonly spares: SpareFiles;
  /** fsyncs of leases/ and addrs/ for new leases, shared by concurrent allocations (group-sync.ts). */
  readonly #dirSyncs: readonly GroupSync[];
  /**
   * The directories the store fsyncs, each open (read-only) for the store's life once first synced:
   * an open and a close per fsync cost an ADD ~0.05 ms. Read-only fds do not keep the file system
   * from being remounted read-only.
   */
  readonly #dirFds = new Map<string, number>();
  /** Directory fds with fsyncs on the thread pool, how many each: closed only once those are done. */
  readonly #syncsOn = new Map<number, number>();
  /** Dropped fds that still had fsyncs in flight: the last one to finish closes it. */
  readonly #closeWhenDone = new Set<number>();
  /** Owners with files in quarantine/ (records, their .reason, .held lists), so release need not look. */
  readonly #quarantinedOwners = new Set<string>();
  /**
   * Records load could not move aside (LoadReport.leftInPlace): owner -> the addresses they hold. Such
   * a record is all that holds them on disk (a reload quarantines it again, keeping its owner's
   * reservations), so nothing may overwrite or remove it before a durable .held list has taken over
   * (secureLeftInPlace); a release, which frees them, may.
   */
  readonly #leftInPlace = new Map<string, string[]>();

  constructor(dir: string, fs: StoreFs = realFs) {
    this.dir = dir;
    this.#fs = fs;
    this.#leases = join(dir, 'leases');
    this.#addrs = join(dir, 'addrs');
    this.#quarantine = join(dir, 'quarantine');
    this.#spareDir = join(dir, 'spare');
    this.spares = new SpareFiles(this.#spareDir, fs);
    this.#dirSyncs = [this.#leases, this.#addrs].map((d) => new GroupSync(() => this.#fsyncDir(d)));
  }

  /** A typed error naming the directory, the operation and the errno. */
  fail(what: string, err: unknown): CniError {
    const detail = errorText(err);
    // Node's messages read "ENOSPC: no space left on device, open '...'": keep the middle part.
    const why = /^[A-Z]+: ([^,]+)/.exec(detail)?.[1];
    return new CniError(
      CniCode.IPAM_STORE_FAILED,
      `IPAM state directory ${this.dir}: ${what} failed: ${errnoOf(err)}${why ? ` (${why})` : ''}`,
      detail,
      { cause: err },
    );
  }

  #try<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof CniError) throw err;
      throw this.fail(what, err);
    }
  }

  /**
   * A repair load makes; false when the state directory takes no writes (EROFS), said in the report.
   * The agent must still start on a read-only state directory (ADD and DEL then fail with the error
   * that names it), and every repair here is one the next load makes as well.
   */
  #repair(report: LoadReport, what: string, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      const cause = err instanceof CniError ? err.cause : err;
      if (errnoOf(cause) !== 'EROFS') throw err instanceof CniError ? err : this.fail(what, err);
      report.readOnly = [...(report.readOnly ?? []), what];
      return false;
    }
  }

  /** Creates the layout if needed, then reads, checks and repairs the state (see the file comment). */
  load(): LoadedState {
    const fs = this.#fs;
    const report: LoadReport = { quarantined: [] };
    for (const d of [this.dir, this.#leases, this.#addrs, this.#quarantine]) {
      // Only when needed, and not at all on a state directory mounted read-only: it still loads (and
      // then fails on the first write with EROFS, which names the problem better than a chmod would).
      this.#repair(report, `creating ${d}`, () => {
        fs.mkdirSync(d, DIR_MODE);
        if (fs.modeOf(d) !== DIR_MODE) fs.chmodSync(d, DIR_MODE);
      });
    }
    let changed = false;

    // 1. Reservations: address -> owner ('' when the entry is not a readable symlink to an owner).
    const reservations = new Map<string, string>();
    const unowned: string[] = [];
    for (const name of this.#try('listing addrs/', () => fs.readdirSync(this.#addrs))) {
      const address = canonicalIp(name);
      if (address === undefined || address !== name) continue; // not ours to interpret
      const path = join(this.#addrs, name);
      let owner = '';
      try {
        if (fs.isSymlink(path)) owner = fs.readlinkSync(path);
      } catch (err) {
        throw this.fail(`reading addrs/${name}`, err);
      }
      const named = parseOwnerName(owner) !== undefined;
      reservations.set(address, named ? owner : '');
      if (!named) unowned.push(path);
    }
    if (unowned.length > 0) report.unowned = unowned;

    // 2. Addresses held for quarantined leases (the .held lists). An owner whose list cannot be read
    // keeps every address it reserves.
    const held = this.#readHeld((owner) => [...reservations].filter(([, o]) => o === owner).map(([a]) => a));

    // Quarantining keeps the owner's current reservations: the .held list is made durable BEFORE
    // the lease file leaves leases/, so no crash in between can turn them into orphans.
    const quarantine = (file: string, reason: string): void => {
      const owner = file.endsWith(LEASE_SUFFIX) ? file.slice(0, -LEASE_SUFFIX.length) : '';
      const keep = [...reservations].filter(([, o]) => o === owner && owner !== '').map(([a]) => a);
      // Named inside the try: an unreadable quarantine/ leaves the record in place like any failure.
      const written: string[] = [];
      try {
        const target = this.#quarantineName(file);
        const heldFile = join(this.#quarantine, `${target}${HELD_SUFFIX}`);
        const reasonFile = join(this.#quarantine, `${target}.reason`);
        written.push(heldFile, reasonFile);
        this.#try(`quarantining leases/${file}`, () => {
          if (keep.length > 0) {
            this.#writeFile(heldFile, `${keep.join('\n')}\n`, true);
            this.flush(true);
          }
          try {
            this.#writeFile(reasonFile, `${reason}\n`, false);
          } catch {
            this.#removeQuietly(reasonFile); // Only for a reader; the record moves without it.
          }
          fs.renameSync(join(this.#leases, file), join(this.#quarantine, target));
        });
        report.quarantined.push({ file: join(this.#leases, file), reason });
        if (owner !== '') this.#quarantinedOwners.add(owner);
      } catch (err) {
        // Left where it is, its addresses held in memory: an agent that cannot start cannot serve
        // the DELs that would free the disk. The next load tries again.
        for (const f of written) this.#removeQuietly(f);
        if (owner !== '' && keep.length > 0) this.#leftInPlace.set(owner, keep);
        report.quarantined.push({
          file: join(this.#leases, file),
          reason,
          leftInPlace: (err as Error).message,
        });
      }
      if (keep.length > 0) {
        const set = setOf(held, owner);
        for (const a of keep) set.add(a);
      }
      changed = true;
    };

    // 3. Lease files. A crash leaves at most a tmp file, which never held a returned lease.
    const leases = new Map<string, Lease>();
    for (const name of this.#try('listing leases/', () => fs.readdirSync(this.#leases)).sort()) {
      if (name.startsWith('.') && name.endsWith(TMP_SUFFIX)) {
        if (this.#repair(report, `removing leases/${name}`, () => fs.unlinkSync(join(this.#leases, name))))
          changed = true;
        continue;
      }
      const owner = name.endsWith(LEASE_SUFFIX) ? name.slice(0, -LEASE_SUFFIX.length) : '';
      if (parseOwnerName(owner) === undefined) {
        quarantine(name, 'file name is not <containerId>@<ifname>.json');
        continue;
      }
      let bytes: Uint8Array;
      const path = join(this.#leases, name);
      // Never read: a link or a node put there by hand may be a FIFO (a read that never ends) or a
      // device (one that never stops).
      const irregular = this.#irregular(path);
      if (irregular !== undefined) {
        quarantine(name, irregular);
        continue;
      }
      try {
        bytes = fs.readFileSync(path);
      } catch (err) {
        // One unreadable record (a bad sector, a permission set by hand) must not keep the agent
        // from starting: quarantined, its owner's reservations stay held, as for a torn one. Other
        // errors (out of descriptors or memory) say nothing about the record: load fails, as before.
        if (!UNREADABLE_RECORD.includes(errnoOf(err))) throw this.fail(`reading leases/${name}`, err);
        quarantine(
          name,
          errnoOf(err) === 'EISDIR' ? 'not a regular file' : `unreadable: ${(err as Error).message}`,
        );
        continue;
      }
      const parsed = parseLeaseRecord(owner, bytes);
      if (typeof parsed === 'string') quarantine(name, parsed);
      else leases.set(owner, parsed);
    }

    // 4. Leases against reservations: repair missing symlinks, quarantine stale leases. Oldest first,
    // so if two records ever claimed one address without a symlink the older one would keep it.
    const byAge = [...leases.values()].sort(
      (a, b) => compareOrdinal(a.createdAt, b.createdAt) || compareOrdinal(ownerName(a), ownerName(b)),
    );
    for (const lease of byAge) {
      const owner = ownerName(lease);
      const conflict = lease.addresses.find((a) => {
        const holder = reservations.get(a.address);
        return holder !== undefined && holder !== owner;
      });
      if (conflict !== undefined) {
        leases.delete(owner);
        const holder = reservations.get(conflict.address) || 'an unreadable reservation';
        quarantine(`${owner}${LEASE_SUFFIX}`, `address ${conflict.address} is reserved by ${holder}`);
        continue;
      }
      for (const a of lease.addresses) {
        if (reservations.has(a.address)) continue;
        // Taken either way: in memory when the symlink cannot be written (read-only).
        if (
          this.#repair(report, `restoring addrs/${a.address}`, () =>
            fs.symlinkSync(owner, join(this.#addrs, a.address)),
          )
        )
          changed = true;
        reservations.set(a.address, owner);
      }
    }

    // 5. A reservation that neither a lease nor a .held list accounts for was left by a crash
    // mid-allocate or mid-release: free it. One with an unreadable owner is kept (it may be in use).
    for (const [address, owner] of reservations) {
      if (owner === '' || held.get(owner)?.has(address)) continue;
      if (leases.get(owner)?.addresses.some((a) => a.address === address)) continue;
      // Kept taken when it cannot be freed (read-only): the next load frees it.
      if (!this.#repair(report, `freeing addrs/${address}`, () => this.unreserve(address))) continue;
      reservations.delete(address);
      changed = true;
    }
    // A .held list holds what its owner reserves. hold() makes the list durable before the symlinks,
    // one address at a time: an owner that reserves some of its list but not all crashed between
    // them, and the free rest (a pod's IPv6 address after its IPv4 one) is reserved again, or the pod
    // running on it would share it with the next ADD. An owner that reserves none never got to its
    // symlinks (or its hold failed): it holds nothing. An address another owner reserves stays theirs.
    for (const [owner, set] of held) {
      if (![...set].some((a) => reservations.get(a) === owner)) {
        held.delete(owner);
        continue;
      }
      for (const a of set) {
        const holder = reservations.get(a);
        if (holder === owner) continue;
        if (holder !== undefined) {
          set.delete(a);
          continue;
        }
        if (this.#repair(report, `restoring addrs/${a}`, () => fs.symlinkSync(owner, join(this.#addrs, a))))
          changed = true;
        reservations.set(a, owner);
      }
    }

    if (changed) this.flush(true);
    this.spares.load();
    return { leases, reservations, held, last: this.#readLast(), report };
  }

  /** Whether the directories are there: a state directory removed under a running agent is not. */
  layoutPresent(): boolean {
    for (const d of [this.#leases, this.#addrs, this.#quarantine]) {
      try {
        this.#fs.modeOf(d);
      } catch {
        return false;
      }
    }
    return true;
  }

  /**
   * Writes back a layout removed under a running agent (a cleanup's rm -rf of the state directory)
   * from what memory holds, so that a crash at any point leaves what load can use (the file comment's
   * Ordering): the directories (their entries fsynced up to the parent of the state directory), the
   * .held lists of quarantined owners, every lease (tmp + fsync + rename, as replaceLease: one left in
   * place may be read while it is rewritten) made durable, then every reservation whose owner is
   * known, and a flush. Without it every ADD failed until a restart,
   * and that restart found no lease for the pods still running. Throws on the first failure; the caller
   * runs it again until it completes.
   */
  rewrite(state: {
    leases: Iterable<Lease>;
    reservations: ReadonlyMap<string, string>;
    held: ReadonlyMap<string, ReadonlySet<string>>;
  }): void {
    const fs = this.#fs;
    // The directories kept open may be the removed ones: an fsync through them makes nothing durable.
    for (const [d, fd] of [...this.#dirFds]) this.#dropDirFd(d, fd);
    for (const d of [this.dir, this.#leases, this.#addrs, this.#quarantine]) {
      this.#try(`creating ${d}`, () => fs.mkdirSync(d, DIR_MODE));
    }
    for (const d of [dirname(this.dir), this.dir]) this.#syncDir(d);
    let heldWritten = false;
    for (const [owner, addresses] of state.held) {
      if (addresses.size === 0) continue;
      const name = `${this.#quarantineName(`${owner}${LEASE_SUFFIX}`)}${HELD_SUFFIX}`;
      this.#try(`writing quarantine/${name}`, () =>
        this.#writeFile(join(this.#quarantine, name), `${[...addresses].join('\n')}\n`, true),
      );
      this.#quarantinedOwners.add(owner);
      heldWritten = true;
    }
    if (heldWritten) this.#syncDir(this.#quarantine);
    this.#leftInPlace.clear(); // the directory was removed; every held address has its .held list now
    for (const lease of state.leases) this.replaceLease(lease);
    this.#syncDir(this.#leases); // every lease durable before any reservation it accounts for
    for (const [address, owner] of state.reservations) {
      if (owner === '') continue; // unreadable before: nothing says whose it is
      if (!this.reserve(address, owner)) continue; // still there, or put back meanwhile: load judges it
    }
    this.flush(true);
    this.spares.load();
  }

  /**
   * A .held list for an owner without any record (its lease file lost while the agent was down; the
   * kernel shows its pod running), written and made durable BEFORE its reservations are made: load
   * frees reservations nothing accounts for, and keeps held only what its owner still reserves, so a
   * crash between the two holds nothing.
   */
  writeHeld(owner: string, addresses: readonly string[]): void {
    const name = `${this.#quarantineName(`${owner}${LEASE_SUFFIX}`)}${HELD_SUFFIX}`;
    this.#try(`writing quarantine/${name}`, () =>
      this.#writeFile(join(this.#quarantine, name), `${addresses.join('\n')}\n`, true),
    );
    this.#quarantinedOwners.add(owner);
    this.#syncDir(this.#quarantine);
  }

  /**
   * Before a new lease file takes the place of a record load left in place (createLease renames a
   * spare over it, and removes it on failure), the addresses that record holds get a durable .held
   * list. Without it a reload would find a reservation nothing accounts for and free the address of
   * a pod that may still use it. Throws, the record untouched, when the list cannot be written.
   */
  secureLeftInPlace(owner: string): void {
    const keep = this.#leftInPlace.get(owner);
    if (keep === undefined) return;
    this.writeHeld(owner, keep);
    this.#leftInPlace.delete(owner);
  }

  /**
   * Why `path` is not to be read as a record (lstat): a symbolic link, or no regular file (a FIFO, a
   * device, a directory). Undefined when it is a regular file, or when that cannot be told (the read
   * then says why).
   */
  #irregular(path: string): string | undefined {
    try {
      if (this.#fs.isSymlink(path)) return 'a symbolic link, not a regular file';
      if (this.#fs.isRegularFile?.(path) === false) return 'not a regular file';
      return undefined;
    } catch {
      return undefined;
    }
  }

  #removeQuietly(path: string): void {
    try {
      this.#fs.unlinkSync(path);
    } catch {
      // Absent, or the disk refuses this too: the next load cleans up what it can read.
    }
  }

  /** owner -> addresses, from quarantine/<owner>.json.<ms>.held; notes every owner with files there. */
  #readHeld(reservedBy: (owner: string) => string[] = () => []): Map<string, Set<string>> {
    const held = new Map<string, Set<string>>();
    for (const name of this.#try('listing quarantine/', () => this.#fs.readdirSync(this.#quarantine))) {
      const owner = quarantineOwner(name);
      if (owner !== undefined) this.#quarantinedOwners.add(owner);
      const m = HELD.exec(name);
      if (m === null || parseOwnerName(m[1]!) === undefined) continue;
      const set = setOf(held, m[1]!);
      const path = join(this.#quarantine, name);
      let text: string;
      try {
        if (this.#irregular(path) !== undefined) throw new Error('not a regular file');
        text = Buffer.from(this.#fs.readFileSync(path)).toString();
      } catch {
        // What it held is not known: everything its owner reserves stays held.
        for (const a of reservedBy(m[1]!)) set.add(a);
        continue;
      }
      for (const line of text.split('\n')) {
        const a = canonicalIp(line.trim());
        if (a !== undefined) set.add(a);
      }
    }
    return held;
  }

  /**
   * Forgets the .held lists of an owner, durably: release removes its lease next, and a power loss
   * must never keep the lease's removal but undo this one (the list's addresses would stay held for
   * a key that has no lease).
   */
  dropHeld(owner: string): void {
    const names = this.#try('listing quarantine/', () => this.#fs.readdirSync(this.#quarantine));
    let removed = 0;
    for (const name of names) {
      const m = HELD.exec(name);
      if (m === null || m[1] !== owner) continue;
      this.#try(`removing quarantine/${name}`, () => this.#fs.unlinkSync(join(this.#quarantine, name)));
      removed++;
    }
    if (removed > 0) this.#syncDir(this.#quarantine);
  }

  /**
   * Removes what quarantine/ holds of an owner (its records and their reasons; its .held lists, which
   * dropHeld removes first and durably where it matters), once its attachment is released or its lease
   * restored: they were kept for diagnosis and as hints for the restore. Best effort: a file left
   * behind is removed the next time, or stays as a diagnosis. Synced when something went, as every
   * change a returned call made is; nothing to do (no readdir, no fsync) for most owners.
   */
  dropQuarantined(owner: string): void {
    if (!this.#quarantinedOwners.has(owner)) return;
    this.#quarantinedOwners.delete(owner);
    try {
      let removed = 0;
      for (const name of this.#fs.readdirSync(this.#quarantine)) {
        if (quarantineOwner(name) !== owner) continue;
        this.#removeQuietly(join(this.#quarantine, name));
        removed++;
      }
      if (removed > 0) this.#syncDir(this.#quarantine);
    } catch {
      // The records stay, as a diagnosis; they no longer hold anything.
    }
  }

  /**
   * The raw bytes of an owner's quarantined lease files, newest first (at most 64 KiB each). Untrusted
   * by definition: for diagnosis and for recovering hints the caller validates itself.
   */
  quarantinedRecords(owner: string): Uint8Array[] {
    const names = this.#try('listing quarantine/', () => this.#fs.readdirSync(this.#quarantine));
    const stamp = (name: string): number =>
      Number(name.slice(owner.length + LEASE_SUFFIX.length + 1).split('-')[0]);
    // Hints only: a record load quarantined because it was no regular file or could not be read is
    // skipped, never followed or read again (a link to a FIFO would block the agent for good).
    return names
      .filter((name) => RECORD.exec(name)?.[1] === owner)
      .sort((a, b) => stamp(b) - stamp(a) || compareOrdinal(b, a))
      .flatMap((name) => {
        const path = join(this.#quarantine, name);
        if (this.#irregular(path) !== undefined) return [];
        try {
          return [this.#fs.readFileSync(path).subarray(0, MAX_RECORD_HINT)];
        } catch {
          return [];
        }
      });
  }

  #quarantineName(file: string): string {
    const base = `${file.endsWith(LEASE_SUFFIX) ? file : `${file}${LEASE_SUFFIX}`}.${Date.now()}`;
    const taken = new Set(this.#try('listing quarantine/', () => this.#fs.readdirSync(this.#quarantine)));
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}-${i}`;
    return name;
  }

  /** The stamps of leases/ and addrs/ (StoreFs.stampOf), or undefined where the fs gives none. */
  recordsStamp(): string | undefined {
    const stampOf = this.#fs.stampOf;
    if (stampOf === undefined) return undefined;
    try {
      return `${stampOf(this.#leases)} ${stampOf(this.#addrs)}`;
    } catch {
      return undefined; // keepLayout writes them back; the scan then runs
    }
  }

  /** Whether `owner`'s lease file is there (lstat). */
  hasLease(owner: string): boolean {
    const name = `${owner}${LEASE_SUFFIX}`;
    return this.#present(`reading leases/${name}`, () => this.#fs.modeOf(join(this.#leases, name)));
  }

  /** The owner an address's reservation names (its link's target); undefined when there is none. */
  reservedBy(address: string): string | undefined {
    let owner: string | undefined;
    this.#present(`reading addrs/${address}`, () => {
      owner = String(this.#fs.readlinkSync(join(this.#addrs, address)));
    });
    return owner;
  }

  /** Whether `probe` finds its path: false on ENOENT, the store's typed error on any other failure. */
  #present(what: string, probe: () => unknown): boolean {
    try {
      probe();
      return true;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw this.fail(what, err);
    }
  }

  /** Reserves an address for an owner; false when it is already reserved (by anyone). */
  reserve(address: string, owner: string): boolean {
    try {
      this.#fs.symlinkSync(owner, join(this.#addrs, address));
      return true;
    } catch (err) {
      if (errnoOf(err) === 'EEXIST') return false;
      throw this.fail(`reserving ${address}`, err);
    }
  }

  /** Removes a reservation; a missing one is fine. */
  unreserve(address: string): void {
    try {
      this.#fs.unlinkSync(join(this.#addrs, address));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw this.fail(`releasing ${address}`, err);
    }
  }

  /**
   * Writes a new lease in place: created, written and fsynced at its final name. One journal commit
   * instead of the two of tmp + rename (measured ~1 ms less per allocation here). A crash before the
   * fsync returns can leave it torn; it was never returned then, and load quarantines it with its
   * addresses held until release(key), which the runtime sends for the failed ADD. Not durable
   * until flush(). On failure the file is removed (best effort).
   */
  createLease(lease: Lease): void {
    const fd = this.#createLeaseFile(lease, true);
    this.#try(`writing leases/${ownerName(lease)}${LEASE_SUFFIX}`, () => this.#fs.closeSync(fd));
  }

  /**
   * createLease without the fsyncs, which start at once on the thread pool: the lease file's (through
   * the fd that wrote it) and its two directories' (shared, see #dirSyncs). Resolves once the lease is
   * durable. Concurrent, not file first: the writes are all done before any fsync starts, and the
   * caller answers no one before all three finish, so the only new state a power loss can leave is
   * a directory entry made durable before the file's data: an empty or torn lease file, which load
   * quarantines with its addresses held, as it does for a crash inside createLease. (The file-first
   * order cost a wake-up of the JS thread between the two steps: the chain took 2.7 ms inside an
   * ADD, 0.75 ms alone; concurrent 0.57 ms alone, one journal commit.)
   */
  createLeaseDeferred(lease: Lease): Promise<void> {
    const name = `${ownerName(lease)}${LEASE_SUFFIX}`;
    const fd = this.#createLeaseFile(lease, false);
    return Promise.all([
      this.#fsyncAndClose(fd, `syncing leases/${name}`),
      ...this.#dirSyncs.map((d) => d.request()),
    ]).then(() => undefined);
  }

  /** Creates and writes a lease file (fsynced when `sync`); returns its open fd. */
  #createLeaseFile(lease: Lease, sync: boolean): number {
    const name = `${ownerName(lease)}${LEASE_SUFFIX}`;
    const path = join(this.#leases, name);
    this.secureLeftInPlace(ownerName(lease)); // outside the try: its failure must not unlink the record
    try {
      // An empty spare renamed into place is what open(O_CREAT) would leave, minus the slow inode
      // allocation (spares.ts). Opened without O_TRUNC: it is empty, and truncating an empty file
      // makes ext4 (auto_da_alloc) start writing it back inside close() (~0.07 ms here).
      const claimed = this.spares.claim(path);
      return this.#writeFileKeepOpen(path, this.#render(lease), sync, !claimed);
    } catch (err) {
      try {
        this.#fs.unlinkSync(path);
      } catch {
        // Best effort: a torn leftover is quarantined at load, its addresses held, never reused.
      }
      throw this.fail(`writing leases/${name}`, err);
    }
  }

  /** Rewrites an existing lease atomically (tmp + fsync + rename): a returned lease is never torn. */
  replaceLease(lease: Lease): void {
    const name = `${ownerName(lease)}${LEASE_SUFFIX}`;
    const tmp = join(this.#leases, `.${name}${TMP_SUFFIX}`);
    try {
      this.#writeFile(tmp, this.#render(lease), true);
      this.#fs.renameSync(tmp, join(this.#leases, name));
    } catch (err) {
      try {
        this.#fs.unlinkSync(tmp);
      } catch {
        // Best effort: load removes tmp files anyway.
      }
      throw this.fail(`writing leases/${name}`, err);
    }
  }

  #render(lease: Lease): string {
    return `${JSON.stringify({ version: RECORD_VERSION, ...lease }, null, 2)}\n`;
  }

  /**
   * Removes a lease file, or the record load left in place (a release frees what it held); a missing
   * one is fine. Not durable until flush().
   */
  deleteLease(owner: string): void {
    this.spares.scheduleTopUp();
    try {
      this.#fs.unlinkSync(join(this.#leases, `${owner}${LEASE_SUFFIX}`));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw this.fail(`removing leases/${owner}${LEASE_SUFFIX}`, err);
    }
    this.#leftInPlace.delete(owner);
  }

  /**
   * Persists the round-robin pointers in place, without rename or fsync: losing or tearing them only
   * changes which free address comes next (a torn file reads as "no pointers"), and rewriting the
   * same blocks costs next to nothing, unlike a new file per allocation.
   */
  putLast(last: ReadonlyMap<string, string>): void {
    // Opened per write, never kept: a file open for writing would keep an operator (or a test) from
    // remounting the state directory read-only.
    const fs = this.#fs;
    try {
      const data = Buffer.from(`${JSON.stringify(Object.fromEntries(last))}\n`);
      const fd = fs.openSync(join(this.dir, 'last.json'), O_WRONLY | O_CREAT, FILE_MODE);
      try {
        for (let off = 0; off < data.length; ) off += fs.writePositionSync(fd, data, off, off);
        fs.ftruncateSync(fd, data.length);
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      // Best effort by design.
    }
  }

  /** The fd kept open for a directory of the store (opened on first use). */
  #dirFd(d: string): number {
    let fd = this.#dirFds.get(d);
    if (fd === undefined) {
      fd = this.#try(`syncing ${d}`, () => this.#fs.openSync(d, O_RDONLY | O_DIRECTORY));
      this.#dirFds.set(d, fd);
    }
    return fd;
  }

  /**
   * Forgets a directory fd (it failed a sync, or rewrite found the directory removed), so the next
   * sync starts from a fresh open, and closes it. Only while it is still the one kept for `d`: a sync
   * on the thread pool may fail after a synchronous one on the same fd already dropped it, and closing
   * the number again could close whatever file or socket the kernel has given it since.
   */
  #dropDirFd(d: string, fd: number): void {
    if (this.#dirFds.get(d) !== fd) return;
    this.#dirFds.delete(d);
    // An fsync still queued on the thread pool would otherwise run on the number after the kernel
    // gave it to another file (rewrite reopens the directories at once): EBADF, or the wrong file.
    if (this.#syncsOn.has(fd)) this.#closeWhenDone.add(fd);
    else this.#closeFd(fd);
  }

  #closeFd(fd: number): void {
    try {
      this.#fs.closeSync(fd);
    } catch {
      // already unusable
    }
  }

  /** fsync of a directory on the thread pool, through the fd kept open for it. */
  async #fsyncDir(d: string): Promise<void> {
    const fd = this.#dirFd(d);
    this.#syncsOn.set(fd, (this.#syncsOn.get(fd) ?? 0) + 1);
    try {
      await this.#fs.fsync(fd);
    } catch (err) {
      this.#dropDirFd(d, fd);
      throw err instanceof CniError ? err : this.fail(`syncing ${d}`, err);
    } finally {
      const left = this.#syncsOn.get(fd)! - 1;
      if (left > 0) this.#syncsOn.set(fd, left);
      else {
        this.#syncsOn.delete(fd);
        if (this.#closeWhenDone.delete(fd)) this.#closeFd(fd);
      }
    }
  }

  async #fsyncAndClose(fd: number, what: string): Promise<void> {
    try {
      await this.#fs.fsync(fd);
    } catch (err) {
      throw err instanceof CniError ? err : this.fail(what, err);
    } finally {
      this.#fs.closeSync(fd);
    }
  }

  /** Makes every change so far durable: fsync of the directories holding the entries. */
  flush(includeQuarantine = false): void {
    const dirs = includeQuarantine
      ? [this.#leases, this.#addrs, this.#quarantine]
      : [this.#leases, this.#addrs];
    for (const d of dirs) this.#syncDir(d);
  }

  /**
   * flush() of leases/ and addrs/ on the thread pool, shared with concurrent callers (#dirSyncs):
   * resolves once every change made before the call is durable. (quarantine/ is left out: the only
   * change there a release makes, dropHeld, is durable when it returns.)
   */
  flushDeferred(): Promise<void> {
    return Promise.all(this.#dirSyncs.map((d) => d.request())).then(() => undefined);
  }

  /** fsync of a directory on the JS thread, through the fd kept open for it. */
  #syncDir(d: string): void {
    const fd = this.#dirFd(d);
    this.#try(`syncing ${d}`, () => {
      try {
        this.#fs.fsyncSync(fd);
      } catch (err) {
        this.#dropDirFd(d, fd);
        throw err;
      }
    });
  }

  #readLast(): Map<string, string> {
    const last = new Map<string, string>();
    try {
      const raw: unknown = JSON.parse(
        Buffer.from(this.#fs.readFileSync(join(this.dir, 'last.json'))).toString(),
      );
      if (raw !== null && typeof raw === 'object') {
        for (const [range, address] of Object.entries(raw)) {
          if (typeof address === 'string') last.set(range, address);
        }
      }
    } catch {
      // Missing or torn: round-robin restarts at the start of each range.
    }
    return last;
  }

  #writeFile(path: string, text: string, sync: boolean): void {
    this.#fs.closeSync(this.#writeFileKeepOpen(path, text, sync, true));
  }

  /** Writes (and when `sync`, fsyncs) a file and returns its fd, still open; closed on failure. */
  #writeFileKeepOpen(path: string, text: string, sync: boolean, truncate: boolean): number {
    const fs = this.#fs;
    const data = Buffer.from(text);
    const fd = fs.openSync(path, O_WRONLY | O_CREAT | (truncate ? O_TRUNC : 0), FILE_MODE);
    try {
      for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off);
      if (sync) fs.fsyncSync(fd);
      return fd;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }
}

/** Parses and checks one lease file; a string says why it cannot be trusted. */
export function parseLeaseRecord(owner: string, bytes: Uint8Array): Lease | string {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return bytes.length === 0 ? 'empty file (torn write?)' : 'not valid JSON (torn or corrupt)';
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return 'not a JSON object';
  const r = raw as Record<string, unknown>;
  if (r.version !== RECORD_VERSION) return `unsupported record version ${JSON.stringify(r.version)}`;
  if (typeof r.containerId !== 'string' || typeof r.ifname !== 'string') return 'missing containerId/ifname';
  if (ownerName({ containerId: r.containerId, ifname: r.ifname }) !== owner) {
    return `record is for ${r.containerId}@${r.ifname}, not ${owner}`;
  }
  if (typeof r.createdAt !== 'string' || Number.isNaN(Date.parse(r.createdAt))) return 'bad createdAt';
  if (!Array.isArray(r.addresses) || r.addresses.length === 0) return 'no addresses';
  const addresses: LeasedAddress[] = [];
  for (const a of r.addresses as unknown[]) {
    const entry = (a ?? {}) as Record<string, unknown>;
    const { family, address, range } = entry;
    if ((family !== 4 && family !== 6) || typeof address !== 'string' || typeof range !== 'string') {
      return 'malformed address entry';
    }
    const canonical = canonicalIp(address);
    if (canonical !== address || (address.includes(':') ? 6 : 4) !== family) {
      return `bad address ${JSON.stringify(address)}`;
    }
    if (parseCidr(range) === undefined) return `bad range ${JSON.stringify(range)}`;
    addresses.push({ family, address, range });
  }
  const lease: Lease = { containerId: r.containerId, ifname: r.ifname, addresses, createdAt: r.createdAt };
  for (const f of META_FIELDS) {
    const v = r[f];
    if (v === undefined) continue;
    if (typeof v !== 'string') return `bad ${f}`;
    lease[f] = v;
  }
  if (r.mtu !== undefined) {
    if (!Number.isInteger(r.mtu) || (r.mtu as number) < 68 || (r.mtu as number) > 65535) return 'bad mtu';
    lease.mtu = r.mtu as number;
  }
  return lease;
}
