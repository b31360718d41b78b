import type { Family } from '../datapath/ports.ts';
import { annotationPatch } from '../k8s/annotation-patch.ts';
import { K8sError } from '../k8s/errors.ts';
import type { K8sClient } from '../k8s/index.ts';
import { FailureLog } from '../observe/failure-log.ts';
import type { Logger } from '../observe/logger.ts';
import { directSubnetAnnotations } from '../routes/direct-subnets.ts';
import { vtepAnnotations } from '../vxlan/annotations.ts';
import type { DeviceState } from '../vxlan/device.ts';
import type { ClusterNode } from './cluster.ts';

/** How often NetworkUnavailable is put back on a Node that someone else keeps setting True. */
export const REASSERT_MS = 5 * 60_000;

export type NodeStatusPort = Pick<K8sClient, 'setNetworkUnavailable' | 'annotateNode'>;

/**
 * What the agent writes to its own Node: NetworkUnavailable=False once the datapath is programmed,
 * and the annotations peers plan their routes to us with (publishAnnotations). Every Node write wakes
 * every agent's watch, so both are written only when they differ; failures are retried.
 */
export class NodeStatusReporter {
  private readonly kube: NodeStatusPort;
  private readonly nodeName: string;
  private readonly log: Logger;
  private readonly signal: AbortSignal;
  /**
   * The annotation patch in flight or last sent, and the version of the Node it was computed from;
   * cleared once the Node shows it.
   */
  private pending: { patch: string; from: string | undefined } | undefined;
  /** Our annotations as the last pass worked them out (undefined: absent). */
  private wanted: Readonly<Record<string, string | undefined>> | undefined;
  /** The uid of the Node object NetworkUnavailable=False was last written to. */
  private networkUpUid: string | undefined;
  private readonly conditionWrites: FailureLog;
  /** A write of the condition is in flight or retrying. */
  private writing = false;
  /**
   * The Node as it last came while a write was in flight: judged once the write is done. Someone
   * setting True meanwhile (a cloud controller answering the re-created object) would otherwise go
   * unanswered until the next resync.
   */
  private cameWhileWriting: ClusterNode | undefined;
  /**
   * That judgement is free of REASSERT_MS once per Node object: the Node that came may predate our
   * write (a kubelet's status update over the True we were answering), and a budget spent on it
   * would leave a real True a moment later unanswered for 5 minutes. Once only, so a controller that
   * keeps setting True while each write is in flight still meets the budget.
   */
  private freeJudgementUsed = false;
  /** When the condition was last put back on the same Node object (networkUpFor). */
  private reassertedAt = Number.NEGATIVE_INFINITY;
  /** The resourceVersion of the Node the last write was decided on. */
  private writtenOver: string | undefined;
  private readonly now: () => number;
  private readonly annotationWrites: FailureLog;
  private readonly retryBaseMs: number;

  constructor(opts: {
    kube: NodeStatusPort;
    nodeName: string;
    log: Logger;
    signal: AbortSignal;
    now?: () => number;
    /** The first retry's delay of a failed annotation patch, doubling up to 30 s. */
    retryBaseMs?: number;
  }) {
    this.kube = opts.kube;
    this.retryBaseMs = opts.retryBaseMs ?? 500;
    // Monotonic: a clock stepped back (NTP just after boot) must not hold the re-assert off for the
    // length of the step, the node tainted NetworkUnavailable meanwhile.
    this.now = opts.now ?? (() => performance.now());
    this.nodeName = opts.nodeName;
    this.log = opts.log;
    this.signal = opts.signal;
    this.conditionWrites = new FailureLog(opts.log, 'could not set NetworkUnavailable=False');
    this.annotationWrites = new FailureLog(opts.log, 'could not publish the Node annotations; will retry');
  }

  /**
   * NetworkUnavailable=False on this Node object, once per object: a Node re-created under our name
   * (`kubectl delete node`, and the kubelet registers it again) gets it too, where a cloud's route
   * controller or an in-tree cloud kubelet may set it True and taint the node. Set True again on the
   * same object (a cloud controller, an etcd restore), it is put back, at most once every
   * REASSERT_MS: the node controller taints a node with it and no pod is scheduled there.
   */
  networkUpFor(self: ClusterNode): void {
    this.judge(self, false);
  }

  /** networkUpFor; `free`: not counted against REASSERT_MS (freeJudgementUsed). */
  private judge(self: ClusterNode, free: boolean): void {
    const uid = self.uid ?? '';
    if (this.writing) {
      this.cameWhileWriting = self;
      return;
    }
    if (this.networkUpUid !== uid && self.networkUnavailable === undefined && self.networkUp === true) {
      // False already (an earlier run's, before a restart or an upgrade): written again, its
      // lastTransitionTime would say the network came up now, on every Node at every rollout.
      this.networkUpUid = uid;
      this.writtenOver = self.resourceVersion;
      return;
    }
    if (this.networkUpUid === uid) {
      if (self.networkUnavailable === undefined) return;
      // The Node as it was when we wrote (our False not back through the watch yet): not news.
      if (self.resourceVersion !== undefined && self.resourceVersion === this.writtenOver) return;
      if (!free) {
        const now = this.now();
        if (now - this.reassertedAt < REASSERT_MS) return;
        this.reassertedAt = now;
      }
      this.log.warn(
        { reason: self.networkUnavailable },
        'NetworkUnavailable=True was set on this Node by someone else; setting it False again',
      );
    }
    if (this.networkUpUid !== uid) this.freeJudgementUsed = false;
    this.networkUpUid = uid;
    this.writtenOver = self.resourceVersion;
    this.writing = true;
    void this.reportNetworkUp().finally(() => {
      this.writing = false;
      const again = this.cameWhileWriting;
      this.cameWhileWriting = undefined;
      if (again === undefined || this.signal.aborted) return;
      const free = !this.freeJudgementUsed;
      this.freeJudgementUsed = true;
      this.judge(again, free);
    });
  }

