import type { K8sClient } from '../k8s/index.ts';
import type { Logger } from '../observe/logger.ts';
import { vtepAnnotationPatch } from '../vxlan/annotations.ts';
import type { DeviceState } from '../vxlan/device.ts';
import type { ClusterNode } from './cluster.ts';

export type NodeStatusPort = Pick<K8sClient, 'setNetworkUnavailable' | 'annotateNode'>;

/**
 * What the agent writes to its own Node: NetworkUnavailable=False once the datapath is programmed,
 * and the VTEP MAC annotations that peers need before they tunnel to us. Every Node write wakes every
 * agent's watch, so both are written only when they differ; failures are retried.
 */
export class NodeStatusReporter {
  private readonly kube: NodeStatusPort;
  private readonly nodeName: string;
  private readonly log: Logger;
  private readonly signal: AbortSignal;
  /** The VTEP annotation patch in flight or last sent; cleared once the Node shows it. */
  private vtepPatch: string | undefined;

  constructor(opts: { kube: NodeStatusPort; nodeName: string; log: Logger; signal: AbortSignal }) {
    this.kube = opts.kube;
    this.nodeName = opts.nodeName;
    this.log = opts.log;
    this.signal = opts.signal;
  }

  /** Retries with capped backoff until it succeeds or the agent stops. */
  async reportNetworkUp(): Promise<void> {
    for (let attempt = 0; !this.signal.aborted; attempt++) {
      try {
        await this.kube.setNetworkUnavailable(
          this.nodeName,
          false,
          'TrellisIsUp',
          'trellis programmed routes and the CNI config on this node',
        );
        return;
      } catch (err) {
        const delay = Math.min(30_000, 500 * 2 ** attempt);
        this.log.warn(
          { error: (err as Error).message, retryInMs: delay },
          'could not set NetworkUnavailable=False',
        );
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /**
   * Our Node's VTEP MAC annotations follow the devices (none in host-gw). Patched when the cached Node
   * differs; a failure is retried on the next pass. Peers only tunnel to a node that published its MAC.
   */
  publishVteps(self: ClusterNode, vteps: readonly Pick<DeviceState, 'family' | 'mac'>[]): void {
    const wanted: Partial<Record<4 | 6, string>> = {};
    for (const v of vteps) wanted[v.family] = v.mac;
    const patch = vtepAnnotationPatch(self.annotations, wanted);
    const key = patch === undefined ? undefined : JSON.stringify(patch);
    if (key === undefined || key === this.vtepPatch) {
      if (key === undefined) this.vtepPatch = undefined;
      return;
    }
    this.vtepPatch = key;
    this.kube.annotateNode(this.nodeName, patch!).then(
      () => this.log.info({ annotations: patch }, 'VTEP annotations published'),
      (err: unknown) => {
        this.vtepPatch = undefined;
        this.log.warn(
          { error: (err as Error).message },
          'could not publish the VTEP annotations; will retry',
        );
      },
    );
  }
}
