/**
 * The requests of one paginated list, one page ahead of its reader (api.ts's listAll): the next
 * page's request goes out as soon as the head of the page being waited for names it, and its body
 * stays unread (PageAhead) until the reader gets to it.
 */
import type { Page, PageAhead } from './transport.ts';

/** One page's request; `ahead` as Transport.listPage takes it. */
export type FetchPage = (
  cont: string | undefined,
  limit: number,
  signal: AbortSignal | undefined,
  ahead: PageAhead,
) => Promise<Page>;

export interface PageFetch {
  /** The continue token it was asked with (undefined: the first page). */
  readonly cont: string | undefined;
  readonly page: Promise<Page>;
}

/**
 * What the transport's callbacks reach: the token the head named, and the gate of the body. Not the
 * page's request itself: the transport may keep the callbacks after the page was read (its request,
 * on a keep-alive socket idle until its next one), and they must not keep the parsed page alive.
 */
interface Heard {
  named?: string;
  /** Resolves the gate; undefined once the body may be read. */
  release?: () => void;
  gate?: Promise<void>;
}

interface Pending extends PageFetch {
  readonly stop: AbortController;
  readonly heard: Heard;
  /** The request for the page `heard.named` names, once it went out. */
  ahead?: Pending;
}

export class PageFetches {
  readonly #fetch: FetchPage;
  readonly #limit: number;
  readonly #signal: AbortSignal | undefined;
  /** The page the reader waits for: only its head sends the next request. */
  #current: Pending | undefined;
  readonly #open = new Set<Pending>();

  constructor(fetch: FetchPage, limit: number, signal: AbortSignal | undefined) {
    this.#fetch = fetch;
    this.#limit = limit;
    this.#signal = signal;
  }

  /** The first page's request (`cont` undefined), or one for a page no request went ahead for. */
  start(cont: string | undefined): PageFetch {
    const p = this.#request(cont, false);
    this.#current = p;
    return p;
  }

  /**
   * The request for the page `cont` names, `done` being the page just read: the one already ahead if
   * `done`'s head named the same token (its body released now), else a new one (the other dropped).
   */
  next(done: PageFetch, cont: string): PageFetch {
    const d = done as Pending;
    this.#open.delete(d);
    const ahead = d.ahead;
    d.ahead = undefined;
    if (ahead === undefined || ahead.cont !== cont) {
      if (ahead !== undefined) this.#drop(ahead);
      return this.start(cont);
    }
    this.#current = ahead;
    ahead.heard.release?.();
    this.#goAhead(ahead);
    return ahead;
  }

  /** Ends every request still open (the list is over: done, failed or abandoned). */
  abandon(): void {
    for (const p of this.#open) this.#drop(p);
    this.#current = undefined;
  }

  #request(cont: string | undefined, held: boolean): Pending {
    const stop = new AbortController();
    const signal = this.#signal === undefined ? stop.signal : AbortSignal.any([this.#signal, stop.signal]);
    const heard: Heard = {};
    if (held) {
      heard.gate = new Promise<void>((resolve) => {
        heard.release = () => {
          heard.release = undefined;
          heard.gate = undefined;
          resolve();
        };
      });
    }
    const p: Pending = {
      cont,
      stop,
      heard,
      page: this.#fetch(cont, this.#limit, signal, {
        onContinue: (token) => {
          if (stop.signal.aborted || heard.named !== undefined) return;
          heard.named = token;
          const current = this.#current;
          if (current?.heard === heard) this.#goAhead(current);
        },
        held: () => heard.gate,
      }),
    };
    // A request dropped, or left ahead when the list fails, is never awaited: its rejection is not
    // an unhandled one. The reader awaits `page` itself and sees every error it has to.
    p.page.catch(() => {});
    this.#open.add(p);
    return p;
  }

  /** Sends the request for the page `p`'s head named, unless it went out already. */
  #goAhead(p: Pending): void {
    if (p.heard.named === undefined || p.ahead !== undefined || p.stop.signal.aborted) return;
    p.ahead = this.#request(p.heard.named, true);
  }

  #drop(p: Pending): void {
    this.#open.delete(p);
    p.stop.abort();
    p.heard.release?.();
    if (p.ahead !== undefined) this.#drop(p.ahead);
  }
}
