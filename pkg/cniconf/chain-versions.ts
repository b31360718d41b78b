import { spawn } from 'node:child_process';
import { closeSync, lstatSync, openSync, readlinkSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { KNOWN_CNI_VERSIONS } from './render.ts';

/**
 * Whether the CNI binaries the published config list needs run, and which of KNOWN_CNI_VERSIONS the
 * chained ones speak, asked the way a runtime asks: VERSION. libcni >= 1.2 sends the highest
 * `cniVersions` entry to every plugin in the list, so 1.1.0 (GC, STATUS) is advertised only when the
 * installed portmap accepts it too; Debian's 1.1.1 does not. A binary that cannot run, or a chained
 * one without 1.0.0, keeps the list unpublished: the runtime would fail every pod in it.
 *
 * The agent runs in a container, the runtime on the host: a binary linked against a newer glibc than
 * the host's runs here and not there. So with the host's mount namespace at hand (--host-proc) the
 * binary runs there, through nsenter, from an fd the agent opened (no path needs translating).
 */

/**
 * PID 1's mount namespace under the host's /proc as mounted at `hostProc` (--host-proc): where the
 * kubelet's runtime (containerd, CRI-O) runs the CNI binaries. Undefined without one ('').
 */
export function runtimeMountNs(hostProc: string): string | undefined {
  return hostProc === '' ? undefined : join(hostProc, '1', 'ns', 'mnt');
}

/** The known versions every list in `supported` has. */
export function commonVersions(supported: readonly (readonly string[])[]): string[] {
  return KNOWN_CNI_VERSIONS.filter((v) => supported.every((list) => list.includes(v)));
}

/**
 * A plugin's `supportedVersions`, or why it gave none. `transient`: it could not be asked for want of
 * a process or fd for a moment, which says nothing of the binary.
 */
export type VersionAnswer = { versions: string[] } | { problem: string; transient?: true };

export interface VersionProbeOptions {
  /** A mount namespace (a /proc/PID/ns/mnt path) to run the binary in: the runtime's. */
  mountNs?: string;
  timeoutMs?: number;
  /** The nsenter to run (default: util-linux's, by PATH). */
  nsenter?: string;
}

/** nsenter could not enter the namespace (exit 1 and one of its own messages): not the binary's fault. */
export class MountNsUnreachable extends Error {
  override readonly name = 'MountNsUnreachable';
}

const NSENTER_FAILED = /^nsenter: (cannot open|reassociate|setns|failed to open|neither filename)/m;
/** strerror() of the errnos in TRANSIENT_SPAWN_ERRORS, as nsenter prints them. */
const NSENTER_TRANSIENT =
  /: (Too many open files|Too many open files in system|Cannot allocate memory|Resource temporarily unavailable)$/m;
/** nsenter's own exec failing: the namespace was entered, the binary cannot start in it. */
const NSENTER_EXEC_FAILED = /^nsenter: failed to execute [^\n]*?: ([^:\n]+)$/m;
/** spawn failing for want of a resource that comes back: the binary is asked again at the next check. */
const TRANSIENT_SPAWN_ERRORS = new Set(['EAGAIN', 'EMFILE', 'ENFILE', 'ENOMEM']);
/** The fd the binary is passed as, in the nsenter child: /proc/self/fd/3 is the binary itself. */
const BINARY_FD = 3;

/**
 * VERSION from one binary. Rejects with MountNsUnreachable only when `mountNs` cannot be entered;
 * every other failure is an answer with a problem that says what happened.
 */
export async function pluginVersions(path: string, opts: VersionProbeOptions = {}): Promise<VersionAnswer> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  let fd: number | undefined;
  /**
   * Run by its path in `mountNs`: a symlink, which the runtime follows in its own file system. Here
   * it may dangle (a host path this container does not mount) or, worse, name the image's own copy
   * of the plugin (Debian's /usr/lib/cni is in both), which would vouch for the host's.
   */
  let byPath = opts.mountNs !== undefined && isSymlink(path);
  if (opts.mountNs !== undefined && !byPath) {
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== undefined && TRANSIENT_SPAWN_ERRORS.has(code))
        return { problem: `could not be checked: no fd could be had (${code})`, transient: true };
      if (!(code === 'ENOENT' && isSymlink(path)))
        return { problem: `cannot be opened: ${code ?? String(err)}` };
      // Made a symlink since the check above: run where the runtime would run it, as one.
      byPath = true;
    }
  }
  try {
    const nsenter = opts.nsenter ?? 'nsenter';
    const run = await runVersion(
      path,
      fd,
      byPath ? opts.mountNs : undefined,
      timeoutMs,
      nsenter,
      opts.mountNs,
    );
    if ('spawnError' in run) {
      // Out of processes, fds or memory for a moment: nobody's fault for good. Asked again next time;
      // taken as the namespace being out of reach, it would check in the agent's own for good.
      if (TRANSIENT_SPAWN_ERRORS.has(run.spawnError))
        return {
          problem: `could not be checked: no process could be started (${run.spawnError})`,
          transient: true,
        };
      // nsenter itself missing: the namespace cannot be entered, which is no binary's fault.
      if (fd !== undefined || byPath)
        throw new MountNsUnreachable(`nsenter cannot be run: ${run.spawnError}`);
      return { problem: `cannot be run: ${run.spawnError}` };
    }
    // nsenter names the binary by its fd; the operator knows it by its path.
    const stderr = run.stderr.replaceAll(`/proc/self/fd/${BINARY_FD}`, path);
    if (opts.mountNs !== undefined && run.code === 1 && NSENTER_FAILED.test(stderr)) {
      // Out of fds or memory for a moment: asked again next time, not given up on for good.
      if (NSENTER_TRANSIENT.test(stderr))
        return { problem: `could not be checked: ${firstLine(stderr)}`, transient: true };
      throw new MountNsUnreachable(firstLine(stderr));
    }
    const notExecuted = opts.mountNs === undefined ? null : NSENTER_EXEC_FAILED.exec(stderr);
    if (notExecuted !== null && byPath && notExecuted[1] === 'No such file or directory') {
      return {
        problem: `is a symlink to ${readlinkSync(path)}, which the runtime's mount namespace does not have (or cannot start: its interpreter or loader missing there)`,
      };
    }
    if (notExecuted !== null) {
      const why = notExecuted[1]!;
      return {
        problem: `cannot be executed in the runtime's mount namespace: ${why}${why === 'No such file or directory' ? ' (its interpreter or dynamic loader is missing there)' : ''}`,
      };
    }
    if (run.timedOut) return { problem: `did not answer VERSION within ${timeoutMs / 1000} s` };
    if (run.signal !== null) return { problem: `was killed by ${run.signal}` };
    if (run.code !== 0) {
      const why = firstLine(stderr) || firstLine(errorMessage(run.stdout) ?? run.stdout);
      return { problem: `exited with status ${run.code}${why === '' ? '' : `: ${why}`}` };
    }
    return parseVersionReply(run.stdout);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The answer to VERSION: its supportedVersions, or what is wrong with it. */
export function parseVersionReply(stdout: string): VersionAnswer {
  let reply: unknown;
  try {
    reply = JSON.parse(stdout);
  } catch {
    return {
      problem: `answered VERSION with something other than JSON: ${JSON.stringify(stdout.slice(0, 80))}`,
    };
  }
  const error = errorMessage(stdout);
  if (error !== undefined) return { problem: `answered VERSION with an error: ${error}` };
  const list = (reply as { supportedVersions?: unknown } | null)?.supportedVersions;
  if (!Array.isArray(list)) return { problem: 'answered VERSION without supportedVersions' };
  return { versions: list.filter((v): v is string => typeof v === 'string') };
}

/** A CNI error object's code and message, when `text` is one. */
function errorMessage(text: string): string | undefined {
  try {
    const e = JSON.parse(text) as { code?: unknown; msg?: unknown };
    return typeof e?.code === 'number' ? `code ${e.code}: ${String(e.msg ?? '')}` : undefined;
  } catch {
    return undefined;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.trim() ?? '';
}

type Run =
  | { spawnError: string }
  | { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean };

/**
 * VERSION from the binary: passed as `fd` and run in `mountNs`; or, without an fd, run by `path`, in
 * `byPathIn` when set (the runtime's mount namespace), else here.
 */
function runVersion(
  path: string,
  fd: number | undefined,
  byPathIn: string | undefined,
  timeoutMs: number,
  nsenter: string,
  mountNs?: string,
): Promise<Run> {
  return new Promise((resolve) => {
    const [file, args] =
      fd !== undefined
        ? [nsenter, [`--mount=${mountNs}`, '--', `/proc/self/fd/${BINARY_FD}`]]
        : byPathIn !== undefined
          ? [nsenter, [`--mount=${byPathIn}`, '--', path]]
          : [path, []];
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(file, args, {
        env: { CNI_COMMAND: 'VERSION' },
        stdio: fd === undefined ? 'pipe' : ['pipe', 'pipe', 'pipe', fd],
        // Its own process group, killed whole at the timeout: spawn's own timeout sends one SIGTERM to
        // the binary alone, which a plugin may ignore, and a child it started keeps stdout open (no
        // 'close' ever). Either hung the publication, and with it every later reconcile pass.
        detached: true,
      });
    } catch (err) {
      // Node throws some spawn failures (ENOMEM among them) rather than emitting 'error'.
      resolve({ spawnError: (err as NodeJS.ErrnoException).code ?? String(err) });
      return;
    }
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let grace: NodeJS.Timeout | undefined;
    let exited: NodeJS.Timeout | undefined;
    const done = (run: Run): void => {
      clearTimeout(killer);
      clearTimeout(grace);
      clearTimeout(exited);
      resolve(run);
    };
    const dropPipes = (): void => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    };
    const killer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
      // A process that left the group (setsid) may hold stdout still: answer without it.
      grace = setTimeout(() => {
        dropPipes();
        done({ code: null, signal: 'SIGKILL', stdout, stderr, timedOut: true });
      }, KILL_GRACE_MS);
    }, timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < 65_536) stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65_536) stderr += d;
    });
    child.on('error', (err: NodeJS.ErrnoException) => done({ spawnError: err.code ?? err.message }));
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr, timedOut }));
    // Exited, but a process it left behind holds stdout open: judged from what it wrote by then.
    child.on('exit', (code, signal) => {
      if (timedOut) return;
      exited = setTimeout(() => {
        // What it left running in its group goes too: the agent, its container's PID 1, would keep
        // reaping nothing of it, every pass.
        killGroup(child.pid);
        dropPipes();
        done({ code, signal, stdout, stderr, timedOut: false });
      }, EXIT_GRACE_MS);
    });
    // A plugin may answer VERSION and exit without reading stdin; writing to its closed pipe then fails
    // with EPIPE, which without a listener is an uncaught 'error' that kills the agent. The answer is
    // judged from stdout and the exit alone.
    child.stdin?.on('error', () => {});
    child.stdin?.end(JSON.stringify({ cniVersion: '1.0.0' }));
  });
}

