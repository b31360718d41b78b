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

  it('listNodes stays a paged quorum read (no resourceVersion): one page at a time from etcd', async () => {
    const { transport, asked } = scripted([
      { items: [{ n: 1 }], metadata: { resourceVersion: '9', continue: 'tok' } },
      { items: [{ n: 2 }], metadata: { resourceVersion: '9' } },
    ]);
    await new CoreApi(transport, 1).listNodes();
    expect(asked).toEqual([{ limit: 1 }, { limit: 1, continue: 'tok' }]);
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

  it('sizes each page after the first by the text of the one before, with sizedPages', async () => {
    const pages = (): Page[] => [
      // 2 kubelet-sized Nodes: 160 KiB of them is 24.
      { items: [{ n: 1 }, { n: 2 }], metadata: { resourceVersion: '9', continue: 'a' }, textLength: 13_200 },
      // Bare ones, 400 characters each: 409.
      { items: Array(24).fill({}), metadata: { resourceVersion: '9', continue: 'b' }, textLength: 9_600 },
      // One of 50 KB: 3, raised to the floor of 10.
      { items: [{}], metadata: { resourceVersion: '9', continue: 'c' }, textLength: 50_000 },
      // Nothing matched on this page (a selector): nothing to size by, the limit stays.
      { items: [], metadata: { resourceVersion: '9', continue: 'd' }, textLength: 60 },
      // A transport that does not tell the text's length: the limit stays.
      { items: [{}], metadata: { resourceVersion: '9', continue: 'e' } },
      { items: [{}], metadata: { resourceVersion: '9' }, textLength: 100 },
    ];
    const sized = scripted(pages());
    await new CoreApi(sized.transport, 2, { sizedPages: true }).listNodes();
    expect(sized.asked.map((p) => p.limit)).toEqual([2, 24, 409, 10, 10, 10]);
    const fixed = scripted(pages());
    await new CoreApi(fixed.transport, 2).listNodes();
    expect(fixed.asked.map((p) => p.limit)).toEqual([2, 2, 2, 2, 2, 2]);
  });
});
