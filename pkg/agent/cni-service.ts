import { setTimeout as sleep } from 'node:timers/promises';
import { type CniArgs, parseCniArgs } from '../cni/args.ts';
import { appendToPrevResult } from '../cni/chain-result.ts';
import { type CniEnv, isCniCommand, parseCniEnv } from '../cni/env.ts';
import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import { type NetConf, parseNetConf, versionRequestVersion } from '../cni/netconf.ts';
import { convertResult } from '../cni/result.ts';
import { checkVersionAllows, versionReply } from '../cni/version.ts';
import { PUBLISHED_NETWORK_NAME } from '../cniconf/render.ts';
import { addAttachment } from '../datapath/add.ts';
import { checkAttachment, expectedFromResult } from '../datapath/check.ts';
import { delAttachment } from '../datapath/del.ts';
import { gcAttachments } from '../datapath/gc.ts';
import type { KeyedMutex } from '../datapath/keyed-mutex.ts';
import { attachmentKey, hostVethName, shortId } from '../datapath/names.ts';
import { attachmentResult } from '../datapath/result.ts';
import type { DatapathDeps } from '../datapath/types.ts';
import { validateKey } from '../ipam/index.ts';
import type { Logger } from '../observe/logger.ts';
import { type AgentRequest, type AgentResponse, errorResponse, okResponse } from '../shim/protocol.ts';
import { type LineLevel, StatusLineLevel } from './status-line.ts';

export interface Readiness {
  /** Undefined when ready to serve ADD; otherwise why not (logged and returned to the runtime). */
  notReadyReason(): string | undefined;
  /**
   * While not ready: true when an agent was ready on this node moments ago (a fresh ready marker,
   * pkg/shim/ready-marker.ts), so STATUS answers ready through the restart, and an ADD waits for
   * readiness (bounded) instead of being refused.
   */
  restarting?(): boolean;
  /** Aborted when the agent stops: a waiting ADD stops waiting. */
  stopping?: AbortSignal;
}

/**
 * How long an ADD waits at most for a restarted agent to become ready, and never more than a quarter
 * of the call's timeout (the shim may have spent half of it waiting for the socket). The runtime sent
 * the pod because STATUS answered ready; a refusal would put the pod into the kubelet's back-off,
 * which outlasts the few seconds a restarted agent takes to become ready.
 */
export const RESTART_READY_WAIT_MS = 15_000;
const READY_POLL_MS = 50;
/** The shim's timeout of an ADD when the config sets none (pkg/shim/shim.ts DEFAULT_TIMEOUT_MS). */
const DEFAULT_ADD_TIMEOUT_MS = 60_000;

export interface CniCallRecord {
  verb: string;
  outcome: 'ok' | 'error';
  code: number | undefined;
  durationMs: number;
  /** GC: leases it released. */
  released?: number;
}

export interface CniServiceDeps {
  datapath: DatapathDeps;
  /** One lock per attachment, shared with the agent's host-end repairs (host-side-check.ts). */
  mutex: KeyedMutex;
  log: Logger;
  readiness: Readiness;
  /** MTU for pod interfaces when the network config sets none. */
  defaultMtu: () => number;
  /** MTU of pod traffic that leaves the node, when below the interface's (datapath/pod-routes.ts). */
  routeMtu?: () => number;
  /** This node's pod CIDRs, routed in the pod at the interface's full MTU. */
  nodeCidrs?: () => readonly string[];
  /** Called once per call, after the log line (metrics hook). */
  onCall?: (record: CniCallRecord) => void;
  /** DELs the shim spooled and the agent has not replayed yet (spool-drain.ts). */
  spooledDels?: SpooledDels;
  /** How long a call runs before it is said to be still running (STUCK_CALL_MS; tests shorten it). */
  stuckCallMs?: number;
}

/**
 * A call running this long is logged while it runs. An ADD may wait up to 15 s for readiness after a
 * restart and then do its ~ms of work; the shim gives up after 60 s by default.
 */
export const STUCK_CALL_MS = 30_000;