/** After the timeout's SIGKILL, how long stdout may stay open before the answer is given without it. */
const KILL_GRACE_MS = 1_000;
/** After the plugin exits, how long its stdout may stay open (held by a process it left) before judging. */
const EXIT_GRACE_MS = 200;

/** SIGKILL to the process group `pid` leads (spawned detached); gone already is fine. */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group has exited.
  }
}

/** One binary of the chain: its path, and whether it is a plugin of the list (its versions count). */
export interface ChainBinary {
  path: string;
  chained: boolean;
}

export interface ChainCheck {
  /** The versions every chained binary speaks; what the list may advertise. */
  versions: string[];
  /**
   * Binaries that cannot serve the list, and why; the list must not be published while any is here.
   * `transient`: not asked for want of a process for a moment (asked again at the next check).
   */
  problems: { binary: string; problem: string; transient?: true }[];
  /** Why the binaries ran in the agent's mount namespace rather than the runtime's, when they did. */
  hostUnreachable?: string;
}

/**
 * Runs each binary's VERSION, in `mountNs` when given and enterable. A good answer is cached by the
 * file's identity, size and mtime (the agent checks after every pass); a problem is asked again
 * next time, so a fixed binary is seen without a restart.
 */
export class ChainVersionProbe {
  private readonly cache = new Map<string, { key: string; versions: string[] }>();
  private mountNs: string | undefined;
  /** Why `mountNs` could not be entered, once it could not: not tried again (a permission stays). */
  private unreachable: string | undefined;

