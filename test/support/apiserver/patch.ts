/**
 * The three PATCH flavours the test API server accepts, as pure functions over plain JSON.
 *
 * - JSON merge patch (RFC 7386): exact.
 * - Strategic merge patch: a documented simplification of the real one. Maps merge like a merge patch
 *   (null deletes a key). Lists whose field path is in STRATEGIC_LIST_KEYS merge by that key (an item
 *   with `$patch: delete` removes the matching element); every other list is replaced. `$patch:
 *   replace` on a map replaces it. `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList`
 *   are not implemented (they are rejected, so a test can never silently rely on them).
 * - JSON patch (RFC 6902): add, remove, replace, move, copy, test.
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export class PatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PatchError';
  }
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/**
 * Lists merged by key in strategic merge patch, by dotted field path from the object's root
 * (the same patchMergeKey the real types declare for these fields).
 */
export const STRATEGIC_LIST_KEYS: Readonly<Record<string, string>> = {
  'status.conditions': 'type',
  'status.addresses': 'type',
  'spec.taints': 'key',
  'spec.containers': 'name',
  'spec.initContainers': 'name',
  'spec.volumes': 'name',
  'spec.tolerations': 'key',
  'status.podIPs': 'ip',
  'status.containerStatuses': 'name',
  'metadata.ownerReferences': 'uid',
  'metadata.finalizers': '',
};

const UNSUPPORTED_DIRECTIVES = ['$retainKeys', '$deleteFromPrimitiveList', '$setElementOrder'];

export function strategicMergePatch(target: Json | undefined, patch: Json, path = ''): Json {
  if (!isObject(patch)) return patch;
  const directive = patch.$patch;
  if (directive === 'replace') {
    const { $patch: _drop, ...rest } = patch;
    return rest;
  }
  if (directive === 'delete') return null;
  if (directive !== undefined)
    throw new PatchError(`unsupported $patch directive ${JSON.stringify(directive)}`);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (UNSUPPORTED_DIRECTIVES.some((d) => k.startsWith(d))) {
      throw new PatchError(`the test API server does not implement strategic merge directive ${k}`);
    }
    const childPath = path === '' ? k : `${path}.${k}`;
    if (v === null) {
      delete out[k];
      continue;
    }
    const mergeKey = STRATEGIC_LIST_KEYS[childPath];
    if (Array.isArray(v) && mergeKey !== undefined) {
      out[k] = mergeKeyedList(out[k], v, mergeKey, childPath);
    } else {
      const merged = strategicMergePatch(out[k], v, childPath);
      if (merged === null) delete out[k];
      else out[k] = merged;
    }
  }
  return out;
}

function mergeKeyedList(target: Json | undefined, patch: Json[], key: string, path: string): Json[] {
  const out: Json[] = Array.isArray(target) ? [...target] : [];
  if (key === '') {
    // A primitive list with merge strategy (finalizers): union, keeping order.
    for (const item of patch)
      if (!out.some((x) => JSON.stringify(x) === JSON.stringify(item))) out.push(item);
    return out;
  }
  for (const item of patch) {
    if (!isObject(item) || item[key] === undefined) {
      throw new PatchError(`${path}: every element must be an object with merge key "${key}"`);
    }
    const idx = out.findIndex((x) => isObject(x) && x[key] === item[key]);
    if (item.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMergePatch(out[idx], item, path);
    else out.push(strategicMergePatch(undefined, item, path));
  }
  return out;
}

interface JsonPatchOp {
  op: string;
  path: string;
  from?: string;
  value?: Json;
}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new PatchError(`invalid JSON pointer ${JSON.stringify(pointer)}`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function getAt(doc: Json, tokens: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[Number(t)];
    else if (isObject(cur)) cur = cur[t];
    else return undefined;
  }
  return cur;
}

function parentOf(doc: Json, tokens: string[], pointer: string): { parent: Json; last: string } {
  const parent = getAt(doc, tokens.slice(0, -1));
  const last = tokens[tokens.length - 1];
  if (parent === undefined || last === undefined || (typeof parent !== 'object' && parent !== null)) {
    throw new PatchError(`path ${pointer} does not exist`);
  }
  return { parent, last };
}

function addAt(doc: Json, pointer: string, value: Json): Json {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return value;
  const { parent, last } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) {
    const idx = last === '-' ? parent.length : Number(last);
    if (!Number.isInteger(idx) || idx < 0 || idx > parent.length)
      throw new PatchError(`bad index in ${pointer}`);
    parent.splice(idx, 0, value);
  } else if (isObject(parent)) {
    parent[last] = value;
  } else {
    throw new PatchError(`path ${pointer} does not exist`);
  }
  return doc;
}

function removeAt(doc: Json, pointer: string): Json | undefined {
  const tokens = parsePointer(pointer);
  const { parent, last } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) {
    const idx = Number(last);
    if (!Number.isInteger(idx) || idx < 0 || idx >= parent.length)
      throw new PatchError(`bad index in ${pointer}`);
    return parent.splice(idx, 1)[0];
  }
  if (isObject(parent) && last in parent) {
    const old = parent[last];
    delete parent[last];
    return old;
  }
  throw new PatchError(`path ${pointer} does not exist`);
}

export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new PatchError('a JSON patch must be an array of operations');
  let doc = structuredClone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw new PatchError('every JSON patch operation needs "op" and "path"');
    }
    const op = raw as unknown as JsonPatchOp;
    switch (op.op) {
      case 'add':
        doc = addAt(doc, op.path, structuredClone(op.value ?? null));
        break;
      case 'remove':
        removeAt(doc, op.path);
        break;
      case 'replace':
        removeAt(doc, op.path);
        doc = addAt(doc, op.path, structuredClone(op.value ?? null));
        break;
      case 'move': {
        const v = removeAt(doc, op.from ?? '');
        doc = addAt(doc, op.path, v ?? null);
        break;
      }
      case 'copy': {
        const v = getAt(doc, parsePointer(op.from ?? ''));
        if (v === undefined) throw new PatchError(`path ${op.from} does not exist`);
        doc = addAt(doc, op.path, structuredClone(v));
        break;
      }
      case 'test': {
        const v = getAt(doc, parsePointer(op.path));
        if (JSON.stringify(v) !== JSON.stringify(op.value)) throw new PatchError(`test failed at ${op.path}`);
        break;
      }
      default:
        throw new PatchError(`unknown JSON patch op ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}
