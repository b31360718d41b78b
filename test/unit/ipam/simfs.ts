import {
  constants,
  existsSync,
  lstatSync,
  readFileSync,
  readlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { realFs, type StoreFs } from '../../../pkg/ipam/store.ts';

/**
 * The real file system with a crash and power-loss simulator on top, for the property tests.
 *
 * - Crash: the N-th mutating call dies (a write first writes a prefix of its data: a torn write);
 *   every later call throws, so the Ipam instance is as good as a killed process.
 * - Power loss: what was not made durable is lost. Each directory-entry change (create, rename,
 *   unlink, symlink) is journaled until an fsync of its directory; file data until an fsync of the
 *   file. powerLoss() undoes an arbitrary subset of the un-synced entry changes (harsher than ext4,
 *   which keeps them in order; later changes to a path are only kept with the earlier ones) and
 *   truncates un-synced files at arbitrary lengths.
 * fsync itself does not reach the disk: durability is what this model says it is, which keeps
 * hundreds of runs fast.
 */
export class CrashError extends Error {
  constructor() {
    super('simulated crash');
    this.name = 'CrashError';
  }
}

interface Entry {
  paths: string[];
  dirs: Set<string>;
  undo: () => void;
}

type Saved = { link: string } | { data: Buffer } | undefined;

function save(path: string): Saved {
  try {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return { link: readlinkSync(path) };
    if (st.isFile()) return { data: readFileSync(path) };
  } catch {
    // absent
  }
  return undefined;
}

function restore(path: string, saved: Saved): void {
  if (saved === undefined) return;
  if ('link' in saved) realFs.symlinkSync(saved.link, path);
  else writeFileSync(path, saved.data, { mode: 0o600 });
}

function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // an undo of something already gone
  }
}

export class SimFs implements StoreFs {
  ops = 0;
  dead = false;
  #crashAt: number | undefined;
  #tear = 0;
  #journal: Entry[] = [];
  readonly #dirty = new Set<string>();
  readonly #fds = new Map<number, { path: string; dir: boolean }>();

  /** From now on, the `at`-th mutating call crashes; a crashing write leaves `tear` bytes. */
  arm(at: number, tear: number): void {
    this.ops = 0;
    this.#crashAt = at;
    this.#tear = tear;
  }

  /** Counts a mutating call; true when this is the one that crashes. */
  #step(): boolean {
    if (this.dead) throw new CrashError();
    this.ops++;
    if (this.#crashAt !== undefined && this.ops >= this.#crashAt) {
      this.dead = true;
      return true;
    }
    return false;
  }

  #die(): never {
    this.dead = true;
    throw new CrashError();
  }

  #alive(): void {
    if (this.dead) throw new CrashError();
  }

  #log(paths: string[], undo: () => void): void {
    this.#journal.push({ paths, dirs: new Set(paths.map((p) => dirname(p))), undo });
  }

  mkdirSync(path: string, mode: number): void {
    if (this.#step()) this.#die();
    realFs.mkdirSync(path, mode);
  }

  chmodSync(path: string, mode: number): void {
    if (this.#step()) this.#die();
    realFs.chmodSync(path, mode);
  }

  openSync(path: string, flags: number, mode?: number): number {
    if (this.#step()) this.#die();
    const existed = existsSync(path);
    const fd = realFs.openSync(path, flags, mode);
    const dir = (flags & constants.O_DIRECTORY) !== 0;
    this.#fds.set(fd, { path, dir });
    if (!existed && (flags & constants.O_CREAT) !== 0) this.#log([path], () => realFs.unlinkSync(path));
    if ((flags & constants.O_TRUNC) !== 0) this.#dirty.add(path);
    return fd;
  }

  #written(fd: number, n: number): number {
    const f = this.#fds.get(fd);
    if (f !== undefined && n > 0) this.#dirty.add(f.path);
    return n;
  }

  writeSync(fd: number, data: Uint8Array, offset: number): number {
    if (this.#step()) {
      const torn = Math.min(this.#tear, data.length - offset);
      if (torn > 0) realFs.writeSync(fd, data.subarray(0, offset + torn), offset);
      this.#written(fd, torn);
      this.#die();
    }
    return this.#written(fd, realFs.writeSync(fd, data, offset));
  }

  writePositionSync(fd: number, data: Uint8Array, offset: number, position: number): number {
    if (this.#step()) this.#die();
    return this.#written(fd, realFs.writePositionSync(fd, data, offset, position));
  }

  ftruncateSync(fd: number, length: number): void {
    if (this.#step()) this.#die();
    realFs.ftruncateSync(fd, length);
    this.#written(fd, 1);
  }

  fsyncSync(fd: number): void {
    if (this.#step()) this.#die();
    const f = this.#fds.get(fd);
    if (f === undefined) return;
    if (f.dir) {
      for (const e of this.#journal) e.dirs.delete(f.path);
      this.#journal = this.#journal.filter((e) => e.dirs.size > 0);
    } else {
      this.#dirty.delete(f.path);
    }
  }

  /** The same simulated fsync (and crash point), answered on a later tick like the thread pool's. */
  async fsync(fd: number): Promise<void> {
    await Promise.resolve();
    this.fsyncSync(fd);
  }

  closeSync(fd: number): void {
    // Always really closed (no fd leaks across hundreds of runs), and never the crash point.
    this.#fds.delete(fd);
    realFs.closeSync(fd);
  }

  renameSync(from: string, to: string): void {
    if (this.#step()) this.#die();
    const old = save(to);
    realFs.renameSync(from, to);
    if (this.#dirty.delete(from)) this.#dirty.add(to);
    this.#log([from, to], () => {
      realFs.renameSync(to, from);
      restore(to, old);
    });
  }

  unlinkSync(path: string): void {
    if (this.#step()) this.#die();
    const old = save(path);
    realFs.unlinkSync(path);
    this.#log([path], () => restore(path, old));
  }

  symlinkSync(target: string, path: string): void {
    if (this.#step()) this.#die();
    realFs.symlinkSync(target, path);
    this.#log([path], () => realFs.unlinkSync(path));
  }

  readlinkSync(path: string): string {
    this.#alive();
    return realFs.readlinkSync(path);
  }

  readdirSync(path: string): string[] {
    this.#alive();
    return realFs.readdirSync(path);
  }

  readFileSync(path: string): Uint8Array {
    this.#alive();
    return realFs.readFileSync(path);
  }

  modeOf(path: string): number {
    this.#alive();
    return realFs.modeOf(path);
  }

  isSymlink(path: string): boolean {
    this.#alive();
    return realFs.isSymlink(path);
  }

  /** Entry changes not durable yet, except those under `except` (paths ending with it). */
  unsynced(except: string): string[] {
    return this.#journal.flatMap((e) => e.paths).filter((p) => !p.endsWith(except));
  }

  /**
   * The power goes out: `undo(i)` decides for the i-th un-synced entry change (newest first) whether
   * it is lost; `tearAt(i)` how much of the i-th un-synced file survives.
   */
  powerLoss(undo: (i: number) => boolean, tearAt: (i: number) => number): void {
    const kept = new Set<string>();
    const journal = this.#journal.reverse();
    journal.forEach((e, i) => {
      if (e.paths.some((p) => kept.has(p)) || !undo(i)) {
        for (const p of e.paths) kept.add(p);
      } else {
        quietly(e.undo);
      }
    });
    [...this.#dirty].forEach((path, i) => {
      quietly(() => {
        const st = lstatSync(path);
        if (st.isFile()) truncateSync(path, Math.min(st.size, tearAt(i)));
      });
    });
    this.#journal = [];
    this.#dirty.clear();
  }
}
