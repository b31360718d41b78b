/**
 * A Node informer we own end to end: paginated list, then watch from the list's resourceVersion
 * with BOOKMARKs, forever, until the signal aborts.
 *
 * Why not client-node's makeInformer/ListWatch: it lists without pagination, does not ask for
 * bookmarks, and on any error other than 410 it calls its error callbacks and stops for good, so
 * every user must rebuild the restart logic around it anyway. Here:
 * - 410 Gone (an ERROR event with a 410 Status, or an HTTP 410) -> relist after a random wait in
 *   [0, 2 x backoff.initialMs), 0-1 s by default: an API server restart expires every agent's watch
 *   at once, and the wait spreads their full lists (client-go waits ~0.8-1.6 s through its backoff).
 * - A clean close (server timeout) or the transport's inactivity timeout -> watch again from the
 *   last resourceVersion seen (events or BOOKMARKs), no relist; but two inactivity timeouts in a row
 *   without a single line (an API server sends a BOOKMARK about every minute) are a failure that
 *   relists: a server or proxy that holds watches open and silent would leave the cache stale.
 * - Any other failure (list or watch) -> onError(err, delay), capped jittered exponential backoff,
 *   then retry the same step (a failed watch resumes from its resourceVersion; 410 then relists).
 * - A watch answered "ResourceVersionTooLarge" (the server lost state, e.g. a restarted test server)
 *   -> backoff, then relist: resuming from that resourceVersion can never work.
 * - A watch that closes within a second without a single event counts as a failure, so a server
 *   that accepts and drops at once cannot make us spin.
 *
 * Level-triggered use: the consumer treats onSync/onEvent as "something changed" and re-reads
 * list(). The cache is the valid subset of the server's Nodes: an object toNodeView rejects is
 * reported through onInvalid and is absent from the cache.
 */
import { type CoreApi, NODES_PATH } from './api.ts';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF, validateBackoff } from './backoff.ts';
import { fromStatus, K8sError, K8sReason, toK8sError } from './errors.ts';
import { nodeUnchanged } from './node-unchanged.ts';
import {
  type AnnotationFilter,
  isTrellisAnnotation,
  type NodeView,
  sameNodeContent,
  toNodeView,
} from './views.ts';

export type NodeEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Clock {
  now(): number;
}

export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>;

export interface NodeInformerOptions {
  /** After every full list (first sync and relists), and every resyncMs from the cache. */
  onSync?: (nodes: readonly NodeView[]) => void;
  /** Every change to the cache, from the watch or found by a relist. */
  onEvent?: (type: NodeEventType, node: NodeView) => void;
  /**
   * The API serves the watch again: one was accepted (by a transport that says so) and stayed open
   * ANSWER_HOLD_MS without an ERROR, or delivered a line that is not one. For a log line saying a
   * failure is over, at once rather than at the next change. Not a list alone, nor a watch accepted
   * only to fail (410 from a lagging watch cache): each would end a failure the next attempt repeats.
   */
  onAnswered?: () => void;
  /** A MODIFIED event that changed nothing a view holds (not passed to onEvent): for a debug log. */
  onUnchanged?: (name: string) => void;
  /**
   * A failure; the informer restarts by itself after restartInMs. Also called (restartInMs 0) when
   * one of these callbacks threw: the exception is reported here and otherwise ignored.
   */
  onError?: (err: K8sError, restartInMs: number) => void;
  /** A Node the server returned that toNodeView rejected (it is left out of the cache). */
  onInvalid?: (problem: string) => void;
  /**
   * Part of a Node that toNodeView left out (NodeView.problems: a malformed InternalIP), the rest being in
   * the cache. Called when the Node's view changes, not for every status report of an unchanged Node.
   */
  onIgnored?: (problem: string) => void;
  signal: AbortSignal;
  /** Period of onSync(list()) from the cache (no API call). Default 300_000 ms; 0 disables. */
  resyncMs?: number;
  /** Default { initialMs: 500, maxMs: 30_000 }. */
  backoff?: BackoffOptions;
  /** Watches ask the server to end them after [t, 2t) seconds, as client-go does. Default 300. */
  watchTimeoutSeconds?: number;
  clock?: Clock;
  sleep?: Sleep;
  /** [0, 1), for backoff jitter, the wait before a relist after 410, and watch timeouts. */
  random?: () => number;
  /**
   * The annotations the views keep (default: every trellis.dev/ one). The agent keeps only those it
   * routes by: another one changing (every agent's report, written at least every 10 minutes) is then
   * no change of a view, and wakes no one (nodeUnchanged).
   */
  annotations?: AnnotationFilter;
}

