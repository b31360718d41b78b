/**
 * The footprint bench's second reference: a Node process that does nothing but read the Node watch
 * the agent reads, from the current resourceVersion on, the way the agent reads it (its own
 * connection, pkg/k8s/watch-connection.ts; protobuf frames split by WatchFrames and decoded by
 * node-proto.ts, or with `json` lines split by WatchLines and JSON.parse'd). Run with the agent
 * launcher's flags, its CPU is what receiving the kubelets' status reports costs the runtime on this
 * machine before the agent does anything with them.
 *
 *   node <agent flags> bench/lib/watch-reader.ts http://127.0.0.1:PORT TOKEN [protobuf|json]
 */
import * as http from 'node:http';
import { decodeNodeWatchEvent, NODES_ACCEPT } from '../../pkg/k8s/node-proto.ts';
import { openStream } from '../../pkg/k8s/watch-connection.ts';
import { WatchFrames } from '../../pkg/k8s/watch-frames.ts';
import { WatchLines } from '../../pkg/k8s/watch-lines.ts';

const [base, token, encoding = 'protobuf'] = process.argv.slice(2);
if (base === undefined || token === undefined || !['protobuf', 'json'].includes(encoding))
  throw new Error('usage: watch-reader.ts URL TOKEN [protobuf|json]');
const headers = { authorization: `Bearer ${token}`, accept: 'application/json' };
const watchHeaders = { ...headers, accept: encoding === 'json' ? 'application/json' : NODES_ACCEPT };
const server = new URL(base);

http
  .get(`${base}/api/v1/nodes?limit=1`, { headers }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      body += c;
    });
    res.on('end', () => {
      const rv = (JSON.parse(body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
      let events = 0;
      const lines = new WatchLines();
      const frames = new WatchFrames();
      const onBody =
        encoding === 'json'
          ? (piece: Buffer) =>
              lines.push(piece, (line) => {
                if (typeof (JSON.parse(line) as { type?: unknown }).type === 'string') events++;
                return true;
              })
          : (piece: Buffer) =>
              frames.push(piece, (frame) => {
                decodeNodeWatchEvent(frame); // throws on a frame that is no event
                events++;
                return true;
              });
      const fail = (why: unknown): never => {
        throw new Error(`the watch reader's watch failed: ${String(why)}`);
      };
      openStream(
        { protocol: 'http:', host: server.hostname, port: Number(server.port), rejectUnauthorized: true },
        `/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true&timeoutSeconds=3600`,
        watchHeaders,
        {
          onHead: (status, head) => {
            if (status !== 200) fail(`HTTP ${status}`);
            const type = head.get('content-type') ?? '';
            if (encoding !== 'json' && !type.startsWith('application/vnd.kubernetes.protobuf'))
              fail(`a protobuf watch was answered ${type}`);
          },
          onBody,
          onActivity: () => undefined,
          onEnd: () => fail('the server ended it'),
          onError: fail,
        },
      );
      // Told on SIGTERM, so the bench can check the reader saw the stream.
      process.on('SIGTERM', () => {
        process.stdout.write(`${events}\n`, () => process.exit(0));
      });
    });
  })
  .on('error', (err) => {
    throw err;
  });
