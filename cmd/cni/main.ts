/**
 * The trellis CNI plugin binary (dist/bin/trellis, compiled by Bun). The container runtime runs it
 * per CNI call: it forwards the request to the node agent over a unix socket and prints the answer.
 * All decisions live in pkg/shim (runShim); this file only supplies stdin, stdout and the socket,
 * as blocking libc calls (libc.ts).
 *
 * stdout carries only the CNI result or error object; diagnostics go to stderr.
 */
import { CniCode, CniError } from '../../pkg/cni/errors.ts';
import { LATEST_VERSION, SUPPORTED_VERSIONS } from '../../pkg/cni/version.ts';
import { blockingTransport } from '../../pkg/shim/blocking-transport.ts';
import { decodeStdin, MAX_STDIN_BYTES } from '../../pkg/shim/protocol.ts';
import { readyMarkerAgeMs } from '../../pkg/shim/ready-marker.ts';
import { runShim } from '../../pkg/shim/shim.ts';
import { writeSpooledDel } from '../../pkg/shim/spool-fs.ts';
import { type Libc, openLibc } from './libc.ts';

declare const TRELLIS_VERSION: string;
const version = typeof TRELLIS_VERSION === 'string' ? TRELLIS_VERSION : 'dev';

/** For a person at a terminal; the container runtime never passes arguments (built only when asked). */
const help =
  (): string => `trellis ${version}: the trellis CNI plugin. The container runtime runs it with the CNI_* variables
and the network configuration on stdin; it hands each call to the trellis agent on this node over the
unix socket the configuration names, and prints the agent's answer. CNI versions: ${SUPPORTED_VERSIONS.join(', ')}.
Usage: trellis --version | --help. On the node: kubectl -n kube-system exec ds/trellis -- trellis-agent doctor
`;

function main(): void {
  let libc: Libc;
  try {
    libc = openLibc();
  } catch (err) {
    const e = new CniError(
      CniCode.INTERNAL,
      `trellis shim cannot call libc through Bun's FFI: ${String(err)}`,
    );
    console.log(JSON.stringify(e.toJSON(LATEST_VERSION)));
    process.exit(1);
  }

  const arg = process.argv[2];
  if (arg === '--version' || arg === '-v') exitWith(libc, `trellis ${version}\n`, 0);
  if (arg === '--help' || arg === '-h') exitWith(libc, help(), 0);

  const out = runShim({
    env: process.env,
    stdin: () => decodeStdin(libc.readAll(0, MAX_STDIN_BYTES)),
    connect: blockingTransport(libc),
    spool: { spoolDel: writeSpooledDel },
    fileAgeMs: (path) => readyMarkerAgeMs(path),
    sleep: (ms) => libc.sleep(ms),
    now: () => libc.now(),
  });
  if (out.stderr !== '') {
    try {
      libc.writeAll(2, out.stderr);
    } catch {
      // Diagnostics only: a closed stderr must not cost the runtime the result on stdout.
    }
  }
  exitWith(libc, out.stdout, out.exitCode);
}

/**
 * Writes the answer and exits. A stdout that takes no more (the runtime gone: EPIPE, which Bun does
 * not signal; a full disk) is said in one line on stderr and exit 1, not a crash's stack and source.
 */
function exitWith(libc: Libc, stdout: string, code: number): never {
  try {
    if (stdout !== '') libc.writeAll(1, stdout);
  } catch (err) {
    try {
      libc.writeAll(
        2,
        `trellis: cannot write the answer to stdout: ${err instanceof Error ? err.message : String(err)}\n`,
      );
    } catch {
      // Nowhere left to say it: the exit status does.
    }
    process.exit(1);
  }
  process.exit(code);
}

main();
