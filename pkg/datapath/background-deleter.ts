/**
 * Deleting a veth pair costs the kernel 15-33 ms. DEL takes it off the critical path safely: the
 * lease and the host routes are gone before DEL answers (the address is unreachable and reusable),
 * the link itself is deleted right after. An ADD that needs the same host name, or goes into the
 * namespace the pair's pod end is in, waits for it; a crash
 * before it ran leaves an orphan veth without a lease, which the start-up sweep and GC remove.
 */
/** When a failed deletion is tried again, after each failure in turn. */
const RETRY_DELAYS_MS = [1_000, 10_000, 60_000];

export class BackgroundDeleter {
  private readonly pending = new Map<string, Promise<void>>();
  /**
   * The pod namespace (the runtime's path) each pending pair's pod end is in, where known: until the
   * pair is gone that end still holds its interface name, addresses and the pod's default routes.
   */
  private readonly podNetns = new Map<string, string>();
  /** `retried`: it will be tried again (the last try says false). */
  private readonly onError: (name: string, error: unknown, retried: boolean) => void;
  private readonly retries = new Set<NodeJS.Timeout>();
  /** Names whose failed deletion waits for its retry, with how many such chains wait. */
  private readonly retrying = new Map<string, number>();
  /** For a name waiting for its retry: runs the retry now (an ADD into its pod end's namespace). */
  private readonly retryNow = new Map<string, () => void>();
  private stopped = false;

  constructor(onError: (name: string, error: unknown, retried: boolean) => void) {
    this.onError = onError;
  }

  /**
   * Runs `work` (a deletion) after any earlier one of `name`. A failed one is tried again after
   * RETRY_DELAYS_MS (the kernel refusing for a moment, ENOMEM or EBUSY): without it the veth stayed
   * until the next start-up sweep, on runtimes without CNI GC. `work` must check that the link is
   * still the one it was given (deleteLinkIfNamed: index and name), as a retry may find the name
   * taken by a new pod's.
   */
  schedule(name: string, work: () => Promise<void>, podNetns?: string, attempt = 0): void {
    const previous = this.pending.get(name) ?? Promise.resolve();
    const next = previous
      .then(work)
      .catch((error: unknown) => {
        const delay = this.stopped ? undefined : RETRY_DELAYS_MS[attempt];
        this.onError(name, error, delay !== undefined);
        if (delay === undefined) return;
        // Not pending meanwhile (an ADD needing the name must not wait up to a minute), but known:
        // GC does not start a second chain for it, and status still lists it in flight.
        this.retrying.set(name, (this.retrying.get(name) ?? 0) + 1);
        // `early`: run by an ADD (waitForNetns), not by the timer. It keeps its place in the
        // schedule: ADDs retried in a burst must not use up in milliseconds the waits meant to let a
        // passing EBUSY or ENOMEM clear, after which the pod end would stay until the next start.
        const fire = (early: boolean): void => {
          clearTimeout(retry);
          if (!this.retries.delete(retry)) return; // fired already, or dropped by drain
          if (this.retryNow.get(name) === now) this.retryNow.delete(name);
          const left = (this.retrying.get(name) ?? 1) - 1;
          if (left > 0) this.retrying.set(name, left);
          else this.retrying.delete(name);
          if (!this.stopped) this.schedule(name, work, podNetns, early ? attempt : attempt + 1);
        };
        const now = (): void => fire(true);
        const retry = setTimeout(() => fire(false), delay);
        retry.unref();
        this.retries.add(retry);
        this.retryNow.set(name, now);
      })
      .finally(() => {
        if (this.pending.get(name) !== next) return;
        this.pending.delete(name);
        // Kept while a retry waits: an ADD into that namespace runs it at once (waitForNetns).
        if (!this.retrying.has(name)) this.podNetns.delete(name);
      });
    this.pending.set(name, next);
    // Without one (a DEL repeated without CNI_NETNS), the namespace an earlier deletion of the name
    // knew stays: that pair's pod end may still be there, its retry waiting. It goes with the chain.
    if (podNetns !== undefined && podNetns !== '') this.podNetns.set(name, podNetns);
  }

  /** Resolves once no deletion of `name` is pending. */
  async wait(name: string): Promise<void> {
    await this.pending.get(name);
  }

  /**
   * Resolves once no pair with its pod end in `netns` is pending: a runtime that reuses a namespace
   * for a new container (cnitool, podman, Multus) must find the old pod end gone, not an `eth0` that
   * already exists or default routes that vanish with it.
   */
  async waitForNetns(netns: string): Promise<void> {
    if (this.podNetns.size === 0) return;
    const names = [...this.podNetns].filter(([, ns]) => ns === netns).map(([name]) => name);
    // A deletion waiting for its retry is tried now: its pod end is still in the way of this ADD.
    for (const name of names) this.retryNow.get(name)?.();
    await Promise.all(names.map((name) => this.pending.get(name)));
  }

  /** Scheduled, running, or waiting for a retry. */
  isPending(name: string): boolean {
    return this.pending.has(name) || this.retrying.has(name);
  }

  /** The names whose deletion is scheduled, running or to be retried (the operator's view: not orphans). */
  pendingNames(): string[] {
    return [...new Set([...this.pending.keys(), ...this.retrying.keys()])];
  }

  /** For shutdown: finish everything scheduled (retries not yet due are dropped: the sweep has them). */
  async drain(): Promise<void> {
    this.stopped = true;
    for (const t of this.retries) clearTimeout(t);
    this.retries.clear();
    this.retrying.clear();
    this.retryNow.clear();
    for (const name of [...this.podNetns.keys()]) if (!this.pending.has(name)) this.podNetns.delete(name);
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }
}
