/**
 * The CNI shim's decisions, as one function over its inputs: environment, stdin, a socket client and
 * a spool writer come in as parameters, the CNI output and exit status go out. No process globals,
 * so tests run it in-process and in parallel; cmd/cni/main.ts only supplies the process's IO.
 *
 * Per verb, when the agent cannot be asked:
 *   VERSION          answered here, never asks the agent;
 *   ADD, CHECK, GC   agent unreachable or hung up -> 11 (try again later); no answer in time -> 105;
 *                    an ADD waits for an unreachable or hung-up agent first while its ready marker
 *                    is fresh (a restart: STATUS says ready meanwhile, so the runtime sends pods),
 *                    bounded;
 *   STATUS           agent unreachable, hung up or no answer in time -> 50 (plugin not available);
 *                    either way success while the agent's ready marker is fresh: a restart, not an
 *                    outage (ready-marker.ts);
 *   DEL              unreachable, hung up or no answer in time -> spool the DEL and report success:
 *                    a failed DEL makes the runtime retry forever, DEL is idempotent, and the agent
 *                    replays the spool. Only an error the agent itself returns fails a DEL.
 *
 * The environment (CNI_CONTAINERID and the rest) is the agent's to check for the verbs it answers: it
 * refuses an invalid one with the same error and logs the call, so an operator sees it. The shim
 * checks it only when it fails without the agent's answer (agent down, bad config), and then the
 * environment's error comes first, as if checked before anything else. Checking it (and working
 * out the error's cniVersion) on every call cost the shim's run 0.3-0.45 ms: in a process that runs
 * its code once, each first call of a function costs tens of microseconds (bench/HISTORY.md).
 *
 * Synchronous throughout, ports included: the binary's IO blocks anyway (cmd/cni/libc.ts), so a
 * promise would only wrap a value that is already there, and in a fresh process the first async
 * call alone costs ~0.3 ms (bench/HISTORY.md).
 */
import { type CniCommand, isCniCommand, parseCniEnv } from '../cni/env.ts';
import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import { LATEST_VERSION, versionReply } from '../cni/version.ts';
import { checkWithoutAgent, errorVersionOf, parseShimConfig, type ShimConfig } from './config.ts';
import { type AgentResponse, decodeResponse, encodeRequest } from './protocol.ts';
import { markerVouches, readyMarkerPath } from './ready-marker.ts';
import { type Transport, TransportError } from './transport.ts';

/** Connecting to a local unix socket is immediate when the agent is up; two seconds is generous. */
export const CONNECT_TIMEOUT_MS = 2_000;

/**
 * How long an ADD waits at most for a restarting agent to listen again (and never more than half
 * the call's timeout): an agent pod's restart takes ~10-15 s. Past it, 11 as without the marker.
 */
export const RESTART_WAIT_MS = 30_000;
/** How often a waiting ADD tries to connect again. */
export const RESTART_RETRY_MS = 250;

/** Whole-call timeout per verb when the config sets no `timeoutMs` (readonly, not frozen: see env.ts). */
export const DEFAULT_TIMEOUT_MS: Readonly<Record<Exclude<CniCommand, 'VERSION'>, number>> = {
  ADD: 60_000,
  DEL: 60_000,
  CHECK: 60_000,
  GC: 60_000,
  STATUS: 10_000,
};

export interface SpoolPort {
  /** Durably records a DEL request line; returns where. Throws CniError IO_FAILURE when it cannot. */
  spoolDel(dir: string, containerId: string, ifname: string, requestLine: string): string;
}

export interface ShimIo {
  env: Readonly<Record<string, string | undefined>>;
  /** The network config text, or a reader for it (a failing reader becomes code 5). */
  stdin: string | (() => string);
  connect: Transport;
  spool: SpoolPort;
  /** The age in ms of the file at `path` (the agent's ready marker), undefined when there is none. */
  fileAgeMs?: (path: string) => number | undefined;
  /**
   * Blocks for `ms`, and a monotonic clock in ms: an ADD waits with them for a restarting agent.
   * Without them it does not wait.
   */
  sleep?: (ms: number) => void;
  now?: () => number;
}

