/**
 * CIDR blocks as bigints (pure): parse, format, size, n-th address, range, containment, overlap, order.
 * Blocks parsed here always have their host bits clear, so two spellings of one network compare equal.
 */

import { type Family, familyBits, formatIp, type IpAddress, parseIp } from './address.ts';
import { ParseCache } from './cache.ts';

export interface Cidr {
  readonly family: Family;
  /** The network address (host bits cleared when parsed leniently, guaranteed clear when strict). */
  readonly network: bigint;
  readonly prefixLen: number;
}

export interface ParseCidrOptions {
  /**
   * Host bits must be zero (the default): "10.0.0.5/24" is far more likely a typo than a network, and
   * silently masking it would allocate from, route or exempt the wrong range. `false` masks them off.
   */
  strict?: boolean;
}

function computeMask(family: Family, prefixLen: number): bigint {
  const bits = BigInt(familyBits(family));
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

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/** The block, or why the text is not one (the reason completes "invalid CIDR <text>: ..."). */
function parseOrWhy(s: string, strict: boolean): Cidr | string {
  const slash = s.indexOf('/');
  if (slash < 0 || slash !== s.lastIndexOf('/')) return 'expected ADDRESS/PREFIX';
  const ip = parseIp(s.slice(0, slash));
  if (ip === undefined) return 'bad address';
  const prefix = s.slice(slash + 1);
  const bits = familyBits(ip.family);
  if (!PREFIX.test(prefix) || Number(prefix) > bits) return `prefix must be 0-${bits}`;
  const prefixLen = Number(prefix);
  const network = ip.value & mask(ip.family, prefixLen);
  if (strict && network !== ip.value) {
    return `host bits are set (the network is ${formatCidr({ family: ip.family, network, prefixLen })})`;
  }
  return { family: ip.family, network, prefixLen };
}

const strictCache = new ParseCache<Cidr>();
const lenientCache = new ParseCache<Cidr>();

/** Parses "address/prefix"; undefined when the text is not a CIDR (see ParseCidrOptions.strict). */
export function parseCidr(s: string, opts: ParseCidrOptions = {}): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const cache = (opts.strict ?? true) ? strictCache : lenientCache;
  const hit = cache.get(s);
  if (hit !== undefined) return hit ?? undefined;
  const parsed = parseOrWhy(s, opts.strict ?? true);
  return cache.remember(s, typeof parsed === 'string' ? undefined : parsed);
}

/**
 * Why parseCidr rejects the text, for error messages ("expected ADDRESS/PREFIX", "bad address",
 * "prefix must be 0-32", "host bits are set (the network is 10.0.0.0/24)"); undefined when it is valid.
 */
export function cidrProblem(s: string, opts: ParseCidrOptions = {}): string | undefined {
  if (typeof s !== 'string') return 'not a string';
  const parsed = parseOrWhy(s, opts.strict ?? true);
  return typeof parsed === 'string' ? parsed : undefined;
}

const cidrText = new WeakMap<Cidr, string>();

export function formatCidr(c: Cidr): string {
  let text = cidrText.get(c);
  if (text === undefined) {
    text = `${formatIp(c.family, c.network)}/${c.prefixLen}`;
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

/** Number of addresses in the block. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(familyBits(c.family) - c.prefixLen);
}

/** First and last address of the block. */
export function cidrRange(c: Cidr): [bigint, bigint] {
  return [c.network, cidrLast(c)];
}

/** The last address of the block (cidrRange's second, without the pair: planners call it per Node). */
export function cidrLast(c: Cidr): bigint {
  return c.network | (cidrSize(c) - 1n);
}

/** The n-th address of the block (0 is the network address). */
export function nthAddress(c: Cidr, n: bigint): bigint {
  if (n < 0n || n >= cidrSize(c)) {
    throw new RangeError(`address index ${n} is outside ${formatCidr(c)}`);
  }
  return c.network + n;
}

export function cidrContains(c: Cidr, ip: IpAddress): boolean {
  return c.family === ip.family && (ip.value & mask(c.family, c.prefixLen)) === c.network;
}

/** `outer` holds all of `inner` (same family; inner no wider). */
export function cidrHolds(outer: Cidr, inner: Cidr): boolean {
  return outer.prefixLen <= inner.prefixLen && cidrsOverlap(outer, inner);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const m = mask(a.family, Math.min(a.prefixLen, b.prefixLen));
  return (a.network & m) === (b.network & m);
}

/** Orders by family, then network, then prefix length: a stable, human-friendly order. */
export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.network !== b.network) return a.network < b.network ? -1 : 1;
  return a.prefixLen - b.prefixLen;
}
