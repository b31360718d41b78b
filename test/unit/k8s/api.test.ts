/**
 * CoreApi's list parameters against a scripted Transport: what a server the test API server does not
 * imitate (one that pages a resourceVersion=0 list) gets asked.
 */
import { describe, expect, it } from 'vitest';
import { CoreApi } from '../../../pkg/k8s/api.ts';
import type { Page, Transport } from '../../../pkg/k8s/transport.ts';

type ListParams = Parameters<Transport['listPage']>[2];

/** A transport that answers list pages from `pages` in order and records the parameters asked. */
function scripted(pages: Page[]): { transport: Transport; asked: ListParams[] } {
  const asked: ListParams[] = [];
  const refuse = (): never => {
    throw new Error('not a list');
  };
  const transport: Transport = {
    name: 'native',
    patch: refuse,
    watch: refuse,
    listPage: async (_op, _path, params) => {
      asked.push({ ...params });
      const page = pages.shift();
      if (page === undefined) throw new Error('no more pages scripted');
      return page;
    },
  };
  return { transport, asked };
}

describe('CoreApi lists', () => {
  it('listPods reads from the watch cache (resourceVersion=0), and pages on without it', async () => {
    // A server whose cache honours limit. Continued pages carry no resourceVersion, as client-go's
    // pager sends them: the token names the snapshot (and etcd refuses a resourceVersion beside it).
    const { transport, asked } = scripted([
      { items: [{ n: 1 }, { n: 2 }], metadata: { resourceVersion: '7', continue: 'tok' } },
      { items: [{ n: 3 }], metadata: { resourceVersion: '7' } },
    ]);
    const r = await new CoreApi(transport, 2).listPods('spec.nodeName=n1');
    expect(r).toEqual({ items: [{ n: 1 }, { n: 2 }, { n: 3 }], resourceVersion: '7' });
    expect(asked).toEqual([
      { limit: 2, resourceVersion: '0', fieldSelector: 'spec.nodeName=n1' },
      { limit: 2, continue: 'tok', fieldSelector: 'spec.nodeName=n1' },
    ]);
  });

  it('listNodes stays a paged quorum read (no resourceVersion), read into NodeViews only', async () => {
    const { transport, asked } = scripted([
      { items: [{ n: 1 }], metadata: { resourceVersion: '9', continue: 'tok' } },
      { items: [{ n: 2 }], metadata: { resourceVersion: '9' } },
    ]);
    await new CoreApi(transport, 1).listNodes();
    expect(asked).toEqual([
      { limit: 1, nodeViewsOnly: true },
      { limit: 1, nodeViewsOnly: true, continue: 'tok' },
    ]);
  });

  it("listNodes turns each page's items into what the caller keeps before it asks for the next page", async () => {
    const { transport, asked } = scripted([
      { items: [{ n: 1 }, { n: 2 }], metadata: { resourceVersion: '9', continue: 'tok' } },
      { items: [{ n: 3 }], metadata: { resourceVersion: '9' } },
    ]);
    const mapped: string[] = [];
    const r = await new CoreApi(transport, 2).listNodes(undefined, (item) => {
      const n = (item as { n: number }).n;
      mapped.push(`${n} after ${asked.length} page(s) asked`);
      return `view ${n}`;
    });
    expect(mapped).toEqual(['1 after 1 page(s) asked', '2 after 1 page(s) asked', '3 after 2 page(s) asked']);
    expect(r).toEqual({ items: ['view 1', 'view 2', 'view 3'], resourceVersion: '9' });
  });
});