export interface NodeInformer {
  /** Every valid Node in the cache, sorted by name. */
  list(): NodeView[];
  get(name: string): NodeView | undefined;
  /** True once the first full list is in the cache. Nothing may be deleted before. */
  hasSynced(): boolean;
  /** Restarts after failures (backoffs), for metrics. */
  readonly restarts: number;
  /** Full lists done (the first sync included). */
  readonly relists: number;
  /** MODIFIED events that changed nothing the views hold (kubelets' status reports): not passed on. */
  readonly unchangedEvents: number;
  /** The last resourceVersion seen (list, event or BOOKMARK). */
  readonly resourceVersion: string;
  /**
   * Milliseconds since the API last answered (a list completed, a watch opened, a watch line);
   * undefined before its first answer. A healthy watch hears a BOOKMARK about every minute.
   */
  readonly silentMs: number | undefined;
  /** Resolves once the signal aborted and the loops have stopped. */
  readonly done: Promise<void>;
}

const SHORT_WATCH_MS = 1000;
/** How long an accepted watch stays open without an ERROR before it counts as the API answering. */
const ANSWER_HOLD_MS = 100;
/**
 * Inactivity timeouts (WATCH_IDLE_MS each) in a row without a line before the informer relists: 12
 * minutes of silence. A healthy API server can be silent for minutes: its watch cache sends a
 * watch a BOOKMARK only past the resourceVersion the watch started from, so a watch of a quiet
 * cluster resumed at the latest one hears nothing until a Node changes. Every kubelet reports its
 * Node at least every 5 minutes (nodeStatusReportFrequency), which bounds that silence; a watch
 * silent for longer is held by something that stopped serving it.
 */
const SILENT_WATCHES_BEFORE_RELIST = 8;
/** A Retry-After beyond this is not taken at its word (a misconfigured proxy must not park the watch). */
const MAX_RETRY_AFTER_MS = 60_000;

export const realSleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = (): void => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });

type WatchOutcome = { kind: 'closed' | 'timeout'; events: number } | { kind: 'expired' };

