/**
 * Parse results by text. A reconcile pass parses the same few thousand Node addresses, pod CIDRs and
 * kernel routes every time (5,000 nodes: ~40k parses per pass); the values are immutable, so they are
 * shared (frozen). `null` records a text that does not parse, so bad input is not re-parsed either.
 *
 * Two generations, so what churns ages out while what every pass reads stays: a lookup that finds a
 * text only in the previous generation moves it into the current one, and when the current one is
 * full it becomes the previous (the old previous is dropped). A text survives as long as it is read
 * again within GENERATION_SIZE insertions, and the cache never holds more than twice that.
 * A single map dropped at 200,000 entries grew by one entry per pod lifecycle (each new IPv6 address
 * of a pod, round-robin in a /64, is a new text): `bench/soak.ts`, 30,000 pod lifecycles, agent RSS
 * 65 -> 79 MiB and rising, ~160 bytes an entry (key, frozen result, bigint, table slot), i.e. up to
 * ~32 MB per cache before the drop.
 */

/**
 * 16,384 texts: more than a pass at 5,000 dual-stack nodes reads in a cache (its node addresses, or
 * its pod CIDRs), so such a pass never parses a text twice; at most ~5 MB per cache. Beyond ~8,000
 * dual-stack nodes a pass re-parses some texts (microseconds each), it never grows the cache.
 */
export const GENERATION_SIZE = 16_384;

export class ParseCache<T extends object> {
  readonly #generationSize: number;
  #current = new Map<string, T | null>();
  #previous = new Map<string, T | null>();

  constructor(generationSize = GENERATION_SIZE) {
    this.#generationSize = generationSize;
  }

  /** The cached result (null: the text does not parse); undefined when the text is not cached. */
  get(key: string): T | null | undefined {
    const hit = this.#current.get(key);
    if (hit !== undefined) return hit;
    const old = this.#previous.get(key);
    if (old !== undefined) this.#put(key, old);
    return old;
  }

  /** Caches a parse result (frozen; undefined is recorded as "does not parse") and returns it. */
  remember(key: string, value: T | undefined): T | undefined {
    this.#put(key, value === undefined ? null : Object.freeze(value));
    return value;
  }

  /** Entries held, both generations (a text promoted from the previous one counts twice). */
  get size(): number {
    return this.#current.size + this.#previous.size;
  }

  #put(key: string, value: T | null): void {
    if (this.#current.size >= this.#generationSize) {
      this.#previous = this.#current;
      this.#current = new Map();
    }
    this.#current.set(key, value);
  }
}