export interface ShimOutput {
  /** What to print on stdout: the CNI result, an error object, or nothing. */
  stdout: string;
  /** Rare diagnostics for stderr (never part of the CNI output); empty when there are none. */
  stderr: string;
  exitCode: 0 | 1;
}

function success(stdout = '', stderr = ''): ShimOutput {
  return { stdout, stderr, exitCode: 0 };
}

function failure(err: unknown, cniVersion: string): ShimOutput {
  const e = toCniError(err);
  return { stdout: `${JSON.stringify(e.toJSON(cniVersion))}\n`, stderr: '', exitCode: 1 };
}

function unreachableMessage(socket: string, reason: string): string {
  return `trellis agent is not reachable at ${socket} (${reason}); is the trellis DaemonSet pod running on this node?`;
}

type AgentVerb = Exclude<CniCommand, 'VERSION'>;

/** The verbs the agent answers; undefined for VERSION and for a missing or unknown CNI_COMMAND. */
function agentVerb(command: string | undefined): AgentVerb | undefined {
  return command !== undefined && isCniCommand(command) && command !== 'VERSION' ? command : undefined;
}

/** The environment's own error, if it has one. */
function envError(env: ShimIo['env']): CniError | undefined {
  try {
    parseCniEnv(env);
    return undefined;
  } catch (err) {
    return toCniError(err);
  }
}

export function runShim(io: ShimIo): ShimOutput {
  // stdin first: even an environment error should carry the config's cniVersion.
  let stdin: string | undefined;
  let stdinError: unknown;
  try {
    stdin = typeof io.stdin === 'string' ? io.stdin : io.stdin();
  } catch (err) {
    stdinError = err;
  }
  // Only VERSION and failures need it: one parse of stdin fewer on the way to the agent.
  const errorVersion = (): string => (stdin === undefined ? LATEST_VERSION : errorVersionOf(stdin));
  const command = agentVerb(io.env.CNI_COMMAND);
  try {
    if (command === undefined || stdin === undefined) {
      const env = parseCniEnv(io.env);
      if (env.command === 'VERSION') {
        return success(`${JSON.stringify(versionReply(errorVersion()))}\n`);
      }
      if (stdinError instanceof CniError) throw stdinError; // not UTF-8 (code 6)
      throw new CniError(
        CniCode.IO_FAILURE,
        `could not read the network configuration from stdin: ${stdinError instanceof Error ? stdinError.message : String(stdinError)}`,
      );
    }
    const config = parseShimConfig(stdin, command);
    return callAgent(io, command, config, requestLine(io.env, command, stdin));
  } catch (err) {
    return failure(envError(io.env) ?? err, errorVersion());
  }
}

/**
 * What a DEL reads of its configuration: the network's identity (the agent leaves another network's
 * attachment alone) and the shim's own settings.
 */
const DEL_FIELDS = ['cniVersion', 'name', 'type', 'socket', 'spoolDir', 'timeoutMs'] as const;

/**
 * The request line. A DEL too large for the agent (a long chain's prevResult, a runtime's bulky
 * runtimeConfig or args) goes with only the fields DEL reads rather than fail for good: a runtime
 * would retry it forever, the lease held.
 */
function requestLine(env: ShimIo['env'], command: AgentVerb, stdin: string): string {
  try {
    return encodeRequest(env, stdin);
  } catch (err) {
    if (command !== 'DEL' || !(err instanceof CniError) || err.code !== CniCode.BAD_REQUEST) throw err;
    const conf = JSON.parse(stdin) as Record<string, unknown>;
    const kept: Record<string, unknown> = {};
    for (const field of DEL_FIELDS) if (conf[field] !== undefined) kept[field] = conf[field];
    return encodeRequest(env, JSON.stringify(kept));
  }
}

