import { CniCode, CniError } from '../cni/errors.ts';

/**
 * IPv4/IPv6 addresses and CIDRs as bigints (pure). Addresses are compared, stored and used as map
 * keys in their canonical text form: dotted quad for IPv4, RFC 5952 for IPv6 (lower case, longest
 * run of zero groups compressed), so "fd00:10:244:1:0:0:0:5" and "FD00:10:244:1::5" are one address.
 */

export type Family = 4 | 6;

export interface IpAddress {
  readonly family: Family;
  readonly value: bigint;
}

export interface Cidr {
  readonly family: Family;
  /** The network address (host bits zero). */
  readonly network: bigint;
  readonly prefix: number;
}

/** The addresses a range hands out: everything but the reserved ones (see usableBounds). */
export interface UsableBounds {
  readonly first: bigint;
  readonly last: bigint;
  readonly count: bigint;
}

export function familyBits(family: Family): 32 | 128 {
  return family === 4 ? 32 : 128;
}

export function familyName(family: Family): 'IPv4' | 'IPv6' {
  return family === 4 ? 'IPv4' : 'IPv6';
}

function invalid(msg: string): CniError {
  return new CniError(CniCode.INVALID_CONFIG, msg);
}

const V4_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-f]{1,4}$/;

function parseV4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are rejected: some parsers read them as octal, so their meaning is ambiguous.
    if (!V4_OCTET.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseV6Groups(text: string, v4Tail: boolean): number[] | undefined {
  if (text === '') return [];
  const groups: number[] = [];
  const parts = text.split(':');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (v4Tail && i === parts.length - 1 && part.includes('.')) {
      // An embedded IPv4 tail (e.g. ::ffff:10.0.0.1) fills the last two groups.
      const v4 = parseV4(part);
      if (v4 === undefined) return undefined;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      continue;
    }
    if (!V6_GROUP.test(part)) return undefined;
    groups.push(Number.parseInt(part, 16));
  }
  return groups;
}

function parseV6(text: string): bigint | undefined {
  const lower = text.toLowerCase();
  const halves = lower.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const head = parseV6Groups(halves[0]!, false);
    const tail = parseV6Groups(halves[1]!, true);
    if (head === undefined || tail === undefined) return undefined;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    const all = parseV6Groups(lower, true);
    if (all === undefined || all.length !== 8) return undefined;
    groups = all;
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

/** Parses an IP address; undefined when the text is not one (no zone ids, no leading-zero octets). */
export function tryParseIp(text: string): IpAddress | undefined {
  if (text.includes(':')) {
    const value = parseV6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(text);
  return value === undefined ? undefined : { family: 4, value };
}

export function parseIp(text: string): IpAddress {
  const ip = tryParseIp(text);
  if (ip === undefined) throw invalid(`invalid IP address ${JSON.stringify(text)}`);
  return ip;
}

export function formatIp(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(Number((value >> s) & 0xffffn));
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
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** The canonical text of an address, or undefined when the text is not an address. */
export function canonicalIp(text: string): string | undefined {
  const ip = tryParseIp(text);
  return ip === undefined ? undefined : formatIp(ip.family, ip.value);
}

export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0 || slash !== text.lastIndexOf('/')) {
    throw invalid(`invalid CIDR ${JSON.stringify(text)}: expected ADDRESS/PREFIX`);
  }
  const ip = tryParseIp(text.slice(0, slash));
  if (ip === undefined) throw invalid(`invalid CIDR ${JSON.stringify(text)}: bad address`);
  const prefixText = text.slice(slash + 1);
  const bits = familyBits(ip.family);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > bits) {
    throw invalid(`invalid CIDR ${JSON.stringify(text)}: prefix must be 0-${bits}`);
  }
  const prefix = Number(prefixText);
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((ip.value & hostMask) !== 0n) {
    const network = formatCidr({ family: ip.family, network: ip.value & ~hostMask, prefix });
    throw invalid(`invalid CIDR ${JSON.stringify(text)}: host bits are set (the network is ${network})`);
  }
  return { family: ip.family, network: ip.value, prefix };
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.family, cidr.network)}/${cidr.prefix}`;
}

/** Number of addresses in the CIDR, reserved ones included. */
export function cidrSize(cidr: Cidr): bigint {
  return 1n << BigInt(familyBits(cidr.family) - cidr.prefix);
}

export function contains(cidr: Cidr, ip: IpAddress): boolean {
  return ip.family === cidr.family && ip.value >= cidr.network && ip.value < cidr.network + cidrSize(cidr);
}

/** The n-th address of the CIDR (0 is the network address). */
export function nthAddress(cidr: Cidr, n: bigint): bigint {
  if (n < 0n || n >= cidrSize(cidr)) {
    throw new RangeError(`address index ${n} is outside ${formatCidr(cidr)}`);
  }
  return cidr.network + n;
}

/**
 * Reserved: the network address, the one after it (the conventional gateway, as host-local keeps it
 * by default) and, for IPv4, the broadcast address. The rest is handed out.
 */
export function usableBounds(cidr: Cidr): UsableBounds {
  const size = cidrSize(cidr);
  const first = cidr.network + 2n;
  const last = cidr.network + size - (cidr.family === 4 ? 2n : 1n);
  const count = last >= first ? last - first + 1n : 0n;
  return { first, last, count };
}

/** The conventional gateway address of a range (network + 1), which is never handed out. */
export function gatewayAddress(cidr: Cidr): bigint {
  return cidr.network + 1n;
}

export function isReserved(cidr: Cidr, value: bigint): boolean {
  const { first, last } = usableBounds(cidr);
  return value < first || value > last;
}

/** Parses a pod CIDR that addresses are allocated from; too-small ranges are rejected here. */
export function parseRange(text: string): Cidr {
  const cidr = parseCidr(text);
  if (usableBounds(cidr).count < 1n) {
    const longest = cidr.family === 4 ? 30 : 126;
    const reserved =
      cidr.family === 4 ? 'network, gateway and broadcast addresses' : 'network and gateway addresses';
    throw invalid(
      `${familyName(cidr.family)} range ${formatCidr(cidr)} is too small to allocate from: ` +
        `no address is left after reserving the ${reserved} (use a /${longest} or shorter prefix)`,
    );
  }
  return cidr;
}