/**
 * The spool as the service needs it. A spooled DEL is a DEL the runtime already got success for, so
 * it comes before any later call for its attachment: an ADD of the same container and ifname (a
 * runtime that reuses container IDs) runs it first, and the replay of a spooled DEL that such an ADD
 * already ran is skipped, so it can never delete the attachment the ADD made.
 */
export interface SpooledDels {
  has(containerId: string, ifname: string): boolean;
  /** The network (config name) of the spooled DEL, undefined when it cannot be read. */
  network?(containerId: string, ifname: string): string | undefined;
  remove(containerId: string, ifname: string): Promise<void>;
}

/** `spooled`: the request is a spooled DEL being replayed (spool-drain.ts). */
export interface CniCallOptions {
  /** A DEL the shim spooled while the agent was away, replayed now. */
  spooled?: boolean;
  /**
   * Settles once the answer was written: 'heard'; 'plugin-gone' when the plugin had closed its
   * connection, so the runtime gave up on the call (its timeout, or it killed the plugin) and never
   * saw the answer; 'agent-stopped' when the agent itself cut the connection at the end of its stop
   * grace (the plugin asks the next agent, or reports 11).
   */
  answered?: Promise<AnswerFate>;
}

export type AnswerFate = 'heard' | 'plugin-gone' | 'agent-stopped';

export type CniHandler = (req: AgentRequest, opts?: CniCallOptions) => Promise<AgentResponse>;

/**
 * The agent's side of every CNI call: parse, dispatch to the datapath under a per-attachment lock,
 * convert the result to the runtime's version, and write exactly one log line with verb, pod,
 * addresses, duration and outcome (right after the answer has been written).
 */