  private readonly nsenter: string | undefined;

  constructor(opts: { mountNs?: string; nsenter?: string } = {}) {
    this.mountNs = opts.mountNs;
    this.nsenter = opts.nsenter;
  }

  async check(binaries: readonly ChainBinary[]): Promise<ChainCheck> {
    const answers = await Promise.all(
      binaries.map(async (b) => {
        try {
          return await this.one(b.path, this.mountNs);
        } catch (err) {
          if (!(err instanceof MountNsUnreachable)) throw err;
          this.unreachable ??= err.message;
          this.mountNs = undefined;
          return this.one(b.path, undefined);
        }
      }),
    );
    const hostUnreachable = this.unreachable;
    const problems: ChainCheck['problems'] = [];
    const lists: string[][] = [];
    for (const [i, b] of binaries.entries()) {
      const a = answers[i]!;
      if ('problem' in a) {
        problems.push({ binary: b.path, problem: a.problem, ...(a.transient ? { transient: true } : {}) });
        if (b.chained) lists.push([]); // it speaks nothing, as far as the list is concerned
      } else if (b.chained) {
        if (!a.versions.includes('1.0.0')) {
          problems.push({
            binary: b.path,
            problem: `speaks CNI ${a.versions.join(', ') || 'no version'}, not 1.0.0, the version the config list is written in`,
          });
        }
        lists.push(a.versions);
      }
    }
    return {
      versions: commonVersions(lists),
      problems,
      ...(hostUnreachable === undefined ? {} : { hostUnreachable }),
    };
  }

