import { type CniResult, dnsIsEmpty, type ResultIp } from './result.ts';

/**
 * ADD's result when trellis is not the first plugin of a chain: the previous plugins' result with
 * trellis's interfaces, addresses and routes appended (CNI 1.0.0, "Section 5": a plugin given a
 * prevResult outputs it, with its own modifications included). Both are in the latest shape. Our
 * addresses' `interface` indexes move past the previous interfaces; the network's `dns` (ours, from
 * the config) wins over the previous one only when it says something.
 */
export function appendToPrevResult(prev: CniResult | undefined, own: CniResult): CniResult {
  if (prev === undefined) return own;
  const shift = prev.interfaces?.length ?? 0;
  const ownIps: ResultIp[] = (own.ips ?? []).map((ip) =>
    ip.interface === undefined ? { ...ip } : { ...ip, interface: ip.interface + shift },
  );
  const out: CniResult = { cniVersion: own.cniVersion };
  const interfaces = [...(prev.interfaces ?? []), ...(own.interfaces ?? [])];
  const ips = [...(prev.ips ?? []), ...ownIps];
  const routes = [...(prev.routes ?? []), ...(own.routes ?? [])];
  if (interfaces.length > 0) out.interfaces = interfaces;
  if (ips.length > 0) out.ips = ips;
  if (routes.length > 0) out.routes = routes;
  const dns = dnsIsEmpty(own.dns) ? prev.dns : own.dns;
  if (dns !== undefined) out.dns = dns;
  return out;
}