export function createCniService(deps: CniServiceDeps): {
  handle: CniHandler;
  /** Attachments with work in flight (queued or running) through `locked`: GC and the sweeps skip them. */
  busyKeys: ReadonlySet<string>;
  /**
   * Runs fn under the attachment's lock, the key busy meanwhile: CNI calls, and the agent's own work
   * on a pod's veth (a pair made again from its lease), which GC must not take away half made.
   */
  locked<T>(containerId: string, ifname: string, fn: () => Promise<T>): Promise<T>;
} {
  const busy = new Set<string>();
  const statusLines = new StatusLineLevel();

  async function dispatch(
    env: CniEnv,
    stdin: string,
    fields: Record<string, unknown>,
    spooled: boolean,
  ): Promise<unknown> {
    if (env.command === 'VERSION') return versionReply(versionRequestVersion(stdin));
    const conf: NetConf = parseNetConf(stdin, env.command);
    checkVersionAllows(conf.cniVersion, env.command);
    fields.cniVersion = conf.cniVersion;
    // A verb that never reads prevResult went on without the one it could not parse: said at warn.
    if (conf.prevResultIgnored !== undefined) fields.prevResultIgnored = conf.prevResultIgnored;
    if (conf.configIgnored !== undefined) fields.configIgnored = conf.configIgnored;
    if (env.ignored !== undefined) fields.envIgnored = env.ignored.join('; ');
    switch (env.command) {
      case 'ADD': {
        const { containerId, ifname, netns } = required(env);
        // A name the lease store refuses is refused first: "try again later" (an agent not ready yet)
        // would have the runtime retry an ADD that can never succeed.
        validateKey({ containerId, ifname });
        const att = await locked(containerId, ifname, async () => {
          // Under the attachment's lock: a DEL the runtime sends meanwhile (it gave up on this ADD)
          // comes after the ADD it undoes, not before it.
          await readyForAdd(conf, fields);
          const spool = deps.spooledDels;
          if (spool?.has(containerId, ifname) === true) {
            // Another network's DEL leaves this one's attachment alone, as it would have on time.
            const network = spool.network?.(containerId, ifname);
            await delAttachment(
              deps.datapath,
              { containerId, ifname },
              network === undefined ? {} : { network, unrecorded: PUBLISHED_NETWORK_NAME },
            );
            await spool.remove(containerId, ifname);
            fields.spooledDelFirst = true;
          }
          return addAttachment(
            deps.datapath,
            {
              containerId,
              ifname,
              netns,
              mtu: conf.mtu ?? deps.defaultMtu(),
              configMtu: conf.mtu,
              routeMtu: deps.routeMtu?.(),
              nodeCidrs: deps.nodeCidrs?.(),
              pod: { namespace: env.args.podNamespace, name: env.args.podName, uid: env.args.podUid },
              network: conf.name,
              unrecordedNetwork: PUBLISHED_NETWORK_NAME,
            },
            // Only this call in progress: the kernel's work may hold the thread (types.ts).
            { alone: busy.size === 1 },
          );
        });
        fields.addresses = att.addresses.map((a) => a.address);
        fields.hostIf = att.host.name;
        if (att.prepared === true) fields.preparedVeth = true;
        if (conf.prevResult !== undefined) fields.chained = true;
        return convertResult(
          appendToPrevResult(conf.prevResult, attachmentResult(att, conf.dns)),
          conf.cniVersion,
        );
      }
      case 'DEL': {
        const containerId = env.containerId!;
        const ifname = env.ifname!;
        const outcome = await locked(containerId, ifname, async () => {
          if (spooled && deps.spooledDels?.has(containerId, ifname) === false) return undefined;
          return delAttachment(
            deps.datapath,
            { containerId, ifname },
            { netns: env.netns, network: conf.name, unrecorded: PUBLISHED_NETWORK_NAME },
          );
        });
        if (outcome === undefined) {
          fields.note = 'spooled DEL already run by an ADD of the same attachment';
          return null;
        }
        if (outcome.otherNetwork !== undefined) {
          fields.note = `the attachment is network ${JSON.stringify(outcome.otherNetwork)}'s, not this DEL's: left alone`;
          return null;
        }
        fields.addresses = outcome.released.map((a) => a.address);
        // As ADD's line names it (`ip link show trl…`): the veth this DEL deleted, or found gone.
        if (outcome.released.length > 0 || outcome.vethScheduled)
          fields.hostIf = hostVethName(containerId, ifname);
        return null;
      }
      case 'CHECK': {
        const { containerId, ifname, netns } = required(env);
        const prev = conf.prevResult;
        if (prev === undefined) {
          throw new CniError(CniCode.INVALID_CONFIG, 'CHECK needs prevResult in the network configuration');
        }
        await locked(containerId, ifname, () =>
          checkAttachment(deps.datapath, { containerId, ifname, netns }, expectedFromResult(prev, ifname), {
            network: conf.name,
            unrecorded: PUBLISHED_NETWORK_NAME,
          }),
        );
        return null;
      }
      case 'GC': {
        if (conf.validAttachments === undefined) {
          // No list means "unknown", not "empty": deleting everything would cut every pod off.
          fields.note = 'no cni.dev/valid-attachments: nothing collected';
          return null;
        }
        const valid = conf.validAttachments.map((a) => ({ containerId: a.containerID, ifname: a.ifname }));
        const out = await gcAttachments(deps.datapath, valid, busy, {
          network: conf.name,
          unrecorded: PUBLISHED_NETWORK_NAME,
        });
        fields.released = [...out.releasedLeases, ...(out.releasedHeld ?? [])].map(
          (l) => `${shortId(l.containerId)}/${l.ifname}`,
        );
        fields.removedLinks = out.removedLinks;
        return null;
      }
      case 'STATUS': {
        const reason = deps.readiness.notReadyReason();
        if (reason === undefined) return null;
        if (deps.readiness.restarting?.() === true) {
          fields.note = `not ready yet (${reason}), but ready moments ago on this node: STATUS answers ready`;
          return null;
        }
        throw new CniError(CniCode.NOT_AVAILABLE, `trellis agent is not ready: ${reason}`);
      }
    }
  }

  /** Returns once ready; throws 11 when not, after waiting for a restarted agent (bounded). */
  async function readyForAdd(conf: NetConf, fields: Record<string, unknown>): Promise<void> {
    const { readiness } = deps;
    let reason = readiness.notReadyReason();
    if (reason === undefined) return;
    if (readiness.restarting?.() === true) {
      const started = performance.now();
      const limit = Math.min(RESTART_READY_WAIT_MS, (conf.timeoutMs ?? DEFAULT_ADD_TIMEOUT_MS) / 4);
      while (
        reason !== undefined &&
        performance.now() - started + READY_POLL_MS <= limit &&
        readiness.stopping?.aborted !== true
      ) {
        await sleep(READY_POLL_MS);
        reason = readiness.notReadyReason();
      }
      fields.waitedForReadyMs = Math.round(performance.now() - started);
    }
    if (reason !== undefined) {
      throw new CniError(CniCode.TRY_AGAIN_LATER, `trellis agent is not ready yet: ${reason}`);
    }
  }

  /**
   * Work in flight (queued or running) per busy key: the mutex is shared with work that does not go
   * through here (the agent's quick host-end repairs), so it cannot tell when the last call is over.
   */
  const calls = new Map<string, number>();

  async function locked<T>(containerId: string, ifname: string, fn: () => Promise<T>): Promise<T> {
    const key = attachmentKey({ containerId, ifname });
    busy.add(key);
    calls.set(key, (calls.get(key) ?? 0) + 1);
    try {
      return await deps.mutex.run(key, fn);
    } finally {
      const left = calls.get(key)! - 1;
      if (left > 0) calls.set(key, left);
      else {
        calls.delete(key);
        busy.delete(key);
      }
    }
  }

  async function handle(req: AgentRequest, opts: CniCallOptions = {}): Promise<AgentResponse> {
    const started = performance.now();
    const fields: Record<string, unknown> = { verb: req.env.CNI_COMMAND ?? '' };
    let response: AgentResponse;
    let code: number | undefined;
    // A call's line is written when it ends: one stuck (on the attachment's lock, in the kernel)
    // would leave no trace while the runtime times out and retries behind it. Said once, meanwhile.
    const stuck = setTimeout(() => {
      deps.log.warn(
        { ...fields, elapsedMs: elapsedMs(started) },
        `CNI ${fields.verb} still running (its own line comes when it ends)`,
      );
    }, deps.stuckCallMs ?? STUCK_CALL_MS).unref();
    try {
      const env = parseDescribed(req.env, fields);
      if (opts.spooled === true) fields.spooled = true;
      response = okResponse(await dispatch(env, req.stdin, fields, opts.spooled === true));
    } catch (error) {
      const err = toCniError(error);
      code = err.code;
      fields.code = err.code;
      fields.error = err.message;
      if (err.details !== undefined) {
        // What an operator needs besides the message: a stack for an internal error, else the
        // specifics the error carries (an undo that failed and what it left behind, say).
        if (err.code === CniCode.INTERNAL) fields.stack = err.details;
        else fields.details = err.details;
      }
      response = errorResponse(err);
    }
    clearTimeout(stuck);
    const durationMs = elapsedMs(started);
    fields.durationMs = durationMs;
    fields.outcome = response.ok ? 'ok' : 'error';
    // Once the server has written the answer (or, without a server, on the next turn of the event
    // loop): the runtime need not wait for the log line's serialization and write (~0.15 ms of an ADD
    // here), and the line can say whether anyone heard the answer.
    const written =
      opts.answered ?? new Promise<AnswerFate>((resolve) => setImmediate(() => resolve('heard')));
    void written.then((fate) => {
      // warn: a failure, or a success that went on without something it was given (a prevResult,
      // config fields or CNI_* values it could not use).
      const wentWithout =
        fields.prevResultIgnored !== undefined ||
        fields.configIgnored !== undefined ||
        fields.envIgnored !== undefined;
      // The runtime saw no answer: it reported a failure of its own (105, the shim's timeout; 11 when
      // the agent stopping cut it, unless the next agent answered the shim's retry) and will retry or
      // DEL. The line says what the agent did, that nobody heard it, and whose doing that was.
      const unheard = fate !== 'heard';
      if (unheard) fields.answered = false;
      if (fate === 'agent-stopped') fields.cutBy = 'agent stop';
      const level: LineLevel =
        code === CniCode.INTERNAL ? 'error' : response.ok && !wentWithout && !unheard ? 'info' : 'warn';
      const why =
        fate === 'plugin-gone'
          ? ', but the plugin had already given up (not answered)'
          : fate === 'agent-stopped'
            ? ', but the agent stopping had cut the connection first (its stop grace ran out; not answered)'
            : '';
      // STATUS comes every few seconds from containerd 2 and CRI-O: said when its answer changes
      // (status-line.ts), so that it does not bury the ADD and DEL lines.
      const said =
        fields.verb === 'STATUS' && fields.note === undefined && !unheard
          ? statusLines.level(level, response.ok, typeof fields.error === 'string' ? fields.error : undefined)
          : { level, fields: {} };
      deps.log[said.level](
        { ...fields, ...said.fields },
        `CNI ${fields.verb} ${response.ok ? 'ok' : 'failed'}${why}`,
      );
      const unheardCode = fate === 'agent-stopped' ? CniCode.TRY_AGAIN_LATER : CniCode.AGENT_TIMEOUT;
      deps.onCall?.({
        verb: String(fields.verb),
        outcome: response.ok && !unheard ? 'ok' : 'error',
        code: unheard && response.ok ? unheardCode : code,
        durationMs,
        ...(Array.isArray(fields.released) ? { released: fields.released.length } : {}),
      });
    });
    return response;
  }

  return { handle, busyKeys: busy, locked };
}

