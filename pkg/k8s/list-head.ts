/**
 * The continue token of a list page from the first bytes of its body, before the rest has arrived.
 * The API server writes a *List as kind, apiVersion, metadata, then items (the Go struct's field
 * order, and the streaming list encoder's), so the token that names the next page comes before
 * the page's items: the next request can go out while this page is still read and parsed
 * (api.ts's listAll). Only a hint: listAll checks it against the parsed page's own token.
 */

/** Where the head must have ended: metadata is a few hundred bytes. */
export const LIST_HEAD_MAX_BYTES = 4096;

const ITEMS_KEY = /"items"\s*:/;

/**
 * 'more' while `text` (the body's start) may still be too short to hold the head; otherwise the
 * continue token, or undefined when there is none or the head is not the shape above (the caller
 * then waits for the whole page, as without this).
 */
export function continueFromHead(text: string): string | undefined | 'more' {
  const m = ITEMS_KEY.exec(text);
  if (m === null) return text.length < LIST_HEAD_MAX_BYTES ? 'more' : undefined;
  const before = text.slice(0, m.index).trimEnd();
  // Items first, or a head cut inside a string that happens to hold "items": no early token.
  if (!before.endsWith(',')) return undefined;
  let head: unknown;
  try {
    head = JSON.parse(`${before}"items":[]}`);
  } catch {
    return undefined;
  }
  const token = (head as { metadata?: { continue?: unknown } } | null)?.metadata?.continue;
  return typeof token === 'string' && token !== '' ? token : undefined;
}