export function startNodeInformerOn(api: CoreApi, opts: NodeInformerOptions): NodeInformer {
  const backoff = validateBackoff(opts.backoff ?? DEFAULT_BACKOFF);
  const resyncMs = opts.resyncMs ?? 300_000;
  const watchTimeout = opts.watchTimeoutSeconds ?? 300;
  const clock = opts.clock ?? { now: () => performance.now() };
  const sleep = opts.sleep ?? realSleep;
  const random = opts.random ?? Math.random;
  const keep = opts.annotations ?? isTrellisAnnotation;
  const { signal } = opts;

  const cache = new Map<string, NodeView>();
  let synced = false;
  let restarts = 0;
  let relists = 0;
  /** clock.now() of the API's last answer; undefined before the first. */
  let heardAt: number | undefined;
  const heard = (): void => {
    heardAt = clock.now();
  };
  let unchanged = 0;
  let rv = '';

  /**
   * The cache sorted by name, kept until the cache changes: every full pass lists the whole cache, and
   * at thousands of nodes the sort was a fresh array and most of a millisecond each time.
   */
  let sorted: readonly NodeView[] | undefined;
  const put = (name: string, node: NodeView): void => {
    cache.set(name, node);
    sorted = undefined;
    // Only a new or changed view is put: its problems are said once per change.
    for (const problem of node.problems ?? []) if (opts.onIgnored) safely(() => opts.onIgnored?.(problem));
  };
  const drop = (name: string): void => {
    cache.delete(name);
    sorted = undefined;
  };
  const snapshot = (): NodeView[] => {
    sorted ??= [...cache.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return [...sorted];
  };

  /**
   * Callbacks belong to the consumer: one that throws must neither kill the informer nor crash the
   * process. It is reported through onError (restartInMs 0: nothing restarts) and otherwise ignored.
   */
  const safely = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      try {
        opts.onError?.(
          new K8sError('node informer callback', String(err), undefined, K8sReason.UNKNOWN, { cause: err }),
          0,
        );
      } catch {
        // onError itself threw: nothing sensible is left to tell.
      }
    }
  };

  const emit = (type: NodeEventType, node: NodeView): void => {
    if (opts.onEvent) safely(() => opts.onEvent?.(type, node));
  };

  const relist = async (): Promise<void> => {
    // Each page's Nodes turned into views as it arrives (listAll's `each`): the raw objects of a
    // large cluster are never all in memory at once.
    const raw = await api.listNodes(signal, (o) => toNodeView(o, keep));
    const next = new Map<string, NodeView>();
    for (const r of raw.items) {
      if (r.ok) next.set(r.node.name, r.node);
      else if (opts.onInvalid) safely(() => opts.onInvalid?.(r.problem));
    }
    for (const [name, old] of cache) {
      if (!next.has(name)) {
        drop(name);
        emit('DELETED', old);
      }
    }
    for (const [name, node] of next) {
      const old = cache.get(name);
      // An unchanged Node keeps its view: consumers may key derived data on it (the controller does).
      if (old !== undefined && sameNodeContent(old, node)) continue;
      put(name, node);
      emit(old === undefined ? 'ADDED' : 'MODIFIED', node);
    }
    rv = raw.resourceVersion;
    synced = true;
    relists++;
    heard();
    if (opts.onSync) safely(() => opts.onSync?.(snapshot()));
  };

  const apply = (type: string, obj: unknown): void => {
    const meta = (obj as { metadata?: { resourceVersion?: unknown; name?: unknown } } | null)?.metadata;
    const name = typeof meta?.name === 'string' ? meta.name : undefined;
    const cached = name === undefined ? undefined : cache.get(name);
    if (type === 'DELETED') {
      if (name !== undefined && cached !== undefined) {
        drop(name);
        const r = toNodeView(obj, keep);
        emit('DELETED', r.ok ? r.node : cached);
      }
    } else if (type === 'ADDED' || type === 'MODIFIED') {
      // Most MODIFIED events of a cluster are kubelets' status reports (every Node every 5 minutes,
      // ~17 a second at 5,000 Nodes), which change nothing a view holds: the cached view stays (its
      // identity keys consumers' derived data) and no one is woken. Told from the raw object when
      // it can be (nodeUnchanged), else from its view.
      const r = cached !== undefined && nodeUnchanged(obj, cached, keep) ? undefined : toNodeView(obj, keep);
      if (r === undefined || (r.ok && cached !== undefined && sameNodeContent(cached, r.node))) {
        unchanged++;
        if (opts.onUnchanged && name !== undefined) safely(() => opts.onUnchanged?.(name));
      } else if (r.ok) {
        put(r.node.name, r.node);
        emit(cached !== undefined ? 'MODIFIED' : 'ADDED', r.node);
      } else {
        // Keep the cache equal to the valid subset of the server: a node that turned bad leaves it.
        if (name !== undefined && cached !== undefined) {
          drop(name);
          emit('DELETED', cached);
        }
        if (opts.onInvalid) safely(() => opts.onInvalid?.(r.problem));
      }
    } else if (type !== 'BOOKMARK') {
      return;
    }
    if (typeof meta?.resourceVersion === 'string' && meta.resourceVersion !== '') rv = meta.resourceVersion;
  };

  /** Events (bookmarks included, ERROR not) the current watch has delivered; read when it fails mid-stream. */
  let watchEvents = 0;
  const watchOnce = async (fromRv: string): Promise<WatchOutcome> => {
    let events = 0;
    watchEvents = 0;
    let expired = false;
    let failure: K8sError | undefined;
    // Aborted by the informer's signal, or by us after an ERROR event.
    const stopper = new AbortController();
    const stop = (): void => stopper.abort();
    signal.addEventListener('abort', stop, { once: true });
    const timeoutSeconds = Math.round(watchTimeout * (1 + random()));
    // An ERROR arrives right behind the 200 that accepted the watch: held back until one would have.
    let answerHold: ReturnType<typeof setTimeout> | undefined;
    let told = false;
    const answered = (): void => {
      clearTimeout(answerHold);
      if (told) return;
      told = true;
      safely(() => opts.onAnswered?.());
    };
    try {
      const end = await api.transport.watch(
        'watch nodes',
        NODES_PATH,
        {
          resourceVersion: fromRv,
          allowWatchBookmarks: true,
          timeoutSeconds,
          nodeViewsOnly: true,
          onOpen: () => {
            heard();
            answerHold = setTimeout(answered, ANSWER_HOLD_MS);
          },
        },
        (type, obj) => {
          if (stopper.signal.aborted) return;
          heard();
          events++;
          if (events === 1 && type !== 'ERROR') answered();
          if (type === 'ERROR') {
            clearTimeout(answerHold);
            const e = fromStatus('watch nodes', obj);
            if (e.isGone) expired = true;
            else failure = e;
            stop();
            return;
          }
          // An ERROR is the server failing, not a healthy watch: it must not start the backoff over.
          watchEvents++;
          apply(type, obj);
        },
        stopper.signal,
      );
      if (expired) return { kind: 'expired' };
      if (failure !== undefined) throw failure;
      return { kind: end, events };
    } catch (err) {
      if (expired) return { kind: 'expired' };
      if (failure !== undefined) throw failure;
      if (signal.aborted) return { kind: 'closed', events };
      const e = toK8sError('watch nodes', err);
      if (e.isGone) return { kind: 'expired' };
      throw e;
    } finally {
      clearTimeout(answerHold);
      signal.removeEventListener('abort', stop);
    }
  };

  const mainLoop = async (): Promise<void> => {
    let failures = 0;
    /** Watches in a row that ended on the transport's inactivity timeout without a line. */
    let silentWatches = 0;
    /** Watches in a row that a fresh list's resourceVersion could not start (410 Gone at once). */
    let goneAfterList = 0;
    while (!signal.aborted) {
      let listed = false;
      try {
        if (rv === '' || !synced) {
          await relist();
          listed = true;
          // A list that works ends a backoff, unless the watches from it keep expiring: that loop
          // would otherwise list every Node again every second, forever.
          if (goneAfterList === 0) failures = 0;
        }
        if (signal.aborted) break;
        const started = clock.now();
        const fromRv = rv;
        const out = await watchOnce(fromRv);
        if (signal.aborted) break;
        if (out.kind === 'expired') {
          rv = '';
          if (listed && watchEvents === 0) {
            // The protocol's 410 is for a resourceVersion compacted away while we were not watching;
            // one the server listed a moment ago is not (a watch cache far behind its list, a proxy
            // mixing API servers). Counted as a failure: backoff, a log line, a restart.
            goneAfterList++;
            throw new K8sError(
              'watch nodes',
              // The same text each time (no count, no resourceVersion): the log says a failure that
              // goes on once, not once per attempt.
              "the watch from a fresh list's resourceVersion expired at once (410 Gone): listing again after a backoff",
              undefined,
              K8sReason.WATCH,
            );
          }
          goneAfterList = 0;
          await sleep(Math.floor(random() * 2 * backoff.initialMs), signal).catch(() => undefined);
          continue;
        }
        if (out.events > 0) {
          failures = 0;
          silentWatches = 0;
          goneAfterList = 0;
        } else if (out.kind === 'timeout' && ++silentWatches >= SILENT_WATCHES_BEFORE_RELIST) {
          // Silent for longer than kubelets' status reports leave a Node watch: held by a server (or
          // a proxy) that stopped serving it. Resuming from the same resourceVersion would go on
          // hearing nothing while Nodes change: list again.
          silentWatches = 0;
          rv = '';
          throw new K8sError(
            'watch nodes',
            `${SILENT_WATCHES_BEFORE_RELIST} watches in a row heard no event and no BOOKMARK (every kubelet reports its Node at least every 5 minutes): listing again`,
            undefined,
            K8sReason.WATCH,
          );
        } else if (out.kind === 'closed' && clock.now() - started < SHORT_WATCH_MS) {
          throw new K8sError(
            'watch nodes',
            'the watch closed within a second without any event',
            undefined,
            K8sReason.WATCH,
          );
        }
      } catch (err) {
        if (signal.aborted) break;
        // A watch that delivered events and then broke (a connection reset, an API server replaced
        // behind its load balancer) was healthy: its break starts the backoff over, or a few such
        // cuts hours apart would leave every later reconnect at the 30 s cap, blind to Node events.
        const heard = watchEvents > 0;
        if (heard) failures = 0;
        watchEvents = 0;
        failures++;
        restarts++;
        const e = toK8sError('node informer', err);
        // Never sooner than the server asked (429 from API Priority and Fairness), within reason.
        const asked = Math.min(e.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS);
        const delay = Math.max(backoffDelay(failures, backoff, random), asked);
        // The server has not reached our resourceVersion (it lost its state): only a relist helps.
        // Refused right after a list, it is the 410 loop again (a watch cache lagging behind the
        // list it serves): counted like goneAfterList, so the next list does not end the backoff.
        if (e.isResourceVersionTooLarge) {
          rv = '';
          if (listed && !heard) goneAfterList++;
        }
        if (opts.onError) safely(() => opts.onError?.(e, delay));
        await sleep(delay, signal).catch(() => undefined);
      }
    }
  };

  const resyncLoop = async (): Promise<void> => {
    if (resyncMs <= 0) return;
    while (!signal.aborted) {
      await sleep(resyncMs, signal).catch(() => undefined);
      if (signal.aborted) break;
      if (synced && opts.onSync) safely(() => opts.onSync?.(snapshot()));
    }
  };

  const done = Promise.all([mainLoop(), resyncLoop()]).then(() => undefined);

  return {
    list: snapshot,
    get: (name) => cache.get(name),
    hasSynced: () => synced,
    get restarts() {
      return restarts;
    },
    get unchangedEvents() {
      return unchanged;
    },
    get relists() {
      return relists;
    },
    get resourceVersion() {
      return rv;
    },
    get silentMs() {
      return heardAt === undefined ? undefined : clock.now() - heardAt;
    },
    done,
  };
}
