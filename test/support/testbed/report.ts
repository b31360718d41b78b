/**
 * Pure rendering for people: the connectivity matrix and agent log lines. No I/O here, so the
 * demo's output can be unit tested.
 */

export interface PodEndpoint {
  name: string;
  node: string;
  /** The pod's address of each family its cluster has. */
  v4?: string | undefined;
  v6?: string | undefined;
}

export interface MatrixCell {
  from: string;
  to: string;
  family: 4 | 6;
  ok: boolean;
  /** Round-trip time of the successful ping, in ms. */
  rttMs?: number;
  attempts: number;
}

export interface ConnectivityMatrix {
  pods: PodEndpoint[];
  cells: MatrixCell[];
  /** Every ordered pair of distinct pods answered over every family of the cluster. */
  ok: boolean;
  failures: MatrixCell[];
}

export function summarizeMatrix(pods: PodEndpoint[], cells: MatrixCell[]): ConnectivityMatrix {
  const failures = cells.filter((c) => !c.ok);
  return { pods, cells, ok: failures.length === 0, failures };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

/**
 * One table per family (of those the pods have): rows are sources, columns destinations; `ok` / `--`
 * (no answer) / `.` (self). Pods are labelled by name with their node and addresses listed once above
 * the tables.
 */
export function formatMatrix(m: ConnectivityMatrix): string {
  const lines: string[] = [];
  const nameW = Math.max(4, ...m.pods.map((p) => p.name.length));
  const families = ([4, 6] as const).filter((f) => m.pods.some((p) => (f === 4 ? p.v4 : p.v6) !== undefined));
  lines.push('pods:');
  for (const p of m.pods) {
    const addrs = families.map((f) => (f === 4 ? pad(p.v4 ?? '-', 15) : (p.v6 ?? '-')));
    lines.push(`  ${pad(p.name, nameW)}  ${pad(p.node, 8)}  ${addrs.join('  ')}`.trimEnd());
  }
  const byKey = new Map(m.cells.map((c) => [`${c.family} ${c.from} ${c.to}`, c]));
  for (const family of families) {
    lines.push('');
    lines.push(`IPv${family}  (row pings column)`);
    const colW = Math.max(5, nameW);
    lines.push(`  ${pad('', nameW)}  ${m.pods.map((p) => pad(p.name, colW)).join(' ')}`);
    for (const from of m.pods) {
      const cells = m.pods.map((to) => {
        if (to.name === from.name) return pad('.', colW);
        const c = byKey.get(`${family} ${from.name} ${to.name}`);
        return pad(c === undefined ? '?' : c.ok ? 'ok' : '--', colW);
      });
      lines.push(`  ${pad(from.name, nameW)}  ${cells.join(' ')}`);
    }
  }
  const total = m.cells.length;
  const good = total - m.failures.length;
  lines.push('');
  const pairs = m.pods.length * (m.pods.length - 1);
  lines.push(
    `${good}/${total} pings answered (${pairs} ordered pod pairs x ${families.map((f) => `IPv${f}`).join(', ')})${m.ok ? '' : ': FAILURES'}`,
  );
  for (const f of m.failures) lines.push(`  no answer: ${f.from} -> ${f.to} over IPv${f.family}`);
  return lines.join('\n');
}

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const SKIP_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'node', 'v']);

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

export interface LogFormatOptions {
  /** Longer key=value fields are cut (default 160 characters). */
  maxFieldChars?: number;
  /** ANSI colours for a terminal: node name by node number, level by severity. */
  color?: boolean;
}

const NODE_COLORS = [36, 35, 32, 34, 33, 96, 95, 92, 94, 93];
const LEVEL_COLORS: Record<string, number> = { WARN: 33, ERROR: 31, FATAL: 31, DEBUG: 90, TRACE: 90 };

function paint(text: string, code: number | undefined, on: boolean): string {
  return on && code !== undefined ? `\x1b[${code}m${text}\x1b[0m` : text;
}

function nodeColor(node: string): number {
  const n = Number(/(\d+)$/.exec(node)?.[1] ?? 0);
  return NODE_COLORS[n % NODE_COLORS.length]!;
}

/** `12:00:01.234 node-1   INFO  msg  key=value ...` for one parsed pino line (or a raw line). */
export function formatLogLine(
  node: string,
  line: Record<string, unknown>,
  opts: LogFormatOptions = {},
): string {
  const maxFieldChars = opts.maxFieldChars ?? 160;
  const color = opts.color === true;
  const who = paint(pad(node, 8), nodeColor(node), color);
  if (typeof line.raw === 'string' && line.msg === undefined) return `${who} ${line.raw}`;
  const time =
    typeof line.time === 'number' || typeof line.time === 'string' ? new Date(line.time) : undefined;
  const t =
    time !== undefined && !Number.isNaN(time.getTime()) ? time.toISOString().slice(11, 23) : ' '.repeat(12);
  const levelName =
    typeof line.level === 'number'
      ? (LEVELS[line.level] ?? String(line.level))
      : String(line.level).toUpperCase();
  const level = paint(pad(levelName, 5), LEVEL_COLORS[levelName], color);
  const fields = Object.entries(line)
    .filter(([k]) => !SKIP_KEYS.has(k))
    .map(([k, v]) => {
      const text = `${k}=${fieldValue(v)}`;
      return text.length > maxFieldChars ? `${text.slice(0, maxFieldChars - 1)}…` : text;
    });
  const rest = fields.length > 0 ? `  ${paint(fields.join(' '), 90, color)}` : '';
  return `${paint(t, 90, color)} ${who} ${level} ${String(line.msg ?? '')}${rest}`;
}
