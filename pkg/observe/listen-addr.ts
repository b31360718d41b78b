/**
 * The --metrics-addr forms, parsed without touching the network: config.ts checks them at start,
 * http-server.ts binds them.
 */

export const LISTEN_ADDR_FORMS = 'HOST:PORT, [IPv6]:PORT or :PORT';

/**
 * "0.0.0.0:9743", "[::]:9743", "10.0.0.1:0" -> host and port; ":9743" -> every address of both families
 * (host undefined). The port in decimal digits, 0 to 65535. Undefined for anything else.
 */
export function splitListenAddr(addr: string): { host: string | undefined; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(0|[1-9][0-9]{0,4})$/.exec(addr);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] === '' ? undefined : m[2]!), port };
}
