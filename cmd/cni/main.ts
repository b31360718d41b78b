/**
 * The trellis CNI plugin binary (dist/bin/trellis, compiled by Bun). The container runtime runs it
 * per CNI call: it forwards the request to the node agent over a unix socket and prints the answer.
 * All decisions live in pkg/shim (runShim); this file only supplies Bun's stdin, stdout and socket.
 *
 * stdout carries only the CNI result or error object; diagnostics go to stderr.
 */
import { runShim } from '../../pkg/shim/shim.ts';
import { writeSpooledDel } from '../../pkg/shim/spool-fs.ts';
import { bun, bunTransport } from './bun-runtime.ts';

declare const TRELLIS_VERSION: string;
const version = typeof TRELLIS_VERSION === 'string' ? TRELLIS_VERSION : 'dev';

// A function, not top-level await: Bun's --bytecode (start-up compiled ahead of time, ~1.5 ms of the
// shim's ~10 ms per call here) needs the CommonJS output format, which has no top-level await.
async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === '--version' || arg === '-v') {
    await bun.writeStdout(`trellis ${version}\n`);
    process.exit(0);
  }

  const out = await runShim({
    env: process.env,
    stdin: bun.readStdin,
    connect: bunTransport,
    spool: { spoolDel: writeSpooledDel },
  });
  if (out.stderr !== '') await bun.writeStderr(out.stderr);
  if (out.stdout !== '') await bun.writeStdout(out.stdout);
  process.exit(out.exitCode);
}

void main();
