import { CniCode, CniError } from '../cni/errors.ts';
import {
  type Cidr,
  cidrProblem,
  cidrSize,
  familyName,
  formatCidr,
  type IpAddress,
  parseCidr,
  parseIp,
  specialRangeProblem,
} from '../ip/index.ts';

/**
 * IPAM's rules on top of the shared IP library (pkg/ip): which addresses of a pod CIDR are reserved, and
 * how bad range or address text becomes an INVALID_CONFIG error that names the value and what is wrong.
 */

/** The addresses a range hands out: everything but the reserved ones (see usableBounds). */
export interface UsableBounds {
  readonly first: bigint;
  readonly last: bigint;
  readonly count: bigint;
}

function invalid(msg: string): CniError {
  return new CniError(CniCode.INVALID_CONFIG, msg);
}

/** Parses an address from the config or the store; INVALID_CONFIG naming the text when it is not one. */
export function parseIpOrThrow(text: string): IpAddress {
  const ip = parseIp(text);
  if (ip === undefined) throw invalid(`invalid IP address ${JSON.stringify(text)}`);
  return ip;
}

/** Parses a CIDR (host bits must be clear); INVALID_CONFIG naming the text and what is wrong with it. */
export function parseCidrOrThrow(text: string): Cidr {
  const cidr = parseCidr(text);
  if (cidr === undefined) throw invalid(`invalid CIDR ${JSON.stringify(text)}: ${cidrProblem(text)}`);
  return cidr;
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
  const cidr = parseCidrOrThrow(text);
  const special = specialRangeProblem(cidr, formatCidr(cidr));
  if (special !== undefined) throw invalid(`pod CIDR ${special}`);
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
