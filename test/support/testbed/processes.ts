import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { AGENT_BINARY, SHIM_BINARY } from '../cni-driver.ts';
import { killProcessesInside } from '../signal-undo.ts';

/** Process and namespace bookkeeping for the test bed: waiting, listing, killing by pid. */

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves when the child has exited (at once if it already has). */
export function trackExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

export function isRunning(child: ChildProcess | undefined): boolean {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Resolves with the first stdout line of a child, or rejects on exit/timeout. */
export function firstLine(child: ChildProcess, what: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`${what}: no output after ${timeoutMs} ms: ${err}`)),
      timeoutMs,
    );
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready: ${err}`));
    });
  });
}

/**
 * dist/ is deleted and recreated by every build (`scripts/build.ts`); on a machine where someone is
 * rebuilding, wait for both binaries rather than failing half-way through start-up.
 */
export async function waitForBuild(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(AGENT_BINARY) || !existsSync(SHIM_BINARY)) {
    if (Date.now() > deadline)
      throw new Error(`${AGENT_BINARY} or ${SHIM_BINARY} missing: run \`npm run build\``);
    await sleep(250);
  }
}

/** Runs async tasks with at most `limit` in flight; results in input order. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Named namespaces starting with `prefix-`, as the kernel (iproute2) lists them. */
export function namespacesWithPrefix(prefix: string): string[] {
  // stderr ignored: `ip netns list` complains about nsids of namespaces being deleted meanwhile.
  const out = execFileSync('ip', ['netns', 'list'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${prefix}-`));
}

/** SIGKILLs every process inside a namespace. */
export function killNamespaceProcesses(ns: string): void {
  killProcessesInside([ns]);
}

/** Live processes (other than this one) whose command line contains `needle`. */
export function processesMentioning(needle: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      continue;
    }
    if (cmdline.includes(needle)) out.push({ pid: Number(pid), cmdline });
  }
  return out;
}
