/**
 * The fallback transport over @kubernetes/client-node, for kubeconfigs the native one does not
 * support (exec credential plugins, auth providers, basic auth, impersonation, proxies). Importing
 * this module loads client-node with every generated API class (~90 MB of RSS), so transports.ts
 * reaches it only through a dynamic import(), and only for such configs.
 */
import { type SpawnOptions, spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, Watch } from '@kubernetes/client-node';
import { K8sError, K8sReason, toK8sError } from './errors.ts';
import type { FallbackSpec } from './kubeconfig.ts';
import {
  type Page,
  type PatchType,
  type Transport,
  WATCH_IDLE_MS,
  type WatchEnd,
  type WatchParams,
} from './transport.ts';

const PATCH_OPTIONS = {
  'strategic-merge': setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
  merge: setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
} as const;

function loadConfig(spec: FallbackSpec): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (spec.kind === 'file') {
      // What loadFromFile does, from the text read (and validated) at load time.
      kc.loadFromString(spec.text);
      kc.makePathsAbsolute(dirname(resolve(spec.path)));
      kc.setCurrentContext(spec.context);
    } else {
      // loadFromCluster reads process.env; pass ours through for the duration of the call.
      const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
      process.env.KUBERNETES_SERVICE_HOST = spec.host;
      process.env.KUBERNETES_SERVICE_PORT = spec.port;
      try {
        kc.loadFromCluster(spec.root);
      } finally {
        restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
        restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
      }
    }
  } catch (err) {
    const what = spec.kind === 'file' ? `kubeconfig ${spec.path}` : 'the in-cluster config';
    throw new K8sError(
      'load kubeconfig',
      `${what} could not be loaded by @kubernetes/client-node: ${(err as Error).message}`,
      undefined,
      K8sReason.CONFIG,
      { cause: err },
    );
  }
  return kc;
}

/** /api/v1/nodes/NAME[/status] -> [name, subresource]. */
function nodePath(path: string): [string, string] {
  const m = /^\/api\/v1\/nodes\/([^/]+)(\/status)?$/.exec(path);
  if (m === null)
    throw new K8sError('client-node transport', `unsupported path ${path}`, undefined, K8sReason.UNKNOWN);
  return [decodeURIComponent(m[1]!), m[2] ?? ''];
}

/**
 * client-node's exec credential plugins started with stdin closed and killed, with every process they
 * started, once they have run for `ms`: bounded() abandons a call whose plugin hangs, but the plugin would run on, and client-node
 * starts another at the next call (it keeps no record of one running), so a plugin waiting on a prompt
 * or an unanswering token endpoint left one more process, three pipes with it, every minute or so.
 * The authenticator is a private field of the KubeConfig (client-node 2.x: `authenticators`, the
 * ExecAuth's `execFn`); where it is not there, nothing changes.
 */
const PLUGIN_KILL_GRACE_MS = 1_000;

