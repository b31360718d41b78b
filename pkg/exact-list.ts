/**
 * A copy of `items` whose backing store holds just its elements. V8 gives an array built with push 16
 * slots at its first element (~150 bytes where one or two are used), and never shrinks it: five such
 * lists kept per Node (its view's InternalIPs, the route planner's record of each peer) held ~4 MB of
 * empty slots at 5,000 nodes and took the agent's RSS past 100 MB (bench/HISTORY.md, session 32).
 * For lists kept as long as a Node is, built once.
 */
export function exact<T>(items: T[]): T[] {
  return items.slice();
}

/**
 * A new list of `list`'s elements and `item`, written as an array literal rather than pushed, so it
 * holds no spare slots and needs no copy to shed them: for lists kept as long as a Node is and grown
 * one item at a time (one or two items, mostly).
 */
export function appendExact<T>(list: readonly T[], item: T): T[] {
  if (list.length === 0) return [item];
  if (list.length === 1) return [list[0]!, item];
  return exact([...list, item]);
}
