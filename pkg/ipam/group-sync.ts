/**
 * fsync of one directory shared by every caller that asks while one is running (group commit).
 *
 * Why: each new lease needs its two directories (leases/, addrs/) fsynced after its entries were
 * made. Twenty concurrent ADDs asked for forty directory fsyncs, each a job on libuv's four-thread
 * pool, where the off-thread veth creations queue too (ffi-rs runs them there): the last pod's veth
 * waited behind the disk. An fsync that STARTS after a caller's change makes that change durable,
 * so callers arriving while one runs share the next one instead of queueing one each.
 */
export class GroupSync {
  readonly #sync: () => Promise<void>;
  /** The fsync running now, if any. */
  #running: Promise<void> | undefined;
  /** The one that starts when the running one ends, shared by everyone who asked meanwhile. */
  #next: Promise<void> | undefined;

  constructor(sync: () => Promise<void>) {
    this.#sync = sync;
  }

  /** Resolves once an fsync that started after this call has finished (rejects with its error). */
  request(): Promise<void> {
    if (this.#running === undefined) return this.#start();
    this.#next ??= this.#running.then(
      () => this.#start(),
      () => this.#start(),
    );
    return this.#next;
  }

  #start(): Promise<void> {
    this.#next = undefined;
    const run = this.#sync();
    this.#running = run;
    const clear = (): void => {
      if (this.#running === run) this.#running = undefined;
    };
    run.then(clear, clear);
    return run;
  }
}
