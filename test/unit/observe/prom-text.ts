/**
 * A small parser for the Prometheus text exposition format (0.0.4), enough to assert metric values
 * in tests: `# TYPE` lines, samples with labels (escaped quotes, backslashes, newlines), values.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  types: Record<string, string>;
  /** The value of the one sample matching name and (a subset of) labels; undefined when none. */
  get(name: string, labels?: Record<string, string>): number | undefined;
  all(name: string, labels?: Record<string, string>): Sample[];
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/gy;
  let m: RegExpExecArray | null = re.exec(text);
  while (m !== null) {
    out[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    if (re.lastIndex >= text.length) break;
    m = re.exec(text);
  }
  return out;
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const t = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (t !== null) types[t[1]!] = t[2]!;
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (m === null) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    const v = m[3]!;
    const value =
      v === '+Inf' ? Number.POSITIVE_INFINITY : v === '-Inf' ? Number.NEGATIVE_INFINITY : Number(v);
    if (Number.isNaN(value) && v !== 'NaN') throw new Error(`bad value in ${JSON.stringify(line)}`);
    samples.push({ name: m[1]!, labels: parseLabels(m[2] ?? ''), value });
  }
  const matches = (s: Sample, name: string, labels: Record<string, string>): boolean =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  return {
    samples,
    types,
    all: (name, labels = {}) => samples.filter((s) => matches(s, name, labels)),
    get(name, labels = {}) {
      const found = samples.filter((s) => matches(s, name, labels));
      if (found.length > 1)
        throw new Error(`${found.length} samples match ${name} ${JSON.stringify(labels)}`);
      return found[0]?.value;
    },
  };
}
