/**
 * Watch streams: newline-delimited JSON watch events on a chunked HTTP/1.1 response, as the real
 * server writes them. A watch from resourceVersion N replays the history after N and then follows
 * live changes; from "" or "0" it starts with synthetic ADDED events for what exists now; from an rv
 * that was compacted away it gets a single ERROR event carrying a 410 Expired Status, then EOF.
 */
import type { ServerResponse } from 'node:http';
import type { JsonObject } from './patch.ts';
import { expired, tooLargeResourceVersion } from './status.ts';
import {
  type EventType,
  KIND,
  matcherFor,
  metaOf,
  type ObjectStore,
  type Resource,
  type StoreEvent,
} from './store.ts';

export interface WatchParams {
  resource: Resource;
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** undefined means "start with the current state" (resourceVersion unset or "0"). */
  fromRv: number | undefined;
  allowBookmarks: boolean;
  timeoutSeconds: number;
}

interface ActiveWatch {
  readonly resource: Resource;
  readonly allowBookmarks: boolean;
  readonly res: ServerResponse;
  close(mode: 'end' | 'destroy'): void;
}

function line(type: string, object: JsonObject): string {
  return `${JSON.stringify({ type, object })}\n`;
}

export class WatchHub {
  private readonly active = new Set<ActiveWatch>();
  private readonly store: ObjectStore;

  constructor(store: ObjectStore) {
    this.store = store;
  }

  get count(): number {
    return this.active.size;
  }

  serve(p: WatchParams, res: ServerResponse): void {
    // Parse selectors before the 200 so a bad selector is still a 400.
    const match = matcherFor(p.resource, p);
    res.writeHead(200, {
      'content-type': 'application/json',
      'cache-control': 'no-cache, private',
      'transfer-encoding': 'chunked',
    });
    res.flushHeaders();

    if (p.fromRv !== undefined && p.fromRv > this.store.currentRv()) {
      // The real server waits ~3 s for its cache to catch up, then answers like this. Here the rv
      // can only be ahead after a restart of this (stateless) server, so answer at once.
      res.end(line('ERROR', tooLargeResourceVersion(p.fromRv, this.store.currentRv()).toStatus()));
      return;
    }
    if (p.fromRv !== undefined) {
      const replay = this.store.eventsSince(p.resource, p.fromRv);
      if (replay === 'expired') {
        const status = expired(
          `too old resource version: ${p.fromRv} (${this.store.oldestWatchableRv() + 1})`,
        ).toStatus();
        res.end(line('ERROR', status));
        return;
      }
      for (const ev of replay) {
        const out = toWatchEvent(ev, match);
        if (out !== undefined) res.write(line(out.type, out.object));
      }
    } else {
      const initial = [...this.store.snapshotNow(p.resource)].filter(match);
      for (const o of initial) res.write(line('ADDED', o));
    }

    const unsubscribe = this.store.subscribe((ev) => {
      if (ev.resource !== p.resource) return;
      const out = toWatchEvent(ev, match);
      if (out !== undefined) res.write(line(out.type, out.object));
    });
    const timer = setTimeout(() => w.close('end'), p.timeoutSeconds * 1000);
    timer.unref();
    let closed = false;
    const w: ActiveWatch = {
      resource: p.resource,
      allowBookmarks: p.allowBookmarks,
      res,
      close: (mode) => {
        if (closed) return;
        closed = true;
        clearTimeout(timer);
        unsubscribe();
        this.active.delete(w);
        if (mode === 'destroy') res.socket?.destroy();
        else res.end();
      },
    };
    this.active.add(w);
    res.on('close', () => w.close('end'));
  }

  /** A BOOKMARK to every watch that asked for them: "you have seen everything up to rv". */
  sendBookmarks(): void {
    const rv = String(this.store.currentRv());
    for (const w of this.active) {
      if (!w.allowBookmarks) continue;
      w.res.write(
        line('BOOKMARK', { kind: KIND[w.resource], apiVersion: 'v1', metadata: { resourceVersion: rv } }),
      );
    }
  }

  /** Half of `event`'s line to every watch, then close it: a stream cut mid-line. */
  cutAll(event: { type: string; object: JsonObject }, mode: 'end' | 'destroy'): number {
    const text = line(event.type, event.object);
    const all = [...this.active];
    for (const w of all) {
      w.res.write(text.slice(0, Math.floor(text.length / 2)));
      w.close(mode);
    }
    return all.length;
  }

  closeAll(mode: 'end' | 'destroy'): number {
    const all = [...this.active];
    for (const w of all) w.close(mode);
    return all.length;
  }
}

/**
 * Translates a store change into what a filtered watch sees: an object that starts matching is
 * ADDED, one that stops matching is DELETED (its previous state, at the new rv), as the real
 * watch cache does.
 */
export function toWatchEvent(
  ev: StoreEvent,
  match: (o: JsonObject) => boolean,
): { type: EventType; object: JsonObject } | undefined {
  const now = ev.type !== 'DELETED' && match(ev.object);
  const before = ev.prev !== undefined && match(ev.prev);
  if (ev.type === 'DELETED') return match(ev.object) ? { type: 'DELETED', object: ev.object } : undefined;
  if (now && before) return { type: 'MODIFIED', object: ev.object };
  if (now) return { type: 'ADDED', object: ev.object };
  if (before && ev.prev !== undefined) {
    return {
      type: 'DELETED',
      object: { ...ev.prev, metadata: { ...metaOf(ev.prev), resourceVersion: String(ev.rv) } },
    };
  }
  return undefined;
}
