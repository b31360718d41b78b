/** Human output of the operator commands: aligned tables and short key/value blocks. Pure. */
import { basename } from 'node:path';
import { describeUnread } from '../firewall/index.ts';
import type { CoverageReport } from './coverage.ts';
import type { DoctorReport } from './doctor.ts';
import { failingReadiness, isReady, type LeasesView, type RoutesView, type StatusView } from './views.ts';

/**
 * A cell as a terminal may show it: control characters (a pod name or namespace path as CNI_ARGS and
 * CNI_NETNS gave it, unchecked) written as \u escapes, so a value cannot forge a row or move the cursor.
 */
function visible(text: string): string {
  let out: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
    if (control) out = `${out ?? text.slice(0, i)}\\u${c.toString(16).padStart(4, '0')}`;
    else if (out !== undefined) out += text[i];
  }
  return out ?? text;
}

export function table(headers: string[], rawRows: string[][]): string {
  const rows = rawRows.map((r) => r.map(visible));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join('\n')}\n`;
}

/** As the readiness probe sees it; CNI ADD may still be served (a reconcile pass waiting, say). */
function readyText(s: StatusView): string {
  if (isReady(s)) return 'yes';
  const why = failingReadiness(s).join('; ');
  return s.ready ? `no: ${why} (CNI ADD is served)` : `no: ${why}`;
}

function masqueradeText(m: NonNullable<StatusView['masquerade']>): string {
  if (m.lastError !== undefined) return `FAILING: the nftables table could not be written: ${m.lastError}`;
  if (!m.enabled) return 'off';
  return m.noMasqueradeCIDRs.length === 0 ? 'on' : `on (not to ${m.noMasqueradeCIDRs.join(', ')})`;
}

function firewallText(f: NonNullable<StatusView['forwardFirewall']>): string {
  if (f.off === true) return 'not checked (--firewall-check-seconds 0)';
  if (f.checkedAt === undefined) return f.error === undefined ? 'not checked yet' : `unreadable: ${f.error}`;
  // A check that worked once and fails since: what follows is that check's, however old.
  if (f.error !== undefined)
    return `UNREADABLE since the check of ${f.checkedAt}: ${f.error}; then: ${judged(f)}`;
  return judged(f);
}

function judged(f: NonNullable<StatusView['forwardFirewall']>): string {
  const vxlan = f.vxlanBlocks ?? [];
  const unjudged =
    f.undecided === undefined || f.undecided.length === 0
      ? ''
      : `; cannot judge ${f.undecided.join(', ')} (rules it cannot read)`;
  const earlier = earlierText(f);
  const unread =
    f.unreadTables === undefined || f.unreadTables.length === 0
      ? ''
      : `; CANNOT READ ${f.unreadTables.map(describeUnread).join('; ')} (what it drops as last read)`;
  if (f.blocks.length === 0 && vxlan.length === 0 && unread === '') {
    return unjudged === ''
      ? `lets pod traffic through (checked ${f.checkedAt})${earlier}`
      : `no drop of pod traffic found (checked ${f.checkedAt})${earlier}${unjudged}`;
  }
  const parts: string[] = [];
  const chains = (bs: readonly { chain: string }[]): string =>
    [...new Set(bs.map((b) => b.chain))].join(', ');
  if (f.blocks.length > 0) parts.push(`DROPS pod traffic in ${chains(f.blocks)}`);
  if (vxlan.length > 0)
    parts.push(`DROPS VXLAN (UDP ${vxlan[0]!.port}) from tunnelled nodes in ${chains(vxlan)}`);
  if (parts.length === 0) parts.push('no drop of pod traffic found in the tables it read');
  return `${parts.join('; ')} (checked ${f.checkedAt}; trellis-agent doctor gives the fix)${earlier}${unread}${unjudged}`;
}

/** Accepts an earlier run inserted, left by --no-accept-forward, and whether pod traffic needs them. */
function earlierText(f: NonNullable<StatusView['forwardFirewall']>): string {
  const n = f.earlierAccepts?.length ?? 0;
  if (n === 0) return '';
  const hidden = f.hiddenBlocks ?? [];
  return hidden.length === 0
    ? `; ${n} accept rule(s) an earlier run inserted are still there (--no-accept-forward leaves them)`
    : `; part of it only through ${n} accept rule(s) an earlier run inserted, which --no-accept-forward leaves and does not put back (trellis-agent doctor says what)`;
}

function preparedPairsText(p: NonNullable<StatusView['preparedPairs']>): string {
  if (!p.watching) return `${p.dir} not watched (the log says why): ADD makes every pair`;
  return `made as pod namespaces appear in ${p.dir}; ${p.waiting} waiting for their ADD`;
}

export function formatStatus(s: StatusView): string {
  const kv: [string, string][] = [
    ['node', s.node],
    ['version', `${s.version} (node ${s.runtime})`],
    ['mode', `${s.mode}${s.standalone ? ' (standalone)' : ''}`],
    ['ready', readyText(s)],
    ['pod CIDRs', s.podCIDRs.length === 0 ? '(none yet)' : s.podCIDRs.join(', ')],
    [
      'pod MTU',
      s.mtuProblem ??
        (s.routeMtu === undefined ? String(s.mtu) : `${s.mtu} (${s.routeMtu} for traffic leaving the node)`),
    ],
    ...(s.mssClamp === undefined
      ? []
      : [['TCP MSS clamp', `SYNs into ${s.mssClamp.join(', ')} (route MTU)`] as [string, string]]),
    ...(s.mssClampRefused === undefined
      ? []
      : [['TCP MSS clamp', `refused by the kernel: ${s.mssClampRefused}`] as [string, string]]),
    ...(s.masquerade === undefined ? [] : [['masquerade', masqueradeText(s.masquerade)] as [string, string]]),
    ...(s.forwardFirewall === undefined
      ? []
      : [['host firewall', firewallText(s.forwardFirewall)] as [string, string]]),
    ...(s.preparedPairs === undefined
      ? []
      : [['veth pairs ahead', preparedPairsText(s.preparedPairs)] as [string, string]]),
    ['leases', String(s.leases)],
    ['CNI socket', s.socket],
    [
      'CNI config',
      s.cniConfigShadowedBy === undefined
        ? s.cniConfDir
        : `${s.cniConfDir}: ${s.cniConfigShadowedBy.join(', ')} ${s.cniConfigShadowedBy.length === 1 ? 'sorts' : 'sort'} before trellis's, so new pods get ${s.cniConfigShadowedBy[0]}'s network`,
    ],
    [
      'CNI binaries',
      s.cniBinaryProblems === undefined
        ? s.cniBinDir
        : `${s.cniBinDir}: ${s.cniBinaryProblems.map((p) => `${basename(p.binary)} ${p.problem}`).join('; ')}`,
    ],
    ['state', s.stateDir],
  ];
  if (s.watch !== undefined) {
    kv.push([
      'node watch',
      `${s.watch.synced ? 'synced' : 'not synced'}, resourceVersion ${s.watch.resourceVersion || '-'}, ${s.watch.restarts} restarts, ${s.watch.relists} lists${
        s.watch.unchangedEvents === undefined
          ? ''
          : `, ${s.watch.unchangedEvents} unchanged Node events skipped`
      }${s.watch.silentMs === undefined ? '' : `, last API answer ${Math.round(s.watch.silentMs / 1000)} s ago`}${
        s.watch.encoding === undefined
          ? ''
          : `, Nodes in ${s.watch.encoding === 'json' ? 'JSON' : 'protobuf'}`
      }`,
    ]);
    const f = s.watch.lastFailure;
    if (f !== undefined) kv.push(['last API failure', `${f.at}: ${f.error}`]);
  }
  const w = Math.max(...kv.map(([k]) => k.length));
  let out = `${kv.map(([k, v]) => `${`${k}:`.padEnd(w + 2)}${v}`).join('\n')}\n`;
  if (s.ipam.length > 0) {
    out += `\n${table(
      ['FAMILY', 'RANGE', 'USED', 'CAPACITY'],
      s.ipam.map((u) => [`IPv${u.family}`, u.range, String(u.used), u.capacity]),
    )}`;
  }
  return out;
}

export function formatRoutes(v: RoutesView): string {
  let out = table(
    ['STATE', 'DESTINATION', 'WANT', 'KERNEL'],
    v.routes.map((r) => [
      r.state,
      r.dst,
      r.want || '-',
      r.reason === undefined ? r.have || '-' : `${r.have || '-'} (${r.reason})`,
    ]),
  );
  out += `\n${v.routes.length} routes, ${v.drift} drifted\n`;
  // An older agent says nothing of it: only an explicit false is said.
  if (v.synced === false) {
    out +=
      'not synced: the agent has no list of Nodes with this one yet, so the routes it wants are not known (none is judged missing or stale)\n';
  }
  if (v.peers.length > 0) {
    out += `\n${table(
      ['PEER', 'FAMILY', 'PATH', 'VIA', 'POD CIDRS'],
      v.peers.map((p) => [
        p.node,
        `IPv${p.family}`,
        p.path,
        'reason' in p ? `${p.nodeIP}: ${p.reason}` : `${p.nodeIP} dev ${p.linkName}`,
        p.podCIDRs.join(', '),
      ]),
    )}`;
  }
  // Why a peer on a connected subnet is tunnelled is not visible in the kernel; say it.
  for (const p of v.peers) {
    if (p.path === 'vxlan' && p.why !== undefined && p.why !== '')
      out += `tunnelled: ${p.node} IPv${p.family}: ${p.why}\n`;
  }
  for (const p of v.problems) out += `problem: ${p.node}: ${p.problem}\n`;
  return out;
}

export function formatLeases(v: LeasesView): string {
  return `${table(
    ['POD', 'ADDRESSES', 'CONTAINER', 'IF', 'HOST VETH', 'NETNS'],
    v.leases.map((l) => [
      l.podName === '' ? '-' : `${l.podNamespace}/${l.podName}`,
      l.addresses.join(','),
      l.containerId.slice(0, 12),
      l.ifname,
      l.hostVeth,
      `${l.netns || '-'}${l.netnsAlive === false ? ' (gone)' : ''}`,
    ]),
  )}\n${v.leases.length} leases\n${heldLines(v)}${inFlightLine(v)}`;
}

/** Names shown of the veths in flight: a drain may have dozens at once, and --json lists them all. */
const IN_FLIGHT_SHOWN = 10;

/** Veths with no lease that are no orphans: a DEL or GC deleting them, or a call under way on their pod. */
function inFlightLine(v: LeasesView): string {
  const names = v.vethsInFlight ?? [];
  if (names.length === 0) return '';
  const more = names.length - IN_FLIGHT_SHOWN;
  const shown =
    names.slice(0, IN_FLIGHT_SHOWN).join(', ') + (more > 0 ? ` and ${more} more (--json lists them)` : '');
  return `${names.length} veth${names.length === 1 ? '' : 's'} in flight (being deleted after DEL or GC, or a CNI call under way): ${shown}\n`;
}

/** Attachments whose lease record was quarantined: their addresses and veths are held, not listed above. */
function heldLines(v: LeasesView): string {
  const held = v.held ?? [];
  if (held.length === 0) return '';
  const rows = held.map((h) => `  ${h.containerId.slice(0, 12)} ${h.ifname} (host veth ${h.hostVeth})`);
  return `${held.length} held (lease record quarantined; addresses and veth kept until DEL or GC):\n${rows.join('\n')}\n`;
}

export function formatDoctor(r: DoctorReport): string {
  let out = '';
  for (const c of r.checks) {
    const mark = c.findings.length > 0 ? 'FAIL' : c.skipped !== undefined ? 'SKIP' : 'ok';
    out += `[${mark.padEnd(4)}] ${c.title}${c.skipped !== undefined ? ` (${c.skipped})` : ''}\n`;
    for (const f of c.findings) out += `       problem: ${f.problem}\n       fix:     ${f.fix}\n`;
  }
  const n = r.checks.reduce((a, c) => a + c.findings.length, 0);
  out += r.ok ? '\nno problems found\n' : `\n${n} problem${n === 1 ? '' : 's'} found\n`;
  return out;
}

export function formatCoverage(r: CoverageReport): string {
  let out = table(
    ['NODE', 'POD CIDRS', 'AGENT', 'VERSION', 'NOT ROUTED FROM'],
    r.nodes.map((n) => [
      n.node,
      n.podCIDRs.join(',') || '-',
      n.agent,
      n.version || '-',
      n.missingOn.join(',') || '-',
    ]),
  );
  for (const n of r.nodes) {
    for (const p of n.problems) out += `\n${n.node}: ${p.problem}\n  fix: ${p.fix}\n`;
  }
  out += r.ok
    ? `\nall ${r.nodes.length} nodes covered\n`
    : `\n${r.gaps} of ${r.nodes.length} nodes have gaps\n`;
  return out;
}
