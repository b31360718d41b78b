/**
 * Deleting a veth pair costs the kernel 15-33 ms. DEL takes it off the critical path safely: the
 * lease and the host routes are gone before DEL answers (the address is unreachable and reusable),
 * the link itself is deleted right after. An ADD that needs the same host name waits for it; a crash
 * before it ran leaves an orphan veth without a lease, which the start-up sweep and GC remove.
 */
export class BackgroundDeleter {
  private readonly pending = new Map<string, Promise<void>>();
  private readonly onError: (name: string, error: unknown) => void;

  constructor(onError: (name: string, error: unknown) => void) {
    this.onError = onError;
  }

  schedule(name: string, work: () => Promise<void>): void {
    const previous = this.pending.get(name) ?? Promise.resolve();
    const next = previous
      .then(work)
      .catch((error: unknown) => this.onError(name, error))
      .finally(() => {
        if (this.pending.get(name) === next) this.pending.delete(name);
      });
    this.pending.set(name, next);
  }

  /** Resolves once no deletion of `name` is pending. */
  async wait(name: string): Promise<void> {
    await this.pending.get(name);
  }

  isPending(name: string): boolean {
    return this.pending.has(name);
  }

  /** For shutdown: finish everything scheduled. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }
}
