/**
 * The nft command as an adapter: argv only (never a shell), ruleset on stdin, a timeout, and failures typed
 * with nft's own stderr. It runs nft in the agent's namespace; tests reach a test namespace by injecting
 * an argv prefix such as ['ip', 'netns', 'exec', NAME].
 */

import { spawn } from 'node:child_process';
import { renderDeleteTable, validateTableName } from './render.ts';

export interface NftRunnerOptions {
  /** The nft binary; 'nft' (looked up on PATH) by default. */
  nftPath?: string;
  /** Prepended to every command line, e.g. ['ip', 'netns', 'exec', 'trl-node-abc123']. */
  argvPrefix?: string[];
  /** Kill nft after this long; 10 s by default (a normal transaction takes milliseconds). */
  timeoutMs?: number;
}

export class NftError extends Error {
  readonly argv: string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderr: string;
  readonly timedOut: boolean;

  constructor(
    argv: string[],
    r: { exitCode: number | null; signal: string | null; stderr: string; timedOut: boolean },
    cause?: unknown,
  ) {
    // A binary that cannot start (ENOENT: nft not installed or not on PATH, EACCES) closes with a
    // negative errno as its exit code: said in words, since the cause is not part of the message.
    const notStarted = cause instanceof Error ? startFailure(cause, argv) : undefined;
    const why = r.timedOut
      ? 'timed out'
      : notStarted !== undefined
        ? notStarted
        : r.signal !== null
          ? `killed by ${r.signal}`
          : r.exitCode !== null
            ? `exit code ${r.exitCode}`
            : 'could not start';
    const detail = r.stderr.trim();
    super(
      `${argv.join(' ')}: ${why}${detail === '' ? '' : `: ${detail}`}`,
      cause === undefined ? {} : { cause },
    );
    this.name = 'NftError';
    this.argv = argv;
    this.exitCode = r.exitCode;
    this.signal = r.signal;
    this.stderr = r.stderr;
    this.timedOut = r.timedOut;
  }
}

/** Why a process could not start, from spawn's error: its code, and for ENOENT what is missing. */
function startFailure(e: Error, argv: readonly string[]): string | undefined {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === undefined) return undefined;
  if (code === 'ENOENT')
    return `could not start: ${argv[0]} not found (ENOENT; is nftables installed and on PATH?)`;
  return `could not start: ${code}`;
}

/** How long an exited nft's pid still names our transactions: notifications are read within ms. */
const PID_MEMORY_MS = 10_000;

export class NftRunner {
  private readonly nftPath: string;
  private readonly prefix: readonly string[];
  private readonly timeoutMs: number;
  /** pid -> until when it counts as ours (Infinity while it runs). */
  private readonly pids = new Map<number, number>();

  constructor(opts: NftRunnerOptions = {}) {
    this.nftPath = opts.nftPath ?? 'nft';
    this.prefix = Object.freeze([...(opts.argvPrefix ?? [])]);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /**
   * True when `pid` is (or within the last PID_MEMORY_MS was) an nft this runner started: the process
   * that committed a transaction, as its nf_tables notifications name it. With an argvPrefix such as
   * `ip netns exec`, which execs nft in place, the pid is the same.
   */
  ran(pid: number): boolean {
    const now = performance.now();
    for (const [p, until] of this.pids) if (until < now) this.pids.delete(p);
    return this.pids.has(pid);
  }

  /** Runs nft with args; resolves with stdout, rejects with NftError. */
  run(args: string[], input?: string): Promise<string> {
    const argv = [...this.prefix, this.nftPath, ...args];
    const [cmd, ...rest] = argv as [string, ...string[]];
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, rest, { stdio: ['pipe', 'pipe', 'pipe'], timeout: this.timeoutMs });
      let timedOut = false;
      let spawnError: Error | undefined;
      // Listening first: a spawn that could not even make its pipes (EMFILE, ENFILE, EAGAIN) returns
      // a child without stdio and emits 'error' on the next tick, and an 'error' nobody listens to
      // would end the agent.
      child.on('error', (e) => {
        // ETIMEDOUT comes from the timeout option; ENOENT/EACCES when the binary cannot start.
        if ((e as NodeJS.ErrnoException).code === 'ETIMEDOUT') timedOut = true;
        else spawnError = e;
        if (stdio === undefined) {
          reject(new NftError(argv, { exitCode: null, signal: null, stderr: '', timedOut: false }, e));
        }
      });
      // (undefined then, despite the types' null)
      const { stdin, stdout, stderr } = child as Partial<typeof child>;
      const stdio = stdin && stdout && stderr ? { stdin, stdout, stderr } : undefined;
      if (stdio === undefined) return; // no 'close' follows: the 'error' above settles it
      const pid = child.pid;
      if (pid !== undefined) this.pids.set(pid, Number.POSITIVE_INFINITY);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      stdio.stdout.on('data', (b: Buffer) => out.push(b));
      stdio.stderr.on('data', (b: Buffer) => err.push(b));
      stdio.stdin.on('error', () => {
        // EPIPE when nft exits before reading all input; its exit status tells the story.
      });
      child.on('close', (exitCode, signal) => {
        // Its notifications may be read after it exited: remembered a while longer.
        if (pid !== undefined) this.pids.set(pid, performance.now() + PID_MEMORY_MS);
        const stderr = Buffer.concat(err).toString('utf8');
        if (signal !== null && !timedOut && child.killed) timedOut = true;
        if (exitCode === 0 && spawnError === undefined) {
          resolve(Buffer.concat(out).toString('utf8'));
        } else {
          reject(new NftError(argv, { exitCode, signal, stderr, timedOut }, spawnError));
        }
      });
      stdio.stdin.end(input ?? '');
    });
  }

  /** Applies a ruleset file as one atomic transaction (`nft -f -`). */
  async apply(ruleset: string): Promise<void> {
    await this.run(['-f', '-'], ruleset);
  }

  /** Parses and validates against the kernel without committing (`nft -c -f -`). */
  async check(ruleset: string): Promise<void> {
    await this.run(['-c', '-f', '-'], ruleset);
  }

  /** Removes our table; succeeds when it is already gone. */
  async deleteTable(tableName?: string): Promise<void> {
    await this.apply(renderDeleteTable(tableName));
  }

  /** Deletes our table; resolves false when there was none. */
  async deleteTableIfPresent(tableName?: string): Promise<boolean> {
    const t = validateTableName(tableName);
    try {
      await this.run(['delete', 'table', 'inet', t]);
      return true;
    } catch (e) {
      if (isNoSuchTable(e)) return false;
      throw e;
    }
  }

  /**
   * `nft -s list table inet NAME`: the table as the kernel holds it, without counter values
   * (stateless), so two listings of an unchanged table are equal byte for byte.
   */
  async snapshot(tableName?: string): Promise<string> {
    return this.run(['-s', 'list', 'table', 'inet', validateTableName(tableName)]);
  }

  /** `nft -j list table inet NAME` parsed; undefined when the table does not exist. */
  async listTable(tableName?: string): Promise<unknown[] | undefined> {
    const t = validateTableName(tableName);
    try {
      const out = await this.run(['-j', 'list', 'table', 'inet', t]);
      return (JSON.parse(out) as { nftables: unknown[] }).nftables;
    } catch (e) {
      if (isNoSuchTable(e)) return undefined;
      throw e;
    }
  }
}

/** nft's answer (ENOENT) when the table named does not exist. */
function isNoSuchTable(e: unknown): boolean {
  return e instanceof NftError && /No such file or directory/.test(e.stderr);
}
