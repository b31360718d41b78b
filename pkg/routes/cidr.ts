/**
 * IP and CIDR arithmetic over bigints, for the route and masquerade planners. Strict parsing (Go's
 * net.ParseIP / ParseCIDR rules, which is what Kubernetes validated the Node fields with): dotted-quad IPv4
 * without leading zeros, RFC 4291 IPv6 with optional "::" and an embedded IPv4 tail, no zones. Formatting is
 * canonical (RFC 5952 for IPv6) so the same prefix always renders to the same text, whatever the kernel,
 * the API server or a config file wrote.
 */

import type { Family } from '../datapath/ports.ts';

export interface IpAddr {
  family: Family;
  value: bigint;
}

export interface CidrBlock {
  family: Family;
  /** The network address (host bits cleared when parsed leniently, guaranteed clear when strict). */
  network: bigint;
  prefixLen: number;
}

const BITS = { 4: 32, 6: 128 } as const;

export function familyBits(family: Family): number {
  return BITS[family];
}

/** Dotted quad, no leading zeros. A character loop on numbers, one bigint at the end: this runs for
 * every address of every node on every reconcile pass. */
function parseV4(s: string): bigint | undefined {
  let v = 0;
  let octet = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= s.length; i++) {
    const ch = i === s.length ? 46 : s.charCodeAt(i);
    if (ch === 46) {
      if (digits === 0 || octet > 255) return undefined;
      v = v * 256 + octet;
      parts++;
      octet = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57) {
      if (digits > 0 && octet === 0) return undefined; // a leading zero
      if (++digits > 3) return undefined;
      octet = octet * 10 + (ch - 48);
    } else {
      return undefined;
    }
  }
  return parts === 4 ? BigInt(v) : undefined;
}

function parseV6(s: string): bigint | undefined {
  if (s.includes('%')) return undefined;
  let tail: bigint | undefined;
  let text = s;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) >= 0) {
    tail = parseV4(s.slice(lastColon + 1));
    if (tail === undefined) return undefined;
    // Keep the colon(s) before the IPv4 tail; the tail stands for two groups.
    text = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const toGroups = (h: string): string[] | undefined => {
    if (h === '') return [];
    const g = h.split(':');
    return g.every((x) => /^[0-9a-fA-F]{1,4}$/.test(x)) ? g : undefined;
  };
  const head = toGroups(halves[0]!);
  const rest = halves.length === 2 ? toGroups(halves[1]!) : [];
  if (head === undefined || rest === undefined) return undefined;
  let groups: string[];
  if (halves.length === 2) {
    const missing = 8 - head.length - rest.length;
    if (missing < 1) return undefined;
    groups = [...head, ...Array<string>(missing).fill('0'), ...rest];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(Number.parseInt(g, 16));
  if (tail !== undefined) v = (v & ~0xffffffffn) | tail;
  return v;
}

/**
 * Parsed results by text. A reconcile pass parses the same few thousand Node addresses, pod CIDRs and
 * kernel routes every time (5,000 nodes: ~40k parses per pass); the values are immutable, so they are
 * shared (frozen) and the cache is simply dropped when it grows past a bound.
 */
const CACHE_MAX = 200_000;
const ipCache = new Map<string, IpAddr | null>();
const cidrCache = new Map<string, CidrBlock | null>();
const lenientCidrCache = new Map<string, CidrBlock | null>();

function remember<T extends object>(
  cache: Map<string, T | null>,
  key: string,
  value: T | undefined,
): T | undefined {
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(key, value === undefined ? null : Object.freeze(value));
  return value;
}

/** Parses an IPv4 or IPv6 address; undefined when the text is not exactly an address. */
export function parseIp(s: string): IpAddr | undefined {
  if (typeof s !== 'string') return undefined;
  const hit = ipCache.get(s);
  if (hit !== undefined) return hit ?? undefined;
  return remember(ipCache, s, parseIpUncached(s));
}

function parseIpUncached(s: string): IpAddr | undefined {
  if (s.length === 0 || s.length > 64) return undefined;
  if (s.includes(':')) {
    const value = parseV6(s);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(s);
  return value === undefined ? undefined : { family: 4, value };
}

export function formatIp(ip: IpAddr): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function computeMask(family: Family, prefixLen: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return prefixLen === 0 ? 0n : (all << (bits - BigInt(prefixLen))) & all;
}

// Precomputed: the planners call mask() for every CIDR comparison, and building the bigint each time
// dominated a 5,000-node pass.
const MASKS: Record<Family, readonly bigint[]> = {
  4: Array.from({ length: 33 }, (_, p) => computeMask(4, p)),
  6: Array.from({ length: 129 }, (_, p) => computeMask(6, p)),
};

function mask(family: Family, prefixLen: number): bigint {
  return MASKS[family][prefixLen] ?? computeMask(family, prefixLen);
}

/**
 * Parses "address/prefix". With `strict` (the default) the host bits must be zero: "10.0.0.5/24" is far
 * more likely a typo than a network, and silently masking it would route or exempt the wrong range.
 */
export function parseCidr(s: string, opts: { strict?: boolean } = {}): CidrBlock | undefined {
  if (typeof s !== 'string') return undefined;
  const cache = (opts.strict ?? true) ? cidrCache : lenientCidrCache;
  const hit = cache.get(s);
  if (hit !== undefined) return hit ?? undefined;
  return remember(cache, s, parseCidrUncached(s, opts));
}

function parseCidrUncached(s: string, opts: { strict?: boolean }): CidrBlock | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const prefix = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefix)) return undefined;
  const ip = parseIp(s.slice(0, slash));
  if (ip === undefined) return undefined;
  const prefixLen = Number(prefix);
  if (prefixLen > BITS[ip.family]) return undefined;
  const network = ip.value & mask(ip.family, prefixLen);
  if ((opts.strict ?? true) && network !== ip.value) return undefined;
  return { family: ip.family, network, prefixLen };
}

