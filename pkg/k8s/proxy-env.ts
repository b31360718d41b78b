/**
 * Whether the environment names a proxy for the API server, as client-go reads it (Go's
 * httpproxy.FromEnvironment): HTTPS_PROXY (or https_proxy) for an https server, HTTP_PROXY (or
 * http_proxy) for http, unless NO_PROXY (or no_proxy) exempts the host: `*`, an IP, a CIDR, a domain
 * (`example.com` covers it and its subdomains, `.example.com` and `*.example.com` the subdomains),
 * each with an optional `:port`; localhost and loopback addresses never go through a proxy.
 *
 * trellis's transports do not go through such a proxy (only a kubeconfig's proxy-url, through the
 * client-node fallback): where client-go based agents (kindnet, flannel) would use it, trellis
 * connects directly, and says so at start (cmd/agent/run.ts) rather than leave an operator to find
 * out from a connection that fails.
 */
import { cidrContains, type IpAddress, parseCidr, parseIp } from '../ip/index.ts';

/** The variable that names a proxy for `server`, and its value; undefined when none applies. */
export function proxyFromEnvironment(
  server: URL,
  env: Readonly<Record<string, string | undefined>>,
): { variable: string; proxy: string } | undefined {
  const names = server.protocol === 'https:' ? ['HTTPS_PROXY', 'https_proxy'] : ['HTTP_PROXY', 'http_proxy'];
  const variable = names.find((n) => (env[n] ?? '') !== '');
  if (variable === undefined) return undefined;
  const host = server.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = server.port !== '' ? server.port : server.protocol === 'https:' ? '443' : '80';
  if (!proxied(host, port, env.NO_PROXY || env.no_proxy || '')) return undefined;
  return { variable, proxy: env[variable]! };
}

function proxied(host: string, port: string, noProxy: string): boolean {
  const ip = parseIp(host);
  if (host === 'localhost' || (ip !== undefined && isLoopback(ip))) return false;
  for (const raw of noProxy.split(',')) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return false;
    const cidr = parseCidr(entry, { strict: false });
    if (cidr !== undefined) {
      if (ip !== undefined && cidrContains(cidr, ip)) return false;
      continue;
    }
    const [entryHost, entryPort] = splitHostPort(entry);
    if (entryHost === '' || (entryPort !== '' && entryPort !== port)) continue;
    const entryIp = parseIp(entryHost);
    if (entryIp !== undefined) {
      if (ip !== undefined && entryIp.family === ip.family && entryIp.value === ip.value) return false;
      continue;
    }
    const subdomainsOnly = entryHost.startsWith('.') || entryHost.startsWith('*.');
    const domain = entryHost.replace(/^\*?\./, '');
    if (host.endsWith(`.${domain}`) || (!subdomainsOnly && host === domain)) return false;
  }
  return true;
}

/** `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a bare host: [host, port or '']. */
function splitHostPort(entry: string): [string, string] {
  const bracketed = /^\[([^\]]*)\](?::(\d*))?$/.exec(entry);
  if (bracketed !== null) return [bracketed[1]!, bracketed[2] ?? ''];
  if (parseIp(entry)?.family === 6) return [entry, ''];
  const colon = entry.lastIndexOf(':');
  return colon < 0 ? [entry, ''] : [entry.slice(0, colon), entry.slice(colon + 1)];
}

function isLoopback(ip: IpAddress): boolean {
  return ip.family === 4 ? ip.value >> 24n === 127n : ip.value === 1n;
}
