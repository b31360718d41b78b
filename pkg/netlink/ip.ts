import { isIPv4, isIPv6 } from 'node:net';
import type { Family } from '../datapath/ports.ts';

/**
 * Address <-> bytes conversions for netlink attributes. Pure; kept here rather than in a shared
 * helper so the adapter's wire format has exactly one definition.
 */

/**
 * The address as an unsigned 32-bit number when it is a dotted quad as node:net's isIPv4 accepts it
 * (four decimal octets 0-255, no leading zeros, nothing else), -1 otherwise: checked and converted
 * in one pass, without the split/map/Buffer.from a route burst paid per address. (A plain check is
 * faster with isIPv4: the agent's V8 runs without optimizing tiers, scripts/build.ts, so its regex
 * engine's compiled code beats a loop of interpreted JavaScript.)
 */
export function ipv4Value(address: string): number {
  const n = address.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = address.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1; // a leading zero
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

export function familyOf(address: string): Family {
  if (isIPv4(address)) return 4;
  if (isIPv6(address)) return 6;
  throw new TypeError(`not an IP address: ${JSON.stringify(address)}`);
}

export function ipToBytes(address: string): Buffer {
  const v4 = ipv4Value(address);
  if (v4 >= 0) {
    const out = Buffer.allocUnsafe(4);
    out.writeUInt32BE(v4, 0);
    return out;
  }
  if (!isIPv6(address)) throw new TypeError(`not an IP address: ${JSON.stringify(address)}`);
  let text = address;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two hextets.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const b = tail.split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const missing = 8 - left.length - right.length;
  const hextets = rest === undefined ? left : [...left, ...new Array<string>(missing).fill('0'), ...right];
  const out = Buffer.alloc(16);
  hextets.forEach((h, i) => {
    out.writeUInt16BE(Number.parseInt(h, 16), i * 2);
  });
  return out;
}

/** An address given as its number (pkg/ip's value), as 4 or 16 bytes in network order. */
export function ipValueToBytes(family: Family, value: bigint): Buffer {
  const len = family === 4 ? 4 : 16;
  const out = Buffer.alloc(len);
  let v = value;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Formats 4 or 16 bytes; IPv6 in RFC 5952 canonical form (what `ip -j` prints). */
export function bytesToIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new TypeError(`address of ${bytes.length} bytes`);
  const h: number[] = [];
  for (let i = 0; i < 16; i += 2) h.push((bytes[i]! << 8) | bytes[i + 1]!);
  // IPv4-mapped addresses keep their dotted tail, as inet_ntop prints them.
  if (h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = h.map((x) => x.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export interface Prefix {
  family: Family;
  address: string;
  prefixLen: number;
}

/** Parses "10.244.2.0/24" (a bare address is a host prefix). */
export function parsePrefix(cidr: string): Prefix {
  const slash = cidr.indexOf('/');
  const address = slash < 0 ? cidr : cidr.slice(0, slash);
  const family = familyOf(address);
  const max = family === 4 ? 32 : 128;
  const lenText = slash < 0 ? String(max) : cidr.slice(slash + 1);
  const prefixLen = Number(lenText);
  if (!/^\d{1,3}$/.test(lenText) || prefixLen > max) {
    throw new TypeError(`invalid prefix length in ${JSON.stringify(cidr)}`);
  }
  return { family, address, prefixLen };
}

export function macToBytes(mac: string): Buffer {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new TypeError(`invalid MAC ${JSON.stringify(mac)}`);
  return Buffer.from(mac.split(':').map((x) => Number.parseInt(x, 16)));
}

export function bytesToMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}
