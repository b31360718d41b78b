import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const REPO = join(import.meta.dirname, '..', '..');
export const NODE = join(REPO, 'node_modules', '.bin', 'node');

export interface TimedRun {
  /** Spawn to exit, timed by the runner. */
  ms: number;
  /** The plugin's exit on the monotonic clock (process.hrtime.bigint(), machine-wide), as text. */
  endNs: string;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Client side of bench/lib/ns-runner.ts: one runner process inside one namespace. */
export class NsRunner {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: TimedRun) => void>();
  private next = 1;

  constructor(ns: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, NODE, join(import.meta.dirname, 'ns-runner.ts')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const r = JSON.parse(line) as TimedRun & { id: number };
      this.pending.get(r.id)?.(r);
      this.pending.delete(r.id);
    });
  }

  run(binary: string, env: Record<string, string | undefined>, stdin: string): Promise<TimedRun> {
    const id = this.next++;
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.stdin!.write(`${JSON.stringify({ id, binary, env: clean, stdin })}\n`);
    });
  }

  /** Milliseconds from `startNs` (process.hrtime.bigint() taken here) to the run's exit. */
  static since(startNs: bigint, r: TimedRun): number {
    return Number(BigInt(r.endNs) - startNs) / 1e6;
  }

  close(): void {
    this.child.stdin!.end();
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}
