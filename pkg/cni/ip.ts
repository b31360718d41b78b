/**
 * Strict IP and CIDR text parsing for CNI results and configs, without node:net so the same code runs in
 * the Bun-compiled shim. The rules follow Go's net.ParseIP / net.ParseCIDR (what libcni and the reference
 * plugins use): dotted-quad IPv4 without leading zeros, RFC 4291 IPv6 text with optional "::" and an
 * embedded IPv4 tail, no zones.
 * Separate from the agent's IP library (pkg/ip) on purpose: bytes for the CNI protocol, and tiny for the shim.
 */

/** Parses an IPv4 or IPv6 address; returns its 4 or 16 bytes, or undefined when the text is not an IP. */
export function parseIp(s: string): Uint8Array | undefined {
  return s.includes(':') ? parseIpv6(s) : parseIpv4(s);
}

/** "4" for IPv4 and IPv4-mapped IPv6 (Go's To4() != nil), "6" otherwise; undefined when not an IP. */
export function ipFamily(s: string): '4' | '6' | undefined {
  const bytes = parseIp(s);
  if (bytes === undefined) return undefined;
  if (bytes.length === 4 || isV4Mapped(bytes)) return '4';
  return '6';
}

export interface Cidr {
  /** The address part as written ("10.0.0.5" in "10.0.0.5/24"); a CNI result keeps the host bits. */
  address: string;
  bytes: Uint8Array;
  prefixLen: number;
}

/** Parses "address/prefix"; the prefix must fit the address length as written (32 or 128). */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const address = s.slice(0, slash);
  const prefix = s.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefix)) return undefined;
  const bytes = parseIp(address);
  if (bytes === undefined) return undefined;
  const prefixLen = Number(prefix);
  if (prefixLen > bytes.length * 8) return undefined;
  return { address, bytes, prefixLen };
}

function isV4Mapped(b: Uint8Array): boolean {
  if (b.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function parseIpv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    // Go rejects leading zeros ("010.0.0.1") because other parsers read them as octal.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIpv6(s: string): Uint8Array | undefined {
  if (s.length > 45) return undefined;
  const out = new Uint8Array(16);
  const dbl = s.indexOf('::');
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) return undefined;
  const head = dbl >= 0 ? s.slice(0, dbl) : s;
  const tail = dbl >= 0 ? s.slice(dbl + 2) : '';
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail ("::ffff:1.2.3.4") is only allowed as the very last group.
  const headBytes = groupsToBytes(headGroups, dbl < 0);
  const tailBytes = groupsToBytes(tailGroups, true);
  if (headBytes === undefined || tailBytes === undefined) return undefined;
  const total = headBytes.bytes.length + tailBytes.bytes.length;
  if (dbl < 0) {
    if (total !== 16) return undefined;
  } else if (total > 14) {
    // "::" must stand for at least one group of zeros.
    return undefined;
  }
  out.set(headBytes.bytes, 0);
  out.set(tailBytes.bytes, 16 - tailBytes.bytes.length);
  return out;
}

function groupsToBytes(groups: string[], allowV4Tail: boolean): { bytes: number[] } | undefined {
  const bytes: number[] = [];
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!;
    if (allowV4Tail && i === groups.length - 1 && g.includes('.')) {
      const v = parseIpv4(g);
      if (v === undefined) return undefined;
      bytes.push(...v);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    const n = Number.parseInt(g, 16);
    bytes.push(n >> 8, n & 0xff);
  }
  return { bytes };
}