const cidrText = new WeakMap<CidrBlock, string>();

export function formatCidr(c: CidrBlock): string {
  let text = cidrText.get(c);
  if (text === undefined) {
    text = `${formatIp({ family: c.family, value: c.network })}/${c.prefixLen}`;
    // Only the shared (frozen, cached) blocks are worth remembering.
    if (Object.isFrozen(c)) cidrText.set(c, text);
  }
  return text;
}

/** Canonical text of a CIDR (strict), or undefined when invalid. */
export function canonicalCidr(s: string): string | undefined {
  const c = parseCidr(s);
  return c === undefined ? undefined : formatCidr(c);
}

/** Canonical text of an IP, or undefined when invalid. */
const ipText = new WeakMap<IpAddr, string>();

export function canonicalIp(s: string): string | undefined {
  const ip = parseIp(s);
  if (ip === undefined) return undefined;
  let text = ipText.get(ip);
  if (text === undefined) {
    text = formatIp(ip);
    ipText.set(ip, text);
  }
  return text;
}

/** First and last address of the block. */
export function cidrRange(c: CidrBlock): [bigint, bigint] {
  const hostBits = BigInt(BITS[c.family] - c.prefixLen);
  return [c.network, c.network | ((1n << hostBits) - 1n)];
}

export function cidrContains(c: CidrBlock, ip: IpAddr): boolean {
  return c.family === ip.family && (ip.value & mask(c.family, c.prefixLen)) === c.network;
}

export function cidrsOverlap(a: CidrBlock, b: CidrBlock): boolean {
  if (a.family !== b.family) return false;
  const shorter = Math.min(a.prefixLen, b.prefixLen);
  const m = mask(a.family, shorter);
  return (a.network & m) === (b.network & m);
}

/** Orders by family, then network, then prefix length: a stable, human-friendly order. */
export function compareCidr(a: CidrBlock, b: CidrBlock): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.network !== b.network) return a.network < b.network ? -1 : 1;
  return a.prefixLen - b.prefixLen;
}

/** Special-purpose addresses that can never be a node's InternalIP. */
export function isUnusableNodeIp(ip: IpAddr): string | undefined {
  if (ip.value === 0n) return 'unspecified address';
  if (ip.family === 4) {
    const first = Number(ip.value >> 24n);
    if (first === 127) return 'loopback address';
    if (first >= 224) return 'multicast or reserved address';
    if (ip.value >> 16n === 0xa9fen) return 'link-local address';
    return undefined;
  }
  if (ip.value === 1n) return 'loopback address';
  if (ip.value >> 120n === 0xffn) return 'multicast address';
  if (ip.value >> 118n === 0x3fan) return 'link-local address';
  return undefined;
}

/**
 * Merges blocks of one family into the smallest sorted list of disjoint inclusive ranges (adjacent
 * ranges are joined). nftables rejects overlapping elements in an interval set, so the renderer merges.
 */
export function mergeRanges(blocks: CidrBlock[]): [bigint, bigint][] {
  const ranges = blocks.map(cidrRange).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [lo, hi] of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1n) {
      if (hi > last[1]) last[1] = hi;
    } else {
      out.push([lo, hi]);
    }
  }
  return out;
}
