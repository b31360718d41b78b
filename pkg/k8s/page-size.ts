/**
 * How many objects a list asks for in its next page, from how large the objects of the last page
 * were. The agent runs with a 1 MB young generation (scripts/build.ts): a page is read as one text
 * and parsed whole, and a page whose parsed objects outgrow the young generation has them promoted
 * to the old one, where they die as garbage that only full collections (several, under
 * --optimize-for-size) take back. 5,000 kubelet-sized Nodes (~6.6 KB of JSON each), a client with
 * the agent's flags: pages of 100 (660 KB) cost 13 full collections and ~140 ms of pauses per list,
 * pages of 25 (165 KB) 2 and ~40 ms; pages of 10 were slower again, for the requests. The agent's
 * own time between pages fell by ~80 ms per list in bench/route-convergence.ts, which the test API
 * server, answering 209 requests instead of 50, spent again (bench/HISTORY.md, session 61). Objects
 * differ in size from cluster to cluster (images, labels, managedFields), so a page is sized in
 * text, not in objects: what one page holds at once stays about the same, bare Nodes come 500 to a
 * page (fewer requests than 100 would make) and large ones 10.
 */

/** About the JSON text per page whose parsed objects fit the young generation. */
export const PAGE_TEXT_TARGET = 160 * 1024;

/** client-go's page size: no fewer requests than it makes, however small the objects. */
export const MAX_PAGE_LIMIT = 500;

/** However large the objects: the API server's cost per request, and the round trips, add up too. */
export const MIN_PAGE_LIMIT = 10;

/** The limit for the next page after one of `items` (> 0) objects in `textLength` characters of JSON. */
export function nextPageLimit(items: number, textLength: number, target = PAGE_TEXT_TARGET): number {
  return Math.min(MAX_PAGE_LIMIT, Math.max(MIN_PAGE_LIMIT, Math.floor((target * items) / textLength)));
}
