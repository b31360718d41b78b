import { type Cidr, cidrLast, cidrSize } from '../ip/index.ts';

interface Entry {
  network: bigint;
  owner: string;
}

interface Bucket {
  family: 4 | 6;
  prefixLen: number;
  entries: Entry[];
}

/**
 * Which node claims which pod CIDR, for the per-node step's overlap check: two CIDRs overlap when one
 * contains the other. Entries are kept sorted by network address per family and prefix length (a
 * cluster uses one or two pod CIDR sizes), so a check is a few binary searches instead of a bigint
 * comparison against every peer's CIDRs (~0.7 ms per Node event at 5,000 nodes).
 */
export class CidrIndex {
  /** `${family}/${prefixLen}` -> entries sorted by network. */
  readonly #byLength = new Map<string, Bucket>();

  add(owner: string, cidrs: readonly Cidr[]): void {
    for (let i = 0; i < cidrs.length; i++) {
      const c = cidrs[i]!;
      const bucket = this.#bucket(c);
      bucket.entries.splice(lowerBound(bucket.entries, c.network), 0, { network: c.network, owner });
    }
  }

  /**
   * Every owner's CIDRs at once, into an empty index (a full pass's): appended, then each bucket
   * sorted once. A sorted insert per CIDR moved half a bucket each time, 5,000 times at 5,000 nodes.
   */
  static of<T>(owned: ReadonlyMap<string, T>, cidrsOf: (value: T) => readonly Cidr[]): CidrIndex {
    const index = new CidrIndex();
    // forEach, not for…of: no iterator result and entry pair per owner without V8's optimizing tiers
    // (scripts/build.ts); the bucket kept while the length repeats, not looked up by a new key string.
    let bucket: Bucket | undefined;
    owned.forEach((value, owner) => {
      const cidrs = cidrsOf(value);
      for (let i = 0; i < cidrs.length; i++) {
        const c = cidrs[i]!;
        if (bucket === undefined || bucket.family !== c.family || bucket.prefixLen !== c.prefixLen)
          bucket = index.#bucket(c);
        bucket.entries.push({ network: c.network, owner });
      }
    });
    for (const { entries } of index.#byLength.values()) entries.sort(byNetwork);
    return index;
  }

  remove(owner: string, cidrs: readonly Cidr[]): void {
    for (const c of cidrs) {
      const bucket = this.#byLength.get(`${c.family}/${c.prefixLen}`);
      if (bucket === undefined) continue;
      const { entries } = bucket;
      for (
        let i = lowerBound(entries, c.network);
        i < entries.length && entries[i]!.network === c.network;
        i++
      ) {
        if (entries[i]!.owner !== owner) continue;
        entries.splice(i, 1);
        break;
      }
      if (entries.length === 0) this.#byLength.delete(`${c.family}/${c.prefixLen}`);
    }
  }

  /**
   * The first CIDR of another owner that overlaps one of `cidrs`, with the one it overlaps; only owners
   * `counts` accepts, when given.
   */
  firstOverlap(
    cidrs: readonly Cidr[],
    except: string,
    counts?: (owner: string) => boolean,
  ): { cidr: Cidr; other: string; otherCidr: Cidr } | undefined {
    for (const c of cidrs) {
      const start = c.network;
      const end = cidrLast(c);
      for (const { family, prefixLen, entries } of this.#byLength.values()) {
        if (family !== c.family) continue;
        // A shorter (or equal) prefix overlaps c only by containing it: its network is c's, truncated.
        // A longer one only by lying inside c: its network falls in c's range.
        const from =
          prefixLen <= c.prefixLen ? start - (start % cidrSize({ family, network: 0n, prefixLen })) : start;
        const to = prefixLen <= c.prefixLen ? from : end;
        for (let i = lowerBound(entries, from); i < entries.length && entries[i]!.network <= to; i++) {
          const e = entries[i]!;
          if (e.owner !== except && (counts === undefined || counts(e.owner)))
            return { cidr: c, other: e.owner, otherCidr: { family, network: e.network, prefixLen } };
        }
      }
    }
    return undefined;
  }

  #bucket(c: Cidr): Bucket {
    const key = `${c.family}/${c.prefixLen}`;
    let bucket = this.#byLength.get(key);
    if (bucket === undefined) {
      bucket = { family: c.family, prefixLen: c.prefixLen, entries: [] };
      this.#byLength.set(key, bucket);
    }
    return bucket;
  }
}

function byNetwork(a: Entry, b: Entry): number {
  return a.network < b.network ? -1 : a.network > b.network ? 1 : 0;
}

/** The first index whose network is >= value. */
function lowerBound(entries: readonly Entry[], value: bigint): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid]!.network < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
