/**
 * Pure rendering for people: the connectivity matrix and agent log lines. No I/O here, so the
 * demo's output can be unit tested.
 */

export interface PodEndpoint {
  name: string;
  node: string;
  v4: string;
  v6: string;
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
  /** Every ordered pair of distinct pods answered over both families. */
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
 * One table per family: rows are sources, columns destinations; `ok` / `--` (no answer) / `.` (self).
 * Pods are labelled by name with their node and address listed once above the tables.
 */
export function formatMatrix(m: ConnectivityMatrix): string {
  const lines: string[] = [];
  const nameW = Math.max(4, ...m.pods.map((p) => p.name.length));
  lines.push('pods:');
  for (const p of m.pods) lines.push(`  ${pad(p.name, nameW)}  ${pad(p.node, 8)}  ${pad(p.v4, 15)}  ${p.v6}`);
  const byKey = new Map(m.cells.map((c) => [`${c.family} ${c.from} ${c.to}`, c]));
  for (const family of [4, 6] as const) {
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
    `${good}/${total} pings answered (${pairs} ordered pod pairs x IPv4, IPv6)${m.ok ? '' : ': FAILURES'}`,
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

/** `12:00:01.234 node-1  INFO  msg key=value ...` for one parsed pino line (or a raw line). */
export function formatLogLine(node: string, line: Record<string, unknown>, maxFieldChars = 160): string {
  if (typeof line.raw === 'string' && line.msg === undefined) return `${pad(node, 8)} ${line.raw}`;
  const time =
    typeof line.time === 'number' || typeof line.time === 'string' ? new Date(line.time) : undefined;
  const t =
    time !== undefined && !Number.isNaN(time.getTime()) ? time.toISOString().slice(11, 23) : ' '.repeat(12);
  const level = pad(
    typeof line.level === 'number'
      ? (LEVELS[line.level] ?? String(line.level))
      : String(line.level).toUpperCase(),
    5,
  );
  const fields = Object.entries(line)
    .filter(([k]) => !SKIP_KEYS.has(k))
    .map(([k, v]) => {
      const text = `${k}=${fieldValue(v)}`;
      return text.length > maxFieldChars ? `${text.slice(0, maxFieldChars - 1)}…` : text;
    });
  return `${t} ${pad(node, 8)} ${level} ${String(line.msg ?? '')}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}`;
}
