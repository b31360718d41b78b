/**
 * A plugin runner that lives inside a node namespace, so a CNI plugin can be timed from spawn to
 * exit as a runtime sees it, without `ip netns exec` start-up in the figure. The benchmark starts one
 * per node namespace (`ip netns exec NS node bench/lib/ns-runner.ts`) and talks to it in JSON lines:
 *
 *   stdin:  {"id": 1, "binary": "/usr/lib/cni/ptp", "env": {...}, "stdin": "{...}"}
 *   stdout: {"id": 1, "ms": 7.9, "endNs": "123...", "code": 0, "stdout": "...", "stderr": "..."}
 *
 * `ms` is spawn to exit; `endNs` the exit on the machine's monotonic clock (process.hrtime, the same
 * in every process), so the caller can time from an event of its own (a pod's namespace pinned).
 * Requests run concurrently (a concurrent-ADD round sends several before reading answers).
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

interface Request {
  id: number;
  binary: string;
  env: Record<string, string>;
  stdin: string;
}

function run(req: Request): void {
  const t0 = performance.now();
  const child = spawn(req.binary, [], { env: req.env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  // A binary that cannot be started (dist/ rebuilt under the run, say) fails the run: waiting for it
  // would put the wait into the ADD's time from its pin, and the run would time a different build.
  child.on('error', (err: NodeJS.ErrnoException) => {
    process.stdout.write(
      `${JSON.stringify({ id: req.id, ms: 0, endNs: '0', code: -1, stdout, stderr: String(err) })}\n`,
    );
  });
  child.on('close', (code) => {
    const endNs = String(process.hrtime.bigint());
    const ms = performance.now() - t0;
    process.stdout.write(`${JSON.stringify({ id: req.id, ms, endNs, code, stdout, stderr })}\n`);
  });
  child.stdin.on('error', () => {});
  child.stdin.end(req.stdin);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== '') run(JSON.parse(line) as Request);
});