/** Throws the environment's error when the agent could not be asked (runShim reports it). */
function callAgent(io: ShimIo, command: AgentVerb, config: ShimConfig, line: string): ShimOutput {
  const totalMs = config.timeoutMs ?? DEFAULT_TIMEOUT_MS[command];
  let answer: string;
  let waited: { ms: number; readyAgoS: number } | undefined;
  try {
    answer = connectThroughRestart(io, command, config, line, totalMs, (w) => {
      waited = w;
    });
  } catch (err) {
    if (!(err instanceof TransportError)) return failure(err, config.cniVersion);
    // The agent would have named a bad variable or config; without it, the shim does, before any spooling.
    const env = parseCniEnv(io.env);
    try {
      checkWithoutAgent(config, command);
    } catch (e) {
      return failure(e, config.cniVersion);
    }
    if (command === 'DEL') return spoolDel(io, config, env.containerId, env.ifname, line, err);
    const error = transportCniError(command, config.socket, totalMs, err, waited);
    if (command === 'STATUS') {
      // A restart, not an outage, while the agent's ready marker is fresh (ready-marker.ts).
      const age = io.fileAgeMs?.(readyMarkerPath(config.socket));
      if (markerVouches(age)) {
        const s = Math.max(0, Math.round((age ?? 0) / 1000));
        return success(
          '',
          `${error.message}; it was ready ${s} s ago, so STATUS answers ready while it restarts\n`,
        );
      }
    }
    return failure(error, config.cniVersion);
  }

  let response: AgentResponse;
  try {
    response = decodeResponse(answer);
  } catch (err) {
    return failure(err, config.cniVersion);
  }
  if (!response.ok) {
    const { code, msg, details } = response.error;
    return failure(new CniError(code, msg, details), config.cniVersion);
  }
  if (command !== 'ADD') return success(); // DEL, CHECK, STATUS and GC print nothing on success.
  const result = response.result;
  if (typeof result !== 'object' || result === null || Array.isArray(result)) {
    return failure(
      new CniError(CniCode.INTERNAL, 'the trellis agent answered ADD without a result object'),
      config.cniVersion,
    );
  }
  return success(`${JSON.stringify(result)}\n`);
}

/**
 * Connects and asks; an ADD that finds no agent listening (restartMayAnswer), or whose agent closed the connection
 * without an answer (it died or stopped with the call in its backlog or in flight), while the
 * agent's ready marker is fresh (a restart) tries again every RESTART_RETRY_MS, within
 * RESTART_WAIT_MS and half its timeout. Asking again is safe: an ADD repeated for the same
 * attachment answers with what is in place or sets up what a cut-off one left half done. A timeout
 * is not tried again: an agent that is there but slow would only get the call twice. `onWait` hears
 * how long it waited when it gives up.
 */
function connectThroughRestart(
  io: ShimIo,
  command: AgentVerb,
  config: ShimConfig,
  line: string,
  totalMs: number,
  onWait: (waited: { ms: number; readyAgoS: number }) => void,
): string {
  const ask = (ms: number): string =>
    io.connect(config.socket, line, { connectMs: Math.min(CONNECT_TIMEOUT_MS, ms), totalMs: ms });
  const { sleep, now } = io;
  if (command !== 'ADD' || sleep === undefined || now === undefined) return ask(totalMs);
  // From the first attempt: a connect that waited on a full backlog (up to CONNECT_TIMEOUT_MS) is part
  // of the call's time, and of the wait.
  const started = now();
  let readyAgoS: number | undefined;
  let left = totalMs;
  // An agent that hung up on this call is asked once more, not again: one this very request made
  // crash would be made to crash by it at every restart, cutting every other call off each time.
  let hungUp = false;
  for (;;) {
    try {
      return ask(left);
    } catch (err) {
      if (!(err instanceof TransportError) || !restartMayAnswer(err)) throw err;
      if (err.kind === 'closed') {
        if (hungUp) throw err;
        hungUp = true;
      }
      if (readyAgoS === undefined) {
        const age = io.fileAgeMs?.(readyMarkerPath(config.socket));
        if (!markerVouches(age)) throw err;
        readyAgoS = Math.max(0, Math.round((age ?? 0) / 1000));
      }
      const waitedMs = now() - started;
      if (waitedMs + RESTART_RETRY_MS > Math.min(RESTART_WAIT_MS, totalMs / 2)) {
        onWait({ ms: Math.round(waitedMs), readyAgoS });
        throw err;
      }
      sleep(RESTART_RETRY_MS);
      left = Math.max(1, Math.round(totalMs - (now() - started)));
    }
  }
}

