import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { repoRoot } from './support-paths.ts';

/**
 * Finds fields the Kubernetes API does not know (a typo such as `mountPropogation` or `failureTreshold`).
 * The schemas compiled into kubernetes-models check types and enums but allow unknown properties, while
 * `kubectl apply` (strict field validation) rejects them at install time. This walks the type
 * declarations kubernetes-models ships (one interface per API type, `"field"?: Type;` per property) to
 * learn every type's field names, then walks an object alongside.
 */

type Shape =
  | { kind: 'object'; fields: Map<string, Shape | (() => Shape)> }
  | { kind: 'array'; of: Shape | (() => Shape) }
  | { kind: 'map'; of: Shape | (() => Shape) }
  | { kind: 'leaf' };

const LEAF: Shape = { kind: 'leaf' };
const nodeModules = join(repoRoot, 'node_modules');
const cache = new Map<string, Shape>();

function declarationFile(specifier: string, from: string | undefined): string {
  if (specifier.startsWith('.')) return resolve(dirname(from!), specifier.replace(/\.js$/, '.d.ts'));
  return join(nodeModules, `${specifier}.d.ts`);
}

/** The shape of the interface declared in a kubernetes-models .d.ts file (leaf for type aliases). */
function shapeOfFile(file: string): Shape {
  const cached = cache.get(file);
  if (cached !== undefined) return cached;
  const text = readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    imports.set(m[1]!, declarationFile(m[2]!, file));
  }
  const body = /^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m.exec(text);
  if (body === null) {
    cache.set(file, LEAF); // IntOrString, Quantity, Time, ...: type aliases of primitives.
    return LEAF;
  }
  const fields = new Map<string, Shape | (() => Shape)>();
  const shape: Shape = { kind: 'object', fields };
  cache.set(file, shape); // Before recursing: some types are recursive (JSONSchemaProps).
  const lines = body[1]!.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^ {4}"([^"]+)"\??: (.*)$/.exec(lines[i]!);
    if (m === null) continue;
    let type = m[2]!;
    // Inline object types span lines until the closing brace at the property's indentation.
    while (type.endsWith('{') && i + 1 < lines.length) {
      i++;
      type += ` ${lines[i]!.trim()}`;
      if (/^ {4}\}/.test(lines[i]!)) break;
    }
    fields.set(m[1]!, lazyShape(type.replace(/;$/, '').trim(), imports));
  }
  return shape;
}

function lazyShape(type: string, imports: Map<string, string>): Shape | (() => Shape) {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return { kind: 'array', of: lazyShape(array[1]!, imports) };
  const map = /^\{ \[key: string\]: (.+?);? \}$/.exec(type);
  if (map) return { kind: 'map', of: lazyShape(map[1]!, imports) };
  const file = imports.get(type);
  return file === undefined ? LEAF : () => shapeOfFile(file);
}

const force = (s: Shape | (() => Shape)): Shape => (typeof s === 'function' ? s() : s);

/** Paths of properties the type does not declare, e.g. `spec.template.spec.containers[0].mountPropogation`. */
export function unknownFields(model: string, value: unknown): string[] {
  const out: string[] = [];
  walk(shapeOfFile(join(nodeModules, 'kubernetes-models', `${model}.d.ts`)), value, '', out);
  return out;
}

function walk(shape: Shape, value: unknown, path: string, out: string[]): void {
  if (value === null || typeof value !== 'object') return;
  if (shape.kind === 'array' && Array.isArray(value)) {
    for (const [i, v] of value.entries()) walk(force(shape.of), v, `${path}[${i}]`, out);
  } else if (shape.kind === 'map') {
    for (const [k, v] of Object.entries(value)) walk(force(shape.of), v, `${path}.${k}`, out);
  } else if (shape.kind === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const field = shape.fields.get(k);
      const at = path === '' ? k : `${path}.${k}`;
      if (field === undefined) out.push(at);
      else walk(force(field), v, at, out);
    }
  }
}