/** Milliseconds since `started` (performance.now()) to 0.01 ms: a call's durationMs. */
export function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

/** "namespace/name" of the pod CNI_ARGS names; undefined when it names none. */
export function podOf(args: CniArgs): string | undefined {
  if (args.podNamespace === undefined && args.podName === undefined) return undefined;
  return `${args.podNamespace ?? ''}/${args.podName ?? ''}`;
}

/**
 * The call as its raw CNI_* variables name it, for the log line of a call refused before they could
 * be parsed (a bad CNI_NETNS, CNI_IFNAME or CNI_ARGS): the pod and container are still what an
 * operator searches the log for. Best effort over untrusted input: a known verb only, a pod only from
 * CNI_ARGS that parse, an interface name only as long as a valid one.
 */
export function describeRawEnv(env: unknown): {
  verb?: string;
  containerId?: string;
  pod?: string;
  ifname?: string;
} {
  if (typeof env !== 'object' || env === null) return {};
  const e = env as Record<string, unknown>;
  const out: { verb?: string; containerId?: string; pod?: string; ifname?: string } = {};
  if (typeof e.CNI_COMMAND === 'string' && isCniCommand(e.CNI_COMMAND)) out.verb = e.CNI_COMMAND;
  if (typeof e.CNI_CONTAINERID === 'string' && e.CNI_CONTAINERID !== '')
    out.containerId = shortId(e.CNI_CONTAINERID);
  if (typeof e.CNI_ARGS === 'string') {
    try {
      const pod = podOf(parseCniArgs(e.CNI_ARGS));
      if (pod !== undefined) out.pod = pod;
    } catch {
      // Unparsable CNI_ARGS: no pod to name.
    }
  }
  if (typeof e.CNI_IFNAME === 'string' && e.CNI_IFNAME !== '') out.ifname = e.CNI_IFNAME.slice(0, 15);
  return out;
}

/** parseCniEnv, with the call described in `fields` either way (describeRawEnv when refused). */
function parseDescribed(raw: AgentRequest['env'], fields: Record<string, unknown>): CniEnv {
  let env: CniEnv;
  try {
    env = parseCniEnv(raw);
  } catch (err) {
    Object.assign(fields, describeRawEnv(raw));
    throw err;
  }
  describeCall(env, fields);
  return env;
}

function describeCall(env: CniEnv, fields: Record<string, unknown>): void {
  fields.verb = env.command;
  if (env.containerId !== undefined) fields.containerId = shortId(env.containerId);
  const pod = podOf(env.args);
  if (pod !== undefined) fields.pod = pod;
  if (env.ifname !== undefined) fields.ifname = env.ifname;
  if (env.netns !== undefined) fields.netns = env.netns;
}

function required(env: CniEnv): { containerId: string; ifname: string; netns: string } {
  // parseCniEnv guarantees these for ADD and CHECK; the check keeps the types honest.
  if (env.containerId === undefined || env.ifname === undefined || env.netns === undefined) {
    throw new CniError(CniCode.INVALID_ENV, `${env.command} needs CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME`);
  }
  return { containerId: env.containerId, ifname: env.ifname, netns: env.netns };
}
