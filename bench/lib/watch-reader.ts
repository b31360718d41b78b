/**
 * The footprint bench's second reference: a Node process that does nothing but read the Node watch
 * the agent reads (node:http, lines split and JSON.parse'd, as pkg/k8s/http-transport.ts does), from
 * the current resourceVersion on. Run with the agent launcher's flags, its CPU is what receiving the
 * kubelets' status reports costs the runtime on this machine before the agent does anything with them.
 *
 *   node <agent flags> bench/lib/watch-reader.ts http://127.0.0.1:PORT TOKEN
 */
import * as http from 'node:http';

const [base, token] = process.argv.slice(2);
if (base === undefined || token === undefined) throw new Error('usage: watch-reader.ts URL TOKEN');
const headers = { authorization: `Bearer ${token}`, accept: 'application/json' };

function get(path: string, onResponse: (res: http.IncomingMessage) => void): void {
  http.get(`${base}${path}`, { headers }, onResponse).on('error', (err) => {
    throw err;
  });
}

get('/api/v1/nodes?limit=1', (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (c: string) => {
    body += c;
  });
  res.on('end', () => {
    const rv = (JSON.parse(body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    get(
      `/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true&timeoutSeconds=3600`,
      (w) => {
        w.setEncoding('utf8');
        let buf = '';
        let events = 0;
        w.on('data', (chunk: string) => {
          buf += chunk;
          let nl = buf.indexOf('\n');
          while (nl >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            nl = buf.indexOf('\n');
            if (line !== '' && typeof (JSON.parse(line) as { type?: unknown }).type === 'string') events++;
          }
        });
        // Told on SIGTERM, so the bench can check the reader saw the stream.
        process.on('SIGTERM', () => {
          process.stdout.write(`${events}\n`, () => process.exit(0));
        });
      },
    );
  });
});
