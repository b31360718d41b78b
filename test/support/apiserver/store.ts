/**
 * The in-memory "etcd" of the test API server: Nodes (cluster-scoped) and Pods (namespaced) under one
 * global, monotonically increasing resourceVersion, plus a bounded history of change events that
 * watches replay from and that consistent paginated lists are rebuilt from.
 *
 * History model: every event with rv > compactedRv is in `history`. A watch or a continue token from
 * an rv below compactedRv is "too old" (410 Gone), as with etcd compaction in a real cluster.
 */
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { isObject, type JsonObject } from './patch.ts';
import { type Matcher, parseFieldSelector, parseLabelSelector } from './selectors.ts';
import {
  alreadyExists,
  badRequest,
  conflict,
  expired,
  invalid,
  notFound,
  type StatusCause,
} from './status.ts';

export type Resource = 'nodes' | 'pods';
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly type: EventType;
  readonly rv: number;
  readonly resource: Resource;
  readonly key: string;
  /** The object after the change (for DELETED: the last state, stamped with the deletion rv). */
  readonly object: JsonObject;
  /** The object before the change (undefined for ADDED). */
  readonly prev: JsonObject | undefined;
}

export const KIND: Record<Resource, string> = { nodes: 'Node', pods: 'Pod' };

export function keyOf(resource: Resource, namespace: string | undefined, name: string): string {
  return resource === 'pods' ? `${namespace ?? 'default'}/${name}` : name;
}

export function metaOf(obj: JsonObject): JsonObject {
  return isObject(obj.metadata) ? obj.metadata : {};
}