  /**
   * After a relist: what was decided over a version of the Node is decided again. The informer keeps
   * a Node's old view (and its resourceVersion) when nothing it tracks changed, so a relist past our
   * write and someone undoing it (NetworkUnavailable=True again, our annotations stripped) looks like
   * the version we wrote over, and would never be written again.
   */
  relisted(): void {
    this.writtenOver = undefined;
    this.pending = undefined;
  }

  /**
   * Retries with capped backoff (longer where the server asks, 429's Retry-After) until it succeeds,
   * the agent stops, or the API refuses it for good (the Node gone, no right to patch its status): the
   * next pass's judgement writes it then, as for the annotations.
   */
  async reportNetworkUp(): Promise<void> {
    for (let attempt = 0; !this.signal.aborted; attempt++) {
      try {
        await this.kube.setNetworkUnavailable(
          this.nodeName,
          false,
          'TrellisIsUp',
          'trellis programmed routes and the CNI config on this node',
        );
        this.conditionWrites.succeeded('NetworkUnavailable=False set');
        return;
      } catch (err) {
        if (refusedForGood(err)) {
          // Not written: the next judgement must not take this Node for one written already.
          this.networkUpUid = undefined;
          this.writtenOver = undefined;
          this.conditionWrites.failed(err, { retry: 'at the next pass' });
          return;
        }
        const delay = retryDelay(err, 500 * 2 ** attempt);
        this.conditionWrites.failed(err, { retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /**
   * This node's trellis annotations as the last pass wants them (undefined: absent); undefined before
   * the first pass. The Node coming back with exactly these is our own write.
   */
  wantedAnnotations(): Readonly<Record<string, string | undefined>> | undefined {
    return this.wanted;
  }

  /**
   * Our Node's annotations follow this pass's view: the VTEP MACs of the devices (none in host-gw),
   * which peers need before they tunnel to us, and the subnets we route peers directly on (auto mode),
   * which make peers take the path we take back. Patched when the cached Node differs; a failure is
   * retried with backoff (sendAnnotations).
   */
  publishAnnotations(
    self: ClusterNode,
    vteps: readonly Pick<DeviceState, 'family' | 'mac'>[],
    directSubnets: Partial<Record<Family, string>>,
  ): void {
    const macs: Partial<Record<Family, string>> = {};
    for (const v of vteps) macs[v.family] = v.mac;
    this.wanted = { ...vtepAnnotations(macs), ...directSubnetAnnotations(directSubnets) };
    const patch = annotationPatch(self.annotations, this.wanted);
    if (patch === undefined) {
      this.pending = undefined;
      return;
    }
    const key = JSON.stringify(patch);
    // The same patch is not sent twice for one version of the Node (the watch brings our own write
    // back a moment later). A newer version that still lacks it (the Node re-created under our name,
    // a relist past our write, someone removing the annotations) gets it again.
    const from = self.resourceVersion;
    if (this.pending?.patch === key && (from === undefined || this.pending.from === from)) return;
    const pending = { patch: key, from };
    this.pending = pending;
    this.sendAnnotations(pending, patch, 0);
  }

  /**
   * Sends until it succeeds, a newer patch takes its place, or the agent stops: a full pass may not
   * come for the resync period, and until peers see our VTEP MAC (or our direct subnets) they route
   * us one way or not at all. The patch is a merge of absolute values, so sending it again is harmless.
   */
  private sendAnnotations(
    pending: NonNullable<NodeStatusReporter['pending']>,
    patch: Record<string, string | null>,
    attempt: number,
  ): void {
    this.kube.annotateNode(this.nodeName, patch).then(
      () => {
        if (this.pending !== pending) return; // a newer patch took its place: its own line says so
        this.annotationWrites.succeeded('the Node annotations could be published again');
        this.log.info({ annotations: patch }, 'Node annotations published');
      },
      (err: unknown) => {
        if (this.pending !== pending || this.signal.aborted) return;
        if (refusedForGood(err)) {
          // The Node gone (404), no right to patch it (403), a patch refused: sending it again will not
          // change that. The next pass, over the Node as it is then, tries again.
          this.pending = undefined;
          this.annotationWrites.failed(err, { retry: 'at the next pass' });
          return;
        }
        const delay = retryDelay(err, this.retryBaseMs * 2 ** attempt);
        this.annotationWrites.failed(err, { retryInMs: delay });
        setTimeout(() => {
          if (this.pending === pending && !this.signal.aborted)
            this.sendAnnotations(pending, patch, attempt + 1);
        }, delay).unref();
      },
    );
  }
}

/**
 * A 4xx the same request will get again: not a conflict, throttling, a request timeout or an
 * authentication failure (a token being rotated), which pass.
 */
function refusedForGood(err: unknown): boolean {
  const status = err instanceof K8sError ? err.statusCode : undefined;
  return status !== undefined && status >= 400 && status < 500 && ![401, 408, 409, 429].includes(status);
}

/** The backoff's delay (at most 30 s), or longer where the server asked (Retry-After, at most 60 s). */
function retryDelay(err: unknown, backoffMs: number): number {
  const asked = err instanceof K8sError ? (err.retryAfterMs ?? 0) : 0;
  return Math.max(Math.min(30_000, backoffMs), Math.min(60_000, asked));
}