function boundExecPlugins(kc: KubeConfig, ms: number): void {
  const authenticators = (kc as unknown as { authenticators?: unknown[] }).authenticators ?? [];
  for (const a of authenticators) {
    // ExecAuth, which client-node does not export: the one with a process to start.
    const exec = a as { execFn?: unknown; getCredential?: unknown };
    if (typeof exec.execFn !== 'function' || typeof exec.getCredential !== 'function') continue;
    exec.execFn = (command: string, args: readonly string[] | undefined, opts: SpawnOptions) => {
      // Its own process group: a wrapper script's children (`aws eks get-token` run without exec)
      // are killed with it, and their end of the pipes closes, so client-node's wait ends too.
      const child = spawn(command, args ?? [], {
        ...opts,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      const timer = setTimeout(() => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
        child.stdout?.destroy();
        child.stderr?.destroy();
        // A moment after the call was abandoned (bounded()), so the caller sees the timeout, not
        // the killed plugin's empty answer.
      }, ms + PLUGIN_KILL_GRACE_MS);
      timer.unref();
      child.on('close', () => clearTimeout(timer));
      return child;
    };
  }
}

/** A list or patch with no answer by then fails, as the native transport's requests do. */
const REQUEST_TIMEOUT_MS = 60_000;

/**
 * `work` raced against a deadline and the caller's signal: client-node runs an exec credential plugin
 * before its request with no timeout of its own (a plugin waiting on a prompt or a token endpoint
 * hangs the call for good) and takes no signal for a list. Abandoned, the call itself runs on; what
 * it settles with later is dropped.
 */
function bounded<T>(op: string, work: Promise<T>, ms: number, signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const onAbort = (): void => {
      if (finish())
        reject(new K8sError(op, 'abandoned: the client is stopping', undefined, K8sReason.NETWORK));
    };
    const timer = setTimeout(() => {
      if (finish()) {
        reject(
          new K8sError(
            op,
            `no answer within ${ms} ms (an exec credential plugin that does not return?)`,
            undefined,
            K8sReason.NETWORK,
          ),
        );
      }
    }, ms);
    // Handled before anything can return: the work has started, and a refusal it settles with later
    // would otherwise be an unhandled rejection.
    work.then(
      (v) => {
        if (finish()) resolve(v);
      },
      (err: unknown) => {
        if (finish()) reject(err);
      },
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function createClientNodeTransport(
  spec: FallbackSpec,
  opts: {
    /** Default WATCH_IDLE_MS. */ watchIdleMs?: number;
    /** Default REQUEST_TIMEOUT_MS: a list or patch, credentials included. */ requestTimeoutMs?: number;
  } = {},
): Transport {
  const requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const watchIdleMs = opts.watchIdleMs ?? WATCH_IDLE_MS;
  const kc = loadConfig(spec);
  boundExecPlugins(kc, requestTimeoutMs);
  const core = kc.makeApiClient(CoreV1Api);
  const watcher = new Watch(kc);
  // Watch's own 30 s (connect, then inactivity) is shorter than the ~60 s between an API server's
  // BOOKMARKs: a quiet cluster's watch would time out before its first one, and two such timeouts
  // in a row relist (informer.ts). The native transport's inactivity timeout, for the same reason.
  // The field is `private` in client-node's typings (2.0.1) but a plain property, read per watch.
  (watcher as unknown as { requestTimeoutMs: number }).requestTimeoutMs = watchIdleMs;

  const call = async <T>(op: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
    try {
      return await bounded(op, fn(), requestTimeoutMs, signal);
    } catch (err) {
      throw toK8sError(op, err);
    }
  };

  return {
    name: 'client-node',

    listPage(op, path, params, signal): Promise<Page> {
      const extra = {
        limit: params.limit,
        ...(params.continue !== undefined ? { _continue: params.continue } : {}),
        ...(params.fieldSelector !== undefined ? { fieldSelector: params.fieldSelector } : {}),
        ...(params.resourceVersion !== undefined ? { resourceVersion: params.resourceVersion } : {}),
      };
      const fetch =
        path === '/api/v1/nodes'
          ? () => core.listNode(extra)
          : path === '/api/v1/pods'
            ? () => core.listPodForAllNamespaces(extra)
            : undefined;
      if (fetch === undefined)
        throw new K8sError(op, `unsupported list path ${path}`, undefined, K8sReason.UNKNOWN);
      return call(
        op,
        async () => {
          const list = await fetch();
          const meta = list.metadata;
          return {
            items: list.items as unknown[],
            metadata: {
              ...(meta?.resourceVersion !== undefined ? { resourceVersion: meta.resourceVersion } : {}),
              ...(meta?._continue !== undefined ? { continue: meta._continue } : {}),
            },
          };
        },
        signal,
      );
    },

    patch(op, path, type: PatchType, body) {
      const [name, sub] = nodePath(path);
      return call(op, () =>
        sub === '/status'
          ? core.patchNodeStatus({ name, body }, PATCH_OPTIONS[type])
          : core.patchNode({ name, body }, PATCH_OPTIONS[type]),
      );
    },

    watch(op, path, params: WatchParams, onEvent, signal): Promise<WatchEnd> {
      return new Promise<WatchEnd>((resolve, reject) => {
        let controller: AbortController | undefined;
        let over = false;
        /** Settles once; the stream, if any, is cut. */
        const end = (settle: () => void): void => {
          if (over) return;
          over = true;
          clearTimeout(setup);
          signal.removeEventListener('abort', stop);
          controller?.abort();
          settle();
        };
        // Settled at once on abort, whether or not client-node has handed back its controller yet
        // (it runs the credential plugin first); a watch not set up within the idle timeout is
        // given up as one that went silent.
        const stop = (): void => end(() => resolve('closed'));
        const setup = setTimeout(() => end(() => resolve('timeout')), watchIdleMs);
        if (signal.aborted) return stop();
        signal.addEventListener('abort', stop, { once: true });
        const query = {
          ...(params.resourceVersion !== '' ? { resourceVersion: params.resourceVersion } : {}),
          allowWatchBookmarks: params.allowWatchBookmarks,
          timeoutSeconds: params.timeoutSeconds,
        };
        watcher
          .watch(
            path,
            query,
            (type: string, obj: unknown) => {
              if (!over) onEvent(type, obj);
            },
            (err: unknown) => {
              if (signal.aborted || err === null || err === undefined) return end(() => resolve('closed'));
              if ((err as { name?: unknown }).name === 'TimeoutError') return end(() => resolve('timeout'));
              end(() => reject(watchRefusal(op, err)));
            },
          )
          .then(
            (c) => {
              controller = c;
              if (over)
                c.abort(); // abandoned while it was set up: nobody reads it any more
              else clearTimeout(setup); // from here on, client-node's own idle timeout
            },
            (err: unknown) => end(() => reject(toK8sError(op, err))),
          );
      });
    },
  };
}

function restoreEnv(key: string, value: string | undefined): void {
  if (value === undefined) delete process.env[key];
  else process.env[key] = value;
}

/** The Retry-After the API server's filters send with a 429 (max-in-flight's is always 1 s). */
const WATCH_THROTTLED_MS = 1000;

/**
 * client-node's Watch keeps neither the headers nor the body of a refused watch: a 429 waits at least
 * the 1 s the API server's max-in-flight and priority-and-fairness filters ask for, rather than only
 * the informer's own backoff (250 ms at first) while the server sheds load.
 */
function watchRefusal(op: string, err: unknown): K8sError {
  const e = toK8sError(op, err);
  if (e.statusCode !== 429 || e.retryAfterMs !== undefined) return e;
  return new K8sError(op, e.message.slice(op.length + 2), 429, e.reason, {
    cause: err,
    causes: e.causes,
    retryAfterMs: WATCH_THROTTLED_MS,
  });
}
