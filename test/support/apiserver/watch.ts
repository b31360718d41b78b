/**
 * Watch streams: newline-delimited JSON watch events on a chunked HTTP/1.1 response, as the real
 * server writes them, or for Nodes asked for in protobuf, length-delimited protobuf frames
 * (protobuf.ts). A watch from resourceVersion N replays the history after N and then follows
 * live changes; from "" or "0" it starts with synthetic ADDED events for what exists now; from an rv
 * that was compacted away it gets a single ERROR event carrying a 410 Expired Status, then EOF.
 */
import type { ServerResponse } from 'node:http';
import type { JsonObject } from './patch.ts';
import { encodeWatchFrame, NotEncodable, PROTOBUF_WATCH_CONTENT_TYPE } from './protobuf.ts';
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
  /** Events in protobuf frames (a Node watch whose Accept prefers it), not JSON lines. */
  protobuf: boolean;
}

interface ActiveWatch {
  readonly resource: Resource;
  readonly allowBookmarks: boolean;
  readonly res: ServerResponse;
  readonly encoding: WatchEncoding;
  /** Writes one event; an object the encoding cannot carry ends the watch (see serve). */
  send(type: string, object: JsonObject): void;
  close(mode: 'end' | 'destroy'): void;
}

/** How a watch's events are written: its Content-Type, and each event's bytes. */
export interface WatchEncoding {
  contentType: string;
  event(type: string, object: JsonObject): string | Buffer;
}

const JSON_LINES: WatchEncoding = {
  contentType: 'application/json',
  event: (type, object) => `${JSON.stringify({ type, object })}\n`,
};

const PROTOBUF_FRAMES: WatchEncoding = {
  contentType: PROTOBUF_WATCH_CONTENT_TYPE,
  event: encodeWatchFrame,
};

export function watchEncoding(protobuf: boolean): WatchEncoding {
  return protobuf ? PROTOBUF_FRAMES : JSON_LINES;
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
    const encoding = watchEncoding(p.protobuf);
    // setHeader, not writeHead's object: RequestRecord.contentType reads it back.
    res.setHeader('content-type', encoding.contentType);
    res.setHeader('cache-control', 'no-cache, private');
    res.setHeader('transfer-encoding', 'chunked');
    res.writeHead(200);
    res.flushHeaders();

    if (p.fromRv !== undefined && p.fromRv > this.store.currentRv()) {
      // The real server waits ~3 s for its cache to catch up, then answers like this. Here the rv
      // can only be ahead after a restart of this (stateless) server, so answer at once.
      const status = tooLargeResourceVersion(p.fromRv, this.store.currentRv()).toStatus();
      res.end(encoding.event('ERROR', status));
      return;
    }
    const timer = setTimeout(() => w.close('end'), p.timeoutSeconds * 1000);
    timer.unref();
    let closed = false;
    let unsubscribe = (): void => undefined;
    const w: ActiveWatch = {
      resource: p.resource,
      allowBookmarks: p.allowBookmarks,
      res,
      encoding,
      // A Node protobuf cannot carry (a test's malformed object; the server then answers later Node
      // watches in JSON) ends a protobuf watch: the client watches again and gets it as JSON.
      send: (type, object) => {
        if (closed) return;
        let bytes: string | Buffer;
        try {
          bytes = encoding.event(type, object);
        } catch (err) {
          if (!(err instanceof NotEncodable)) throw err;
          w.close('end');
          return;
        }
        res.write(bytes);
      },
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

    if (p.fromRv !== undefined) {
      const replay = this.store.eventsSince(p.resource, p.fromRv);
      if (replay === 'expired') {
        const status = expired(
          `too old resource version: ${p.fromRv} (${this.store.oldestWatchableRv() + 1})`,
        ).toStatus();
        w.send('ERROR', status);
        w.close('end');
        return;
      }
      for (const ev of replay) {
        const out = toWatchEvent(ev, match);
        if (out !== undefined) w.send(out.type, out.object);
      }
    } else {
      for (const o of this.store.snapshotNow(p.resource)) if (match(o)) w.send('ADDED', o);
    }
    if (closed) return;
    unsubscribe = this.store.subscribe((ev) => {
      if (ev.resource !== p.resource) return;
      const out = toWatchEvent(ev, match);
      if (out !== undefined) w.send(out.type, out.object);
    });
  }

  /** A BOOKMARK to every watch that asked for them: "you have seen everything up to rv". */
  sendBookmarks(): void {
    const rv = String(this.store.currentRv());
    for (const w of [...this.active]) {
      if (!w.allowBookmarks) continue;
      w.send('BOOKMARK', { kind: KIND[w.resource], apiVersion: 'v1', metadata: { resourceVersion: rv } });
    }
  }

  /** Half of `event`'s line (or frame) to every watch, then close it: a stream cut mid-event. */
  cutAll(event: { type: string; object: JsonObject }, mode: 'end' | 'destroy'): number {
    const all = [...this.active];
    for (const w of all) {
      const bytes = w.encoding.event(event.type, event.object);
      w.res.write(bytes.slice(0, Math.floor(bytes.length / 2)));
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
