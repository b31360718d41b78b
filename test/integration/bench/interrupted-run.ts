/**
 * A stand-in for a bench (signal-undo.test.ts): it makes what benches make, through the same helpers,
 * prints what it made as one JSON line and waits to be signalled.
 *
 *   node interrupted-run.ts            namespaces, a temp dir, a pinned namespace, the test API server,
 *                                      a child process in a namespace and one outside
 *   node interrupted-run.ts --outer    a namespace, then itself again inside it (runInsideNamespace),
 *                                      which makes the above there
 *   node interrupted-run.ts --detach   as the first, undoing as a vitest worker does
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runInsideNamespace } from '../../../bench/lib/cluster.ts';
import { startTestApiServer } from '../../support/apiserver/server.ts';
import { NetnsPool } from '../../support/netns.ts';
import { createPodPins } from '../../support/pod-pins.ts';
import { tempDir, undoOnSignals } from '../../support/signal-undo.ts';

// --detach: as a vitest worker asks (test/support/undo-on-interrupt.ts).
if (process.argv.includes('--detach')) undoOnSignals(['SIGINT', 'SIGHUP'], { detach: true });
else undoOnSignals();
const pool = new NetnsPool();

if (process.argv.includes('--outer') && !process.argv.includes('--inner')) {
  let code = 1;
  try {
    const node = pool.add('sgo');
    process.stdout.write(`${JSON.stringify({ outer: { namespaces: [node.name] } })}\n`);
    code = await runInsideNamespace(node.name, import.meta.filename, []);
  } finally {
    pool.cleanup();
  }
  process.exit(code);
}

const a = pool.add('sgu');
const b = pool.add('sgu');
const dir = tempDir('trl-sgu-');
const pins = createPodPins(['pods']);
const pin = pins.pin(join(pins.dir('pods'), 'p1'), `/var/run/netns/${b.name}`);
const srv = await startTestApiServer();
const inNs = spawn('ip', ['netns', 'exec', a.name, 'sleep', '300'], { stdio: 'ignore' });
const plain = spawn('sleep', ['300'], { stdio: 'ignore' });
process.stdout.write(
  `${JSON.stringify({
    namespaces: [a.name, b.name],
    dirs: [dir, srv.kubeconfigPath.replace(/\/kubeconfig$/, '')],
    pinsRoot: pins.root,
    pin,
    pids: [inNs.pid, plain.pid],
  })}\n`,
);
setInterval(() => undefined, 60_000);
