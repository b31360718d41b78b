/**
 * One deadline shared by the waits of an agent's stop: each wait gets what is left of it, so they
 * cannot add up past the pod's terminationGracePeriodSeconds (the kubelet's SIGKILL then leaves no
 * "stopped" line and no clean-stop mark). What did not end in time is named for the warning.
 */
export class StopDeadline {
  readonly #end: number;
  readonly #now: () => number;
  readonly #unfinished: string[] = [];

  constructor(ms: number, now: () => number = () => performance.now()) {
    this.#now = now;
    this.#end = now() + ms;
  }

  /** Milliseconds left (0 once passed). */
  left(): number {
    return Math.max(0, this.#end - this.#now());
  }

  /** Waits for `work` at most what is left; named as still running when it outlasts that. */
  async within(what: string, work: Promise<unknown> | undefined): Promise<void> {
    if (work === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    const over = await Promise.race([
      work.then(
        () => false,
        () => false,
      ),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), this.left());
      }),
    ]);
    clearTimeout(timer);
    if (over) this.#unfinished.push(what);
  }

  /** Names something the caller waited for by other means and found still running. */
  stillRunning(what: string): void {
    this.#unfinished.push(what);
  }

  /** What did not end within its wait or the deadline, in the order waited for. */
  get unfinished(): readonly string[] {
    return this.#unfinished;
  }
}
