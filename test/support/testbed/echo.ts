/**
 * A tiny UDP echo for the masquerade checks: the server answers every datagram with the source
 * address and port it saw; the client sends one datagram and prints the answer.
 *
 *   ip netns exec NS node test/support/testbed/echo.ts serve PORT
 *   ip netns exec NS node test/support/testbed/echo.ts ask HOST PORT
 *     -> {"from":"10.100.0.11","port":40000,"replyFrom":"10.96.0.20","replyPort":53}
 *
 * The server binds one dual-stack socket and prints {"listening":PORT} once bound. The client tries
 * three times (300 ms apart) and exits 1 if no answer came within ~1 s of the last try. Its socket is
 * unconnected, so it also reports where the answer came from (`replyFrom`, `replyPort`): a reply
 * that NAT failed to rewrite arrives, but from the wrong address.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';

function seen(rinfo: RemoteInfo): { from: string; port: number } {
  // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6 addresses.
  const from = rinfo.address.startsWith('::ffff:') ? rinfo.address.slice(7) : rinfo.address;
  return { from, port: rinfo.port };
}

const [mode, a, b] = process.argv.slice(2);
if (mode === 'serve' && a !== undefined) {
  const sock = createSocket({ type: 'udp6', ipv6Only: false });
  sock.on('message', (_msg, rinfo) => {
    sock.send(JSON.stringify(seen(rinfo)), rinfo.port, rinfo.address);
  });
  sock.bind(Number(a), '::', () => process.stdout.write(`${JSON.stringify({ listening: Number(a) })}\n`));
  const stop = (): void => {
    sock.close(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else if (mode === 'ask' && a !== undefined && b !== undefined) {
  const sock = createSocket(a.includes(':') ? 'udp6' : 'udp4');
  let tries = 0;
  const send = (): void => {
    tries++;
    sock.send('who am i', Number(b), a);
  };
  sock.on('message', (msg, rinfo) => {
    const reply = seen(rinfo);
    const answer = { ...JSON.parse(msg.toString('utf8')), replyFrom: reply.from, replyPort: reply.port };
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    process.exit(0);
  });
  const timer = setInterval(() => {
    if (tries >= 3) {
      clearInterval(timer);
      setTimeout(() => {
        process.stderr.write(`no answer from ${a}:${b}\n`);
        process.exit(1);
      }, 1000);
      return;
    }
    send();
  }, 300);
  send();
} else {
  process.stderr.write('usage: echo.ts serve PORT | echo.ts ask HOST PORT\n');
  process.exit(2);
}