function objectKey(resource: Resource, obj: JsonObject): string {
  const m = metaOf(obj);
  return keyOf(resource, typeof m.namespace === 'string' ? m.namespace : undefined, String(m.name ?? ''));
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isCidr(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const [addr, len, extra] = s.split('/');
  if (addr === undefined || len === undefined || extra !== undefined || !/^\d+$/.test(len)) return false;
  const fam = isIP(addr);
  return fam !== 0 && Number(len) <= (fam === 4 ? 32 : 128);
}

/** The validation the real server does that trellis's behaviour depends on (422 Invalid). */
export function validate(resource: Resource, obj: JsonObject): void {
  const m = metaOf(obj);
  const name = typeof m.name === 'string' ? m.name : '';
  const causes: StatusCause[] = [];
  if (name === '')
    causes.push({
      reason: 'FieldValueRequired',
      message: 'Required value: name or generateName is required',
      field: 'metadata.name',
    });
  else if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    causes.push({
      reason: 'FieldValueInvalid',
      message: `Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
      field: 'metadata.name',
    });
  }
  for (const field of ['labels', 'annotations'] as const) {
    const v = m[field];
    if (v === undefined || v === null) continue;
    if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) {
      causes.push({
        reason: 'FieldValueInvalid',
        message: 'Invalid value: must be a map of strings',
        field: `metadata.${field}`,
      });
    }
  }
  if (resource === 'nodes' && isObject(obj.spec)) {
    const { podCIDR, podCIDRs } = obj.spec;
    if (podCIDR !== undefined && podCIDR !== '' && !isCidr(podCIDR)) {
      causes.push({
        reason: 'FieldValueInvalid',
        message: `Invalid value: ${JSON.stringify(podCIDR)}: must be a valid CIDR`,
        field: 'spec.podCIDR',
      });
    }
    if (podCIDRs !== undefined) {
      if (!Array.isArray(podCIDRs))
        causes.push({ reason: 'FieldValueInvalid', message: 'must be a list', field: 'spec.podCIDRs' });
      else
        podCIDRs.forEach((c, i) => {
          if (!isCidr(c))
            causes.push({
              reason: 'FieldValueInvalid',
              message: `Invalid value: ${JSON.stringify(c)}: must be a valid CIDR`,
              field: `spec.podCIDRs[${i}]`,
            });
        });
    }
  }
  if (causes.length > 0) throw invalid(resource, name, causes);
}

export interface ListQuery {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continueToken?: string;
  /** resourceVersionMatch=Exact: serve the state at this rv (410 if compacted away). */
  exactRv?: number;
}

export interface ListResult {
  items: JsonObject[];
  resourceVersion: string;
  continueToken?: string;
  remainingItemCount?: number;
}

interface ContinueToken {
  v: string;
  rv: number;
  start: string;
}

export function encodeContinue(rv: number, start: string): string {
  const t: ContinueToken = { v: 'meta.k8s.io/v1', rv, start };
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeContinue(token: string): ContinueToken {
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as ContinueToken;
    if (typeof t.rv !== 'number' || typeof t.start !== 'string') throw new Error('shape');
    return t;
  } catch {
    throw badRequest(
      'continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)',
    );
  }
}

export const TOO_OLD_CONTINUE =
  'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.';

export function matcherFor(
  resource: Resource,
  q: { namespace?: string; labelSelector?: string; fieldSelector?: string },
): Matcher {
  const labels = parseLabelSelector(q.labelSelector);
  const fields = parseFieldSelector(resource, q.fieldSelector);
  const ns = q.namespace;
  return (o) => (ns === undefined || metaOf(o).namespace === ns) && labels(o) && fields(o);
}

export class ObjectStore {
  private rv = 0;
  private readonly objects: Record<Resource, Map<string, JsonObject>> = { nodes: new Map(), pods: new Map() };
  private history: StoreEvent[] = [];
  private compactedRv = 0;
  private readonly listeners = new Set<(ev: StoreEvent) => void>();
  readonly historySize: number;

  constructor(opts: { historySize?: number } = {}) {
    this.historySize = opts.historySize ?? 10_000;
  }

  currentRv(): number {
    return this.rv;
  }

  /** Events with rv > this are all replayable; a watch from an older rv gets 410 Gone. */
  oldestWatchableRv(): number {
    return this.compactedRv;
  }

  subscribe(fn: (ev: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get(resource: Resource, key: string): JsonObject | undefined {
    const o = this.objects[resource].get(key);
    return o === undefined ? undefined : structuredClone(o);
  }

  count(resource: Resource): number {
    return this.objects[resource].size;
  }

  /** `unchecked` skips validation so tests can plant objects a real server would refuse. */
  create(resource: Resource, input: JsonObject, opts: { unchecked?: boolean } = {}): JsonObject {
    const obj = structuredClone(input);
    const meta = { ...metaOf(obj) };
    if ((meta.name === undefined || meta.name === '') && typeof meta.generateName === 'string') {
      meta.name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    }
    if (resource === 'pods' && (meta.namespace === undefined || meta.namespace === ''))
      meta.namespace = 'default';
    if (resource === 'nodes') delete meta.namespace;
    obj.metadata = meta;
    if (opts.unchecked !== true) validate(resource, obj);
    const key = objectKey(resource, obj);
    if (this.objects[resource].has(key)) throw alreadyExists(resource, String(meta.name));
    const rv = ++this.rv;
    const stored: JsonObject = {
      ...obj,
      kind: KIND[resource],
      apiVersion: 'v1',
      metadata: {
        ...meta,
        uid: randomUUID(),
        resourceVersion: String(rv),
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      },
    };
    delete (stored.metadata as JsonObject).generateName;
    this.objects[resource].set(key, stored);
    this.record({ type: 'ADDED', rv, resource, key, object: stored, prev: undefined });
    return structuredClone(stored);
  }

  /**
   * Replaces an object with `mutate(current)`. Identity fields (name, namespace, uid,
   * creationTimestamp) are kept; a resourceVersion in the new object must match (optimistic
   * concurrency, 409 Conflict otherwise). A no-op change does not bump the resourceVersion.
   */
  update(
    resource: Resource,
    key: string,
    mutate: (current: JsonObject) => JsonObject,
    opts: { unchecked?: boolean } = {},
  ): JsonObject {
    const current = this.objects[resource].get(key);
    const name = key.includes('/') ? key.slice(key.indexOf('/') + 1) : key;
    if (current === undefined) throw notFound(resource, name);
    const next = mutate(structuredClone(current));
    const curMeta = metaOf(current);
    const nextMeta = { ...metaOf(next) };
    if (
      nextMeta.resourceVersion !== undefined &&
      nextMeta.resourceVersion !== '' &&
      nextMeta.resourceVersion !== curMeta.resourceVersion
    ) {
      throw conflict(resource, name);
    }
    if (nextMeta.name !== undefined && nextMeta.name !== curMeta.name) {
      throw invalid(resource, name, [
        { reason: 'FieldValueInvalid', message: 'field is immutable', field: 'metadata.name' },
      ]);
    }
    for (const f of ['name', 'namespace', 'uid', 'creationTimestamp', 'resourceVersion'] as const) {
      if (curMeta[f] === undefined) delete nextMeta[f];
      else nextMeta[f] = curMeta[f];
    }
    const candidate: JsonObject = { ...next, kind: KIND[resource], apiVersion: 'v1', metadata: nextMeta };
    if (opts.unchecked !== true) validate(resource, candidate);
    if (JSON.stringify(candidate) === JSON.stringify(current)) return structuredClone(current);
    const rv = ++this.rv;
    nextMeta.resourceVersion = String(rv);
    this.objects[resource].set(key, candidate);
    this.record({ type: 'MODIFIED', rv, resource, key, object: candidate, prev: current });
    return structuredClone(candidate);
  }

  delete(resource: Resource, key: string): JsonObject {
    const current = this.objects[resource].get(key);
    if (current === undefined)
      throw notFound(resource, key.includes('/') ? key.slice(key.indexOf('/') + 1) : key);
    const rv = ++this.rv;
    const gone: JsonObject = { ...current, metadata: { ...metaOf(current), resourceVersion: String(rv) } };
    this.objects[resource].delete(key);
    this.record({ type: 'DELETED', rv, resource, key, object: gone, prev: current });
    return structuredClone(gone);
  }

  /** Drops all history: any watch or continue token from before now gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** The events of `resource` after `rv`, or 'expired' if some of them were compacted away. */
  eventsSince(resource: Resource, rv: number): StoreEvent[] | 'expired' {
    if (rv < this.compactedRv) return 'expired';
    const out: StoreEvent[] = [];
    // History is sorted by rv: binary search the first event after rv.
    let lo = 0;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.history.length; i++) {
      const ev = this.history[i]!;
      if (ev.resource === resource) out.push(ev);
    }
    return out;
  }

  /** Current objects of a resource (no copies: callers must not mutate). */
  snapshotNow(resource: Resource): Iterable<JsonObject> {
    return this.objects[resource].values();
  }

  /**
   * A list as the real server serves it: sorted by key; with `limit`, pages that all reflect the
   * same snapshot (the continue token carries its rv and the state at that rv is rebuilt from
   * history), and 410 Expired when that rv has been compacted away.
   */
  list(resource: Resource, q: ListQuery): ListResult {
    const match = matcherFor(resource, q);
    let snapRv = this.rv;
    let start = '';
    if (q.exactRv !== undefined) {
      if (q.exactRv < this.compactedRv || q.exactRv > this.rv) {
        throw expired(`too old resource version: ${q.exactRv} (${this.compactedRv + 1})`);
      }
      snapRv = q.exactRv;
    }
    if (q.continueToken !== undefined && q.continueToken !== '') {
      const t = decodeContinue(q.continueToken);
      if (t.rv < this.compactedRv) throw expired(TOO_OLD_CONTINUE);
      snapRv = t.rv;
      start = t.start;
    }
    const state = this.stateAt(resource, snapRv);
    const keys = [...state.keys()].filter((k) => start === '' || k > start).sort();
    const items: JsonObject[] = [];
    let lastKey = '';
    let remaining = 0;
    let truncated = false;
    const limit = q.limit !== undefined && q.limit > 0 ? q.limit : Number.POSITIVE_INFINITY;
    for (const k of keys) {
      const o = state.get(k)!;
      if (!match(o)) continue;
      if (items.length >= limit) {
        truncated = true;
        remaining++;
        continue;
      }
      items.push(o);
      lastKey = k;
    }
    const result: ListResult = { items, resourceVersion: String(snapRv) };
    if (truncated) {
      result.continueToken = encodeContinue(snapRv, lastKey);
      if (q.labelSelector === undefined && q.fieldSelector === undefined)
        result.remainingItemCount = remaining;
    }
    return result;
  }

  private stateAt(resource: Resource, rv: number): Map<string, JsonObject> {
    const now = this.objects[resource];
    if (rv >= this.rv) return now;
    // Undo, newest first, every change after rv; the earliest undo of a key wins.
    const overlay = new Map<string, JsonObject | null>();
    for (let i = this.history.length - 1; i >= 0; i--) {
      const ev = this.history[i]!;
      if (ev.rv <= rv) break;
      if (ev.resource === resource) overlay.set(ev.key, ev.prev ?? null);
    }
    if (overlay.size === 0) return now;
    const out = new Map(now);
    for (const [k, v] of overlay) {
      if (v === null) out.delete(k);
      else out.set(k, v);
    }
    return out;
  }

  private record(ev: StoreEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historySize * 2) {
      const drop = this.history.length - this.historySize;
      this.compactedRv = this.history[drop - 1]!.rv;
      this.history = this.history.slice(drop);
    }
    for (const fn of this.listeners) fn(ev);
  }
}

export function parseResourceVersion(s: string | undefined): number | undefined {
  if (s === undefined || s === '') return undefined;
  if (!/^\d+$/.test(s)) throw badRequest(`invalid resource version: ${JSON.stringify(s)}`);
  return Number(s);
}