/**
 * What an agent's restart ends: no listener on the socket (ECONNREFUSED: the old agent's file; ENOENT:
 * none yet), a full backlog (the connect timed out), an agent that hung up without answering. Not a
 * timeout (an agent that is there but slow would get the call twice), and not a socket this process
 * may not use (EACCES, ENOTSOCK...), which no restart changes.
 */
function restartMayAnswer(err: TransportError): boolean {
  if (err.kind === 'closed') return true;
  if (err.kind !== 'unreachable') return false;
  return (
    err.reason === 'ECONNREFUSED' || err.reason === 'ENOENT' || err.reason.startsWith('connect timed out')
  );
}

function transportCniError(
  command: CniCommand,
  socket: string,
  totalMs: number,
  err: TransportError,
  waited?: { ms: number; readyAgoS: number },
): CniError {
  if (err.kind === 'timeout') {
    return new CniError(
      // STATUS speaks the spec's "not available" whatever kept the agent from answering.
      command === 'STATUS' ? CniCode.NOT_AVAILABLE : CniCode.AGENT_TIMEOUT,
      `trellis agent at ${socket} did not answer ${command} within ${totalMs} ms`,
      'raise "timeoutMs" in the network config if the agent is merely slow',
      { cause: err },
    );
  }
  const msg =
    err.kind === 'unreachable'
      ? unreachableMessage(socket, err.reason) +
        (waited === undefined
          ? ''
          : ` It was ready ${waited.readyAgoS} s before this call, which waited ${waited.ms} ms for it to come back.`)
      : `trellis agent at ${socket} closed the connection without answering ${command} (${err.reason}); it may be restarting`;
  const code = command === 'STATUS' ? CniCode.NOT_AVAILABLE : CniCode.TRY_AGAIN_LATER;
  return new CniError(code, msg, undefined, { cause: err });
}

function spoolDel(
  io: ShimIo,
  config: ShimConfig,
  containerId: string | undefined,
  ifname: string | undefined,
  line: string,
  err: TransportError,
): ShimOutput {
  const why =
    err.kind === 'unreachable'
      ? unreachableMessage(config.socket, err.reason)
      : err.kind === 'timeout'
        ? `trellis agent at ${config.socket} did not answer DEL in time`
        : `trellis agent at ${config.socket} closed the connection without answering DEL (${err.reason})`;
  if (containerId === undefined || ifname === undefined) {
    // parseCniEnv requires both for DEL; reaching here is a bug, not a runtime mistake.
    return failure(
      new CniError(CniCode.INTERNAL, `${why}; cannot spool a DEL without container id and ifname`),
      config.cniVersion,
    );
  }
  try {
    const file = io.spool.spoolDel(config.spoolDir, containerId, ifname, line);
    return success('', `${why}; DEL recorded in ${file} for the agent to replay\n`);
  } catch (spoolErr) {
    const e = toCniError(spoolErr);
    return failure(
      new CniError(CniCode.IO_FAILURE, `${why}; and the DEL could not be spooled: ${e.message}`, e.details),
      config.cniVersion,
    );
  }
}
