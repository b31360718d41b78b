/**
 * Helpers for the Kubernetes-side fault suite: what the kernel shows on the test bed's nodes (route
 * snapshots, `ip monitor route`, pings that run through a fault) and what the agents logged. Every
 * command runs inside the test bed's own namespaces.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { DEFAULT_BACKOFF } from '../../../pkg/k8s/backoff.ts';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { ipJson, nsExec } from '../../support/netns.ts';
import { addrOf, type Family, nodeObject, planNode, type Testbed } from '../../support/testbed/index.ts';

const execFileP = promisify(execFile);

export type Route = { dst: string; gateway?: string; dev?: string; type?: string };

/** `TRELLIS_LONG_FAULTS=1`: the outages last as long as the issue asks (a minute), not ~10 s. */
export const LONG_FAULTS = process.env.TRELLIS_LONG_FAULTS === '1';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until `pred` holds; the elapsed ms, or throws after `timeoutMs`. */
export async function within(timeoutMs: number, what: string, pred: () => boolean): Promise<number> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await sleep(50);
  }
  return Date.now() - start;
}

/** Every route of the node's main table (any protocol), both families, sorted: what must not move. */
export function allRoutes(tb: Testbed, node: string): string[] {
  const ns = tb.node(node).ns;
  const dump = (f: 4 | 6): string[] =>
    ipJson<Record<string, unknown>[]>(ns, `-${f}`, 'route', 'show', 'table', 'main').map((r) =>
      JSON.stringify(r),
    );
  return [...dump(4), ...dump(6)].sort();
}

/** trellis's routes (protocol 126) on a node, as "dst gateway dev type" strings, sorted. */
export function ownedRoutes(tb: Testbed, node: string): string[] {
  return [...tb.routes(node, 4), ...tb.routes(node, 6)]
    .map((r: Route) => [r.type ?? 'unicast', r.dst, r.gateway ?? '-', r.dev ?? '-'].join(' '))
    .sort();
}

export function hasRoute(tb: Testbed, node: string, dst: string, gateway?: string): boolean {
  const family = dst.includes(':') ? 6 : 4;
  return tb
    .routes(node, family)
    .some((r) => r.dst === dst && (gateway === undefined || r.gateway === gateway));
}

/** Route monitor lines about pod CIDRs (10.244/16, fd00:10:244::/48) other than the `expected` ones. */
export function podRouteChurn(lines: readonly string[], expected: readonly string[]): string[] {
  return lines.filter((l) => /10\.244\.|fd00:10:244:/.test(l) && !expected.some((e) => l.includes(e)));
}

/** The node's agent log lines from index `from` on (TestbedNode.logs spans every agent run). */
export function logsSince(tb: Testbed, node: string, from: number): Record<string, unknown>[] {
  return tb.node(node).logs.slice(from);
}

export function logTime(line: Record<string, unknown>): number {
  return typeof line.time === 'string' ? Date.parse(line.time) : Number(line.time);
}

/** Log lines at error level or worse. */
export function errorLines(lines: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  return lines.filter((l) => l.level === 'error' || l.level === 'fatal');
}

/**
 * A Node object with no namespace behind it (index 100+ so it never collides with the test bed's
 * own nodes): every agent must route its pod CIDRs to its InternalIPs, which is all a test needs to
 * see a change in the API arrive.
 */
export function phantomNode(index: number): {
  name: string;
  v4: string;
  v6: string;
  cidrs: [string, string];
  object: Record<string, unknown>;
} {
  const plan = planNode(index, 0);
  return {
    name: plan.name,
    v4: plan.v4,
    v6: plan.v6,
    cidrs: plan.podCIDRs,
    object: nodeObject(plan),
  };
}

/** The watch restarts an agent logged at debug, one a retry (the warning says a failure once a run). */
export interface WatchRestart {
  at: number;
  restartInMs: number;
  error: string;
}

export function watchRestarts(lines: readonly Record<string, unknown>[]): WatchRestart[] {
  return lines
    .filter((l) => l.msg === 'node list or watch retry scheduled')
    .map((l) => ({ at: logTime(l), restartInMs: Number(l.restartInMs), error: String(l.error) }));
}

/** The agent's watch backoff (the informer's defaults; no flag changes them). */
export const BACKOFF = DEFAULT_BACKOFF;

/** The n-th consecutive failure waits in [ceiling/2, ceiling]; computed here, not with the code under test. */
export function backoffCeiling(failure: number): number {
  return Math.min(BACKOFF.maxMs, BACKOFF.initialMs * 2 ** (failure - 1));
}

/**
 * The agent's /readyz (or /healthz) status code, asked from inside the node's namespace at the node's
 * address of `family` (default: the cluster's first), as a kubelet would on a node of that family.
 */
/** `trellis-agent CMD` (status, doctor) inside a node's namespace, against its agent, as an operator runs it. */
export function operatorCli(
  tb: Testbed,
  node: string,
  cmd: 'status' | 'doctor',
): { code: number | null; stdout: string } {
  const n = tb.node(node);
  const r = spawnSync('ip', ['netns', 'exec', n.ns, AGENT_BINARY, cmd, '--socket', n.agent!.socket], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout };
}

export async function probe<F extends Family>(
  tb: Testbed<F>,
  node: string,
  path: '/readyz' | '/healthz',
  family: F = tb.families[0]!,
): Promise<number> {
  const n = tb.node(node);
  const host = family === 4 ? addrOf(n.plan, 4) : `[${addrOf(n.plan, 6)}]`;
  const { stdout } = await execFileP('ip', [
    'netns',
    'exec',
    n.ns,
    'curl',
    '-s',
    '-g', // brackets of an IPv6 address, not a glob
    '-o',
    '/dev/null',
    '-m',
    '2',
    '-w',
    '%{http_code}',
    `http://${host}:9743${path}`,
  ]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '0' }));
  return Number(stdout);
}

/** The node's links as "name#ifindex" (a device deleted and recreated gets a new index), sorted. */
export function links(tb: Testbed, node: string): string[] {
  return ipJson<{ ifname: string; ifindex: number }[]>(tb.node(node).ns, 'link', 'show')
    .map((l) => `${l.ifname}#${l.ifindex}`)
    .sort();
}

/** The agent's nftables table without counters: what a fault must leave as it was. */
export function nftTable(tb: Testbed, node: string): string {
  return nsExec(tb.node(node).ns, 'nft', ['-s', 'list', 'table', 'inet', 'trellis']);
}

export { backgroundPing, monitorRoutes, type PingCount } from '../../support/testbed/index.ts';
