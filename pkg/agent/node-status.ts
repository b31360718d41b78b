import type { Family } from '../datapath/ports.ts';
import { annotationPatch } from '../k8s/annotation-patch.ts';
import type { K8sClient } from '../k8s/index.ts';
import type { Logger } from '../observe/logger.ts';
import { directSubnetAnnotations } from '../routes/direct-subnets.ts';
import { vtepAnnotations } from '../vxlan/annotations.ts';
import type { DeviceState } from '../vxlan/device.ts';
import type { ClusterNode } from './cluster.ts';

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
  /** The annotation patch in flight or last sent; cleared once the Node shows it. */
  private pendingPatch: string | undefined;

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
   * Our Node's annotations follow this pass's view: the VTEP MACs of the devices (none in host-gw),
   * which peers need before they tunnel to us, and the subnets we route peers directly on (auto mode),
   * which make peers take the path we take back. Patched when the cached Node differs; a failure is
   * retried on the next pass.
   */
  publishAnnotations(
    self: ClusterNode,
    vteps: readonly Pick<DeviceState, 'family' | 'mac'>[],
    directSubnets: Partial<Record<Family, string>>,
  ): void {
    const macs: Partial<Record<Family, string>> = {};
    for (const v of vteps) macs[v.family] = v.mac;
    const patch = annotationPatch(self.annotations, {
      ...vtepAnnotations(macs),
      ...directSubnetAnnotations(directSubnets),
    });
    const key = patch === undefined ? undefined : JSON.stringify(patch);
    if (key === undefined || key === this.pendingPatch) {
      if (key === undefined) this.pendingPatch = undefined;
      return;
    }
    this.pendingPatch = key;
    this.kube.annotateNode(this.nodeName, patch!).then(
      () => this.log.info({ annotations: patch }, 'Node annotations published'),
      (err: unknown) => {
        this.pendingPatch = undefined;
        this.log.warn(
          { error: (err as Error).message },
          'could not publish the Node annotations; will retry',
        );
      },
    );
  }
}
