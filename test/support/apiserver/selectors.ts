/**
 * Label and field selectors as the real API server parses them (the subset trellis and its tests
 * use). Parsing errors throw SelectorError, which the server turns into a 400 BadRequest Status.
 */
import { isObject, type JsonObject } from './patch.ts';

export class SelectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SelectorError';
  }
}

export type Matcher = (obj: JsonObject) => boolean;

/** Splits on commas that are not inside parentheses: "a in (x,y),b" -> ["a in (x,y)", "b"]. */
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

function labelsOf(obj: JsonObject): Record<string, unknown> {
  const meta = obj.metadata;
  return isObject(meta) && isObject(meta.labels) ? meta.labels : {};
}

export function parseLabelSelector(selector: string | undefined): Matcher {
  if (selector === undefined || selector.trim() === '') return () => true;
  const terms = splitTerms(selector).map((term): Matcher => {
    let m = /^([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (m) {
      const [, key, op, list] = m as unknown as [string, string, string, string];
      const values = new Set(list.split(',').map((v) => v.trim()));
      return op === 'in'
        ? (o) => values.has(String(labelsOf(o)[key]))
        : (o) => !(key in labelsOf(o)) || !values.has(String(labelsOf(o)[key]));
    }
    m = /^([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$/.exec(term);
    if (m) {
      const [, key, op, value] = m as unknown as [string, string, string, string];
      return op === '!=' ? (o) => labelsOf(o)[key] !== value : (o) => labelsOf(o)[key] === value;
    }
    m = /^(!?)([A-Za-z0-9./_-]+)$/.exec(term);
    if (m) {
      const [, not, key] = m as unknown as [string, string, string];
      return not === '!' ? (o) => !(key in labelsOf(o)) : (o) => key in labelsOf(o);
    }
    throw new SelectorError(`unable to parse requirement: ${JSON.stringify(term)}`);
  });
  return (o) => terms.every((t) => t(o));
}

/** Field paths each resource supports, as the real server's field label conversion allows. */
export const SUPPORTED_FIELDS: Readonly<Record<string, readonly string[]>> = {
  nodes: ['metadata.name', 'spec.unschedulable'],
  pods: [
    'metadata.name',
    'metadata.namespace',
    'spec.nodeName',
    'spec.restartPolicy',
    'status.phase',
    'status.podIP',
  ],
};

function fieldValue(obj: JsonObject, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split('.')) cur = isObject(cur) ? cur[part] : undefined;
  if (cur === undefined || cur === null) return path === 'spec.unschedulable' ? 'false' : '';
  return String(cur);
}

export function parseFieldSelector(resource: string, selector: string | undefined): Matcher {
  if (selector === undefined || selector.trim() === '') return () => true;
  const supported = SUPPORTED_FIELDS[resource] ?? [];
  const terms = splitTerms(selector).map((term): Matcher => {
    const m = /^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw new SelectorError(`invalid selector: '${term}'; can't understand '${term}'`);
    const [, field, op, value] = m as unknown as [string, string, string, string];
    if (!supported.includes(field)) throw new SelectorError(`field label not supported: ${field}`);
    return op === '!=' ? (o) => fieldValue(o, field) !== value : (o) => fieldValue(o, field) === value;
  });
  return (o) => terms.every((t) => t(o));
}
