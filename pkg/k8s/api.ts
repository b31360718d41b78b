/**
 * The API calls pkg/k8s makes, over a Transport: single objects, patches, and paginated lists.
 * Results stay `unknown` on purpose; views.ts turns them into trellis's own types.
 */
import { K8sError, K8sReason, toK8sError } from './errors.ts';
import { type FetchPage, PageFetches } from './page-fetches.ts';
import type { Transport } from './transport.ts';

export interface RawList<T = unknown> {
  items: T[];
  resourceVersion: string;
}

/** How many times a paginated list starts over when its continue token expires (410). */
const LIST_ATTEMPTS = 3;

export const NODES_PATH = '/api/v1/nodes';
const PODS_PATH = '/api/v1/pods';

export const nodePath = (name: string): string => `${NODES_PATH}/${encodeURIComponent(name)}`;

export class CoreApi {
  readonly transport: Transport;
  readonly pageSize: number;

  constructor(transport: Transport, pageSize: number) {
    this.transport = transport;
    this.pageSize = pageSize;
  }

  /**
   * All pages of a list. Every page of one pass is the same snapshot (the server guarantees it
   * through the continue token); if that snapshot expires midway (410), start over. The last attempt
   * asks for everything in one answer (limit 0), which has no token to expire: a server that compacts
   * faster than we page (a busy etcd) would otherwise fail every list. client-go's pager does the same.
   * `each` turns every item into what the caller keeps as its page arrives: a page's raw objects are
   * then garbage before the next is read, not all held until the last (at 5,000 Nodes of 20 KB each,
   * hundreds of MB at once).
   *
   * One page ahead (page-fetches.ts): the next page is asked for as soon as this one's head names it,
   * so the server prepares it while this one is read and parsed; its body waits in the socket until
   * this one is done. Only the parsed page's own token is trusted: a head that named another page
   * has that request dropped and the right one asked for.
   */
  async listAll<T = unknown>(
    op: string,
    fetchPage: FetchPage,
    each: (item: unknown) => T = (item) => item as T,
    signal?: AbortSignal,
  ): Promise<RawList<T>> {
    for (let attempt = 1; ; attempt++) {
      const items: T[] = [];
      let cont: string | undefined;
      let rv = '';
      const limit = attempt < LIST_ATTEMPTS ? this.pageSize : 0;
      const pages = new PageFetches(fetchPage, limit, signal);
      try {
        let current = pages.start(undefined);
        for (;;) {
          const page = await current.page;
          for (const it of page.items) items.push(each(it));
          rv = page.metadata?.resourceVersion ?? rv;
          cont = page.metadata?.continue || undefined;
          if (cont === undefined) break;
          current = pages.next(current, cont);
        }
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
      } finally {
        pages.abandon();
      }
    }
  }

  /**
   * A paged quorum read, not resourceVersion=0: the watch cache would answer every Node in one
   * response (thousands of them in a large cluster, all in memory at once). Asked for in protobuf
   * where the transport can (ListParams.nodeViewsOnly): items then hold only the fields a NodeView
   * is made of.
   */
  listNodes<T = unknown>(signal?: AbortSignal, each?: (item: unknown) => T): Promise<RawList<T>> {
    const op = 'list nodes';
    return this.listAll(
      op,
      (cont, limit, pageSignal, ahead) =>
        this.transport.listPage(
          op,
          NODES_PATH,
          { limit, nodeViewsOnly: true, ...(cont !== undefined ? { continue: cont } : {}) },
          pageSignal,
          ahead,
        ),
      each,
      signal,
    );
  }

  /**
   * Pods from the API server's watch cache (resourceVersion=0), possibly a little stale. A quorum
   * read (no resourceVersion) goes to etcd on servers that do not serve consistent reads from their
   * cache (Kubernetes <= 1.32), and etcd has no index on spec.nodeName: every node's periodic list
   * would scan every pod in the cluster. The cache is indexed by spec.nodeName; its answer may
   * ignore `limit` (one page, no continue token). Continued pages carry only the token, as
   * client-go's pager sends them.
   */
  listPods(fieldSelector: string): Promise<RawList> {
    const op = `list pods (${fieldSelector})`;
    return this.listAll(op, (cont, limit, pageSignal, ahead) =>
      this.transport.listPage(
        op,
        PODS_PATH,
        { limit, fieldSelector, ...(cont !== undefined ? { continue: cont } : { resourceVersion: '0' }) },
        pageSignal,
        ahead,
      ),
    );
  }
}
