import { type ChildProcess, execFileSync } from 'node:child_process';
import { nodeIn } from './netns.ts';

/**
 * A real TCP connection between two pods, and the segment size each end's kernel settled on, read
 * with `ss -ti` while the connection is open: what the SYN and SYN-ACK told each end, after whatever
 * the nodes on the way did to them.
 */
export interface TcpMss {
  /** The client's send MSS (ss `mss:`), from the server's SYN-ACK. */
  client: number;
  /** The server's send MSS, from the client's SYN. */
  server: number;
  /** Bytes the server received of what the client sent. */
  received: number;
}

const PORT = 5301;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(timeoutMs: number, what: string, probe: () => T | undefined): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: nothing after ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** The child's complete stdout lines so far (a chunk may end mid-line). */
function lines(child: ChildProcess): string[] {
  const out: string[] = [];
  let partial = '';
  child.stdout!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop()!;
    out.push(...parts.filter((l) => l !== ''));
  });
  return out;
}

/** ss's `mss:N` for the one connection in `ns` to or from port PORT. */
function ssMss(ns: string, filter: string): number | undefined {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Hnti', 'state', 'established', filter], {
    encoding: 'utf8',
  });
  const m = /\bmss:(\d+)/.exec(out);
  return m === null ? undefined : Number(m[1]);
}

/**
 * Connects from `clientNs` to `addr` (served in `serverNs`), sends `bytes`, and returns both ends' MSS
 * read while the connection is still open, with the byte count the server saw.
 */
export async function tcpMss(
  clientNs: string,
  serverNs: string,
  addr: string,
  bytes = 1 << 20,
): Promise<TcpMss> {
  const host = JSON.stringify(addr);
  // Both ends keep the connection open once the bytes are through: ss reads an established one.
  const server = nodeIn(
    serverNs,
    `let n = 0; require('net').createServer((s) => { s.on('data', (d) => { n += d.length; if (n >= ${bytes}) console.log('received ' + n); }); }).listen(${PORT}, ${host}, () => console.log('up'));`,
  );
  const serverOut = lines(server);
  let client: ChildProcess | undefined;
  try {
    await until(5000, `TCP server on ${addr}`, () => (serverOut.includes('up') ? true : undefined));
    client = nodeIn(
      clientNs,
      `const s = require('net').connect(${PORT}, ${host}, () => s.write(Buffer.alloc(${bytes}, 1))); s.on('error', (e) => { console.error(e.message); process.exit(1); }); setInterval(() => {}, 1000);`,
    );
    const received = await until(10_000, `TCP ${clientNs} -> ${addr}: ${bytes} bytes through`, () => {
      const line = serverOut.find((l) => l.startsWith('received '));
      return line === undefined ? undefined : Number(line.slice('received '.length));
    });
    return {
      client: await until(2000, 'client MSS', () => ssMss(clientNs, `dport = :${PORT}`)),
      server: await until(2000, 'server MSS', () => ssMss(serverNs, `sport = :${PORT}`)),
      received,
    };
  } finally {
    client?.kill('SIGKILL');
    server.kill('SIGKILL');
  }
}
