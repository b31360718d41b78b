/**
 * The thin layer over @kubernetes/client-node: typed API objects and paginated lists. Results stay
 * `unknown` on purpose; views.ts turns them into trellis's own types.
 */
import { CoreV1Api, Watch } from '@kubernetes/client-node';
import { K8sError, K8sReason, toK8sError } from './errors.ts';
import type { KubeConnection } from './kubeconfig.ts';

export interface RawList {
  items: unknown[];
  resourceVersion: string;
}

interface Page {
  items: unknown[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

/** How many times a paginated list starts over when its continue token expires (410). */
const LIST_ATTEMPTS = 3;

export class CoreApi {
  readonly core: CoreV1Api;
  readonly watch: Watch;
  readonly pageSize: number;

  constructor(conn: KubeConnection, pageSize: number) {
    const kc = conn.kubeConfig();
    this.core = kc.makeApiClient(CoreV1Api);
    this.watch = new Watch(kc);
    this.pageSize = pageSize;
  }

  /**
   * All pages of a list. Every page of one pass is the same snapshot (the server guarantees it
   * through the continue token); if that snapshot expires midway (410), start over.
   */
  async listAll(
    op: string,
    fetchPage: (cont: string | undefined, limit: number) => Promise<Page>,
  ): Promise<RawList> {
    for (let attempt = 1; ; attempt++) {
      const items: unknown[] = [];
      let cont: string | undefined;
      let rv = '';
      try {
        do {
          const page = await fetchPage(cont, this.pageSize);
          for (const it of page.items) items.push(it);
          rv = page.metadata?.resourceVersion ?? rv;
          cont = page.metadata?._continue || undefined;
        } while (cont !== undefined);
        if (rv === '')
          throw new K8sError(
            op,
            'list response has no metadata.resourceVersion',
            undefined,
            K8sReason.INVALID_OBJECT,
          );
        return { items, resourceVersion: rv };
      } catch (err) {
        const e = toK8sError(op, err);
        if (!(e.isGone && cont !== undefined && attempt < LIST_ATTEMPTS)) throw e;
      }
    }
  }

  listNodes(): Promise<RawList> {
    return this.listAll('list nodes', (cont, limit) =>
      this.core.listNode({ limit, ...(cont !== undefined ? { _continue: cont } : {}) }),
    );
  }

  listPods(fieldSelector: string): Promise<RawList> {
    return this.listAll(`list pods (${fieldSelector})`, (cont, limit) =>
      this.core.listPodForAllNamespaces({
        fieldSelector,
        limit,
        ...(cont !== undefined ? { _continue: cont } : {}),
      }),
    );
  }
}