  private async one(path: string, mountNs: string | undefined): Promise<VersionAnswer> {
    if (mountNs !== undefined && isSymlink(path)) {
      // A link the runtime follows on the host: asked there, each time. What it names here is not
      // what it names there, so nothing here can key a cached answer (one spawn a pass, for a link).
      return pluginVersions(path, {
        mountNs,
        ...(this.nsenter === undefined ? {} : { nsenter: this.nsenter }),
      });
    }
    let key: string;
    try {
      const st = await stat(path);
      key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${mountNs ?? ''}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? 'is missing' : `cannot be read: ${code ?? String(err)}` };
    }
    const hit = this.cache.get(path);
    if (hit !== undefined && hit.key === key) return { versions: hit.versions };
    const answer = await pluginVersions(path, {
      ...(mountNs === undefined ? {} : { mountNs }),
      ...(this.nsenter === undefined ? {} : { nsenter: this.nsenter }),
    });
    if ('versions' in answer) this.cache.set(path, { key, versions: answer.versions });
    else if (answer.transient !== true) this.cache.delete(path);
    return answer;
  }
}

/** "portmap: exited with status 1: …" for a log line or a readiness reason. */
export function describeChainProblems(problems: ChainCheck['problems']): string {
  return problems.map((p) => `${basename(p.binary)} ${p.problem}`).join('; ');
}
