import { join } from 'node:path';

/**
 * Empty files made ahead of time, which a new lease file is renamed from instead of created.
 *
 * Why: creating a file allocates an inode, and ext4 skips every free inode of the directory's block
 * group that was deleted in the last 5 s (300 s while its inode table block is dirty) with a buffer
 * cache lookup each (find_inode_bit, recently_deleted). Where files come and go (pod churn; on this
 * test machine the /tmp the agent's state dir sits in) one creation took 0.25-1 ms on the JS thread,
 * in every ADD; rename + open of a spare took ~0.04 ms. The spares are made on the thread pool
 * while IPAM is quiet, so the slow allocation happens off every ADD's path.
 *
 * Crash safety: a spare is empty (created O_EXCL, never written). Renamed to leases/<name>.json it is
 * exactly what the open(O_CREAT) it replaces left there: an empty file at the lease's name before
 * the write. A crash mid top-up leaves an empty spare or nothing. load() only lists spare/, and an
 * agent that does not know the directory ignores it.
 */

/** How many spares to keep: one sequential round of the latency bench (50 pods) plus room. */
export const SPARE_TARGET = 64;
/** Top up once IPAM was idle this long, so the inode allocations stay off any ADD's path. */
export const SPARE_IDLE_MS = 50;

export interface SpareFs {
  mkdirSync(path: string, mode: number): void;
  readdirSync(path: string): string[];
  renameSync(from: string, to: string): void;
  /** Creates an empty file (O_CREAT|O_EXCL, mode 0600) off the JS thread; absent: no spares are made. */
  createEmpty?(path: string): Promise<void>;
}

export class SpareFiles {
  readonly #dir: string;
  readonly #fs: SpareFs;
  readonly #names: string[] = [];
  #counter = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #filling = false;

  constructor(dir: string, fs: SpareFs) {
    this.#dir = dir;
    this.#fs = fs;
  }

  get count(): number {
    return this.#names.length;
  }

  /**
   * Creates the directory (0700) if needed and reads the spares a previous run left. Best effort: a
   * read-only state directory still loads, and any failure only means there are no spares.
   */
  load(): void {
    try {
      this.#fs.mkdirSync(this.#dir, 0o700);
      this.#names.push(...this.#fs.readdirSync(this.#dir));
    } catch {
      // None: creating a lease falls back to creating its file.
    }
    this.scheduleTopUp();
  }

  /**
   * Renames a spare to `path` (replacing what is there, like O_TRUNC would) and returns true; false
   * when none is left or the rename failed, and the caller creates the file itself.
   */
  claim(path: string): boolean {
    this.scheduleTopUp();
    for (;;) {
      const name = this.#names.pop();
      if (name === undefined) return false;
      try {
        this.#fs.renameSync(join(this.#dir, name), path);
        return true;
      } catch {
        // Gone or not a file: try the next one.
      }
    }
  }

  /** (Re)starts the idle timer after which the spares are topped up to SPARE_TARGET. */
  scheduleTopUp(): void {
    if (this.#fs.createEmpty === undefined) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#topUp();
    }, SPARE_IDLE_MS);
    this.#timer.unref();
  }

  /** Resolves once SPARE_TARGET spares exist or a creation failed (tests; the timer otherwise). */
  async topUp(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#topUp();
  }

  async #topUp(): Promise<void> {
    const create = this.#fs.createEmpty;
    if (create === undefined || this.#filling) return;
    this.#filling = true;
    try {
      while (this.#names.length < SPARE_TARGET) {
        const name = `${Date.now().toString(36)}-${process.pid}-${this.#counter++}`;
        await create(join(this.#dir, name));
        this.#names.push(name);
      }
    } catch {
      // ENOSPC, EROFS...: the lease files are created directly until the next top-up works.
    } finally {
      this.#filling = false;
    }
  }
}
