/**
 * When an idle trim also unmaps the clean file pages (pkg/netns/clean-file-mappings.ts): after the
 * first burst, and after that only once the file-backed RSS has grown by `growthKb` since the last
 * unmap left it. A steady agent's passes and scrapes map the same few MB of code back in each minute
 * (~6.6 MB at 5,000 nodes), and unmapping them at every trim only churned (reading smaps ~10 ms, the
 * faults after it: ~0.1 % of a core; bench/HISTORY.md, session 68); code that runs rarely (an error
 * path, a relist) would otherwise stay mapped for the agent's life and the file-backed RSS creep back
 * to the ~50 MB it held before.
 */
export class FilePageUnmapPolicy {
  private readonly growthKb: number;
  /** File-backed RSS right after the last unmap; undefined until the first. */
  private baselineKb: number | undefined;

  constructor(growthKb: number) {
    this.growthKb = growthKb;
  }

  /** Whether to unmap now, the file-backed RSS being fileKb. */
  due(fileKb: number): boolean {
    return this.baselineKb === undefined || fileKb - this.baselineKb >= this.growthKb;
  }

  /** An unmap left the file-backed RSS at fileKb. */
  unmapped(fileKb: number): void {
    this.baselineKb = fileKb;
  }
}
