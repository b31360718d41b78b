/**
 * IPv4/IPv6 addresses as bigints (pure: no node:, no kernel). One parser for the whole agent: IPAM, the
 * route and masquerade planners and the VXLAN overlay all read the same text the same way.
 *
 * Parsing is strict, with Go's net.ParseIP rules (what Kubernetes validated the Node fields with and what
 * libcni uses): dotted-quad IPv4 without leading zeros (some parsers read them as octal, so their meaning is
 * ambiguous), RFC 4291 IPv6 with optional "::" and an embedded IPv4 tail (::ffff:10.0.0.1 is an IPv6
 * address whose last 32 bits are 10.0.0.1, rendered ::ffff:a00:1), no zones. Formatting is canonical:
 * dotted quad, RFC 5952 for IPv6 (lower case, longest run of zero groups compressed), so
 * "fd00:10:244:1:0:0:0:5" and "FD00:10:244:1::5" are one address and render to one text, whatever the
 * kernel, the API server or a config file wrote.
 *
 * pkg/cni/ip.ts stays separate on purpose: it works on bytes for the CNI protocol and is bundled into the
 * Bun-compiled shim, which must stay tiny.
 */

import { ParseCache } from './cache.ts';

export type Family = 4 | 6;

export interface IpAddress {
  readonly family: Family;
  readonly value: bigint;
}

export function familyBits(family: Family): 32 | 128 {
  return family === 4 ? 32 : 128;
}

/** The family of an address or CIDR written as text (IPv6 has colons, IPv4 none); no validation. */
export function familyOfText(text: string): Family {
  return text.includes(':') ? 6 : 4;
}

export function familyName(family: Family): 'IPv4' | 'IPv6' {
  return family === 4 ? 'IPv4' : 'IPv6';
}

/** Dotted quad, no leading zeros. A character loop on numbers, one bigint at the end: the route planner
 * runs this for every address of every node on every reconcile pass. */
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

const ipCache = new ParseCache<IpAddress>();

/** Parses an IPv4 or IPv6 address; undefined when the text is not exactly an address (or not a string). */
export function parseIp(s: string): IpAddress | undefined {
  if (typeof s !== 'string') return undefined;
  const hit = ipCache.get(s);
  if (hit !== undefined) return hit ?? undefined;
  return ipCache.remember(s, parseIpUncached(s));
}

function parseIpUncached(s: string): IpAddress | undefined {
  // The longest address text is 45 characters (six groups and an IPv4 tail): no need to split more.
  if (s.length === 0 || s.length > 64) return undefined;
  if (s.includes(':')) {
    const value = parseV6(s);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(s);
  return value === undefined ? undefined : { family: 4, value };
}

/**
 * Canonical text of an address: `formatIp(ip)` or `formatIp(family, value)` (the allocator and the
 * CIDR arithmetic work on bare values of a known family).
 */
export function formatIp(ip: IpAddress): string;
export function formatIp(family: Family, value: bigint): string;
export function formatIp(a: IpAddress | Family, b?: bigint): string {
  const family = typeof a === 'object' ? a.family : a;
  const value = typeof a === 'object' ? a.value : (b as bigint);
  if (family === 4) {
    const v = Number(value);
    return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
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

const ipText = new WeakMap<IpAddress, string>();

/** Canonical text of an address, or undefined when the text is not one. */
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
