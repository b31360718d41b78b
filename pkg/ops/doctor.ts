/**
 * `trellis-agent doctor`: checks the node trellis runs on. Pure: every check is a function over facts
 * gathered beforehand (doctor-gather.ts), so each fault is a table row in a unit test. Every problem
 * comes with the fix an operator can apply.
 */
import { REQUIRED_CNI_BINARIES } from '../agent/publication.ts';
import { configsBefore, configsShadowing, isMetaPluginConfig } from '../cniconf/index.ts';
import { PUBLISHED_NETWORK_NAME } from '../cniconf/render.ts';
import { isHostVethName, shortId } from '../datapath/names.ts';
import {
  DOCKER_NOTE,
  describeBlock,
  describeUnread,
  describeVxlanBlock,
  fixCommand,
  LEGACY_LIST_UNREADABLE,
  type UnreadTable,
  VXLAN_NOTE,
  vxlanFixCommand,
} from '../firewall/index.ts';
import { cidrContains, familyName, familyOfText, parseCidr, parseIp } from '../ip/index.ts';
import { UNREADABLE_HOLDER } from '../routes/diff.ts';
import { VXLAN_OVERHEAD } from '../vxlan/constants.ts';
import { peerRouteStates } from './peer-coverage.ts';
import { failingReadiness, type LeasesView, type RoutesView, type StatusView } from './views.ts';

export interface Finding {
  problem: string;
  fix: string;
}

export interface CheckResult {
  name: string;
  /** What was checked, for the human output. */
  title: string;
  findings: Finding[];
  /** Set when the check could not run (it then counts as passed: another check reports the cause). */
  skipped?: string;
}

export interface DoctorReport {
  ok: boolean;
  checks: CheckResult[];
  /**
   * Set when doctor could not check the node at all (gathering its facts failed: the netlink handle
   * could not be opened or its links listed); `checks` is then empty and the CLI exits 3, not 1.
   */
  error?: string;
}

export type Gathered<T> = { ok: true; value: T } | { ok: false; error: string };

/** How DoctorFacts.agent's error starts when the agent answered some requests and failed others. */
export const ANSWERED_PREFIX = 'the agent answers its admin socket, but';

export interface LinkFact {
  name: string;
  mtu: number;
  kind: string | undefined;
  /** Administratively up (IFF_UP); absent when not known. */
  up?: boolean;
  /** Has carrier (IFF_LOWER_UP); absent when not known. */
  lowerUp?: boolean;
}

/** DoctorFacts.agent's error when the admin socket is turned off (an empty path): nothing to ask. */
export const ADMIN_SOCKET_OFF =
  "the agent's admin socket is turned off (TRELLIS_ADMIN_SOCKET or --admin-socket empty)";

export interface DoctorFacts {
  /** The running agent through its admin socket (ADMIN_SOCKET_OFF: not asked). */
  agent: Gathered<{ status: StatusView; routes: RoutesView; leases: LeasesView }>;
  confDir: string;
  expectedConflist: string;
  /** File names in the conf dir. */
  confFiles: Gathered<string[]>;
  /**
   * The config files that sort before ours, parsed (undefined: unreadable): a meta-plugin's (Multus)
   * hands pods on to trellis. Absent: none read (each then counts as another network's).
   */
  confsBefore?: Record<string, unknown>;
  /** Our config list parsed (undefined when the file is absent). */
  ourConflist: Gathered<{ types: string[]; mtu: number | undefined }> | undefined;
  binDir: string;
  /**
   * Per required binary: present and executable; `danglingTo`: a symlink whose target does not exist
   * here (it may on the host: a symlink into a host path the agent's container does not mount).
   */
  binaries: Record<string, { present: boolean; executable: boolean; danglingTo?: string }>;
  /** `trellis --version` output of the installed shim; undefined when it is not installed. */
  shimVersion: Gathered<string> | undefined;
  /** The pod CIDRs the agent's last run saved (node.json), read when the agent cannot be asked. */
  rememberedPodCIDRs?: string[] | undefined;
  /** Raw /proc/sys values; undefined when unreadable (IPv6 disabled). */
  forwarding: { v4: string | undefined; v6: string | undefined };
  /** rp_filter: conf/all and per interface. */
  rpFilter: { all: number | undefined; byIface: Record<string, number | undefined> };
  links: LinkFact[];
  /** Interfaces carrying the default routes (for the MTU check when there are no peers). */
  defaultRouteIfaces: string[];
  /** VXLAN peers' InternalIP -> the interface the main table routes it through. */
  peerUplinks: Record<string, string>;
  /**
   * The agent's leases asked again once `links` was listed. An ADD makes its lease before its veth;
   * a DEL (and GC) releases the lease first and deletes the veth after, off its critical path (the
   * BackgroundDeleter: 15-33 ms in the kernel, longer under load), and each view names the veths
   * whose deletion is pending or whose attachment has a call in flight (vethsInFlight). So a veth is
   * an orphan only when neither list owns it nor names it in flight, and a lease has lost its veth
   * only when both hold it; one list alone would call a pod starting between the two reads an orphan,
   * and tell the operator to delete its veth.
   */
  leasesAfterLinks?: LeasesView | undefined;
  /** Lease netns path -> still exists. */
  netnsExists: Record<string, boolean>;
  /** Encapsulation overhead of the mode in use (0 for host-gw). */
  overhead: number;
}

const needsAgent = (f: DoctorFacts): string | undefined => {
  if (f.agent.ok) return undefined;
  if (f.agent.error === ADMIN_SOCKET_OFF)
    return `${ADMIN_SOCKET_OFF}: what only the agent knows is not checked`;
  return f.agent.error.startsWith(ANSWERED_PREFIX)
    ? 'the agent did not answer all of what doctor asks it (see the agent check)'
    : 'the agent is not reachable (see the agent check)';
};

function checkAgent(f: DoctorFacts): CheckResult {
  const r: CheckResult = { name: 'agent', title: 'agent running and ready', findings: [] };
  if (!f.agent.ok && f.agent.error === ADMIN_SOCKET_OFF) return { ...r, skipped: ADMIN_SOCKET_OFF };
  if (!f.agent.ok && f.agent.error.startsWith(ANSWERED_PREFIX)) {
    r.findings.push({
      problem: f.agent.error,
      fix: "read the agent's log (kubectl -n kube-system logs <its pod> -c agent): it runs, and one of its answers failed",
    });
    return r;
  }
  if (!f.agent.ok) {
    r.findings.push({
      problem: `cannot reach the agent's admin socket: ${f.agent.error}`,
      fix: 'check that the trellis agent runs on this node (kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o wide) and read its log; pass --admin-socket if it uses another path',
    });
    return r;
  }
  const s = f.agent.value.status;
  const failing = failingReadiness(s);
  for (const why of failing) {
    r.findings.push({
      problem: `the agent is not ready: ${why}`,
      fix: 'the reason names what it waits for; the other checks below usually show the cause',
    });
  }
  // No check below looks at the API server: say what the agent last heard from it, while that is what
  // it waits for (no list of Nodes yet, or a watch that keeps failing), not after an old outage.
  const failure = s.watch?.lastFailure;
  const watchFailing = failing.some((why) => why.startsWith('nodeWatch: '));
  if (failure !== undefined && (s.watch?.synced === false || watchFailing)) {
    r.findings.push({
      problem: `the last list or watch of Nodes failed at ${failure.at}: ${failure.error}`,
      fix: 'check that this node reaches the API server (the kubernetes Service or the address in the kubeconfig) and that the trellis service account may list and watch nodes',
    });
  }
  return r;
}

function checkConfig(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'cni-config',
    title: `CNI config ${f.expectedConflist} present and first in ${f.confDir}`,
    findings: [],
  };
  if (f.agent.ok && f.agent.value.status.cniConfigPublished === false)
    return { ...r, skipped: 'the agent publishes no config list (--no-cni-config)' };
  if (!f.confFiles.ok) {
    r.findings.push({
      problem: `cannot read ${f.confDir}: ${f.confFiles.error}`,
      fix: `create it (the agent publishes its config there once ready) or pass --cni-conf-dir`,
    });
    return r;
  }
  // As the agent's warning and trellis_cni_config_shadowed judge it: Multus first is no shadow.
  const before = configsShadowing(
    f.confFiles.value,
    f.expectedConflist,
    PUBLISHED_NETWORK_NAME,
    (name) => f.confsBefore?.[name],
  );
  if (!f.confFiles.value.includes(f.expectedConflist)) {
    r.findings.push({
      problem: `${f.expectedConflist} is missing from ${f.confDir}: the runtime cannot create pod networks with trellis`,
      fix: 'the agent writes it once ready: see the agent check, or restart the trellis pod on this node',
    });
  } else if (before.length > 0) {
    const others = before.slice(1);
    r.findings.push({
      problem: `${before[0]} sorts before ${f.expectedConflist} in ${f.confDir}: containerd and CRI-O use the first file, so pods get that network, not trellis${before[0] === configsBefore(f.confFiles.value, f.expectedConflist)[0] ? '' : ' (the meta-plugin sorting first hands pods on to it)'}`,
      fix: isMetaPluginConfig(f.confsBefore?.[before[0]!])
        ? `make trellis the default network of the meta-plugin (Multus) that ${before[0]} configures: "clusterNetwork": "${PUBLISHED_NETWORK_NAME}" there (or in the Multus daemon's config that writes it)`
        : `remove ${f.confDir}/${before[0]} (a previous network plugin's config)${others.length > 0 ? ` and the others before ${f.expectedConflist}: ${others.join(', ')}` : ''}`,
    });
  }
  const c = f.ourConflist;
  if (c !== undefined && !c.ok) {
    r.findings.push({
      problem: `${f.expectedConflist} is unreadable: ${c.error}`,
      fix: `delete ${f.confDir}/${f.expectedConflist}; the agent rewrites it within a reconcile pass`,
    });
  } else if (c !== undefined && !c.value.types.includes('trellis')) {
    r.findings.push({
      problem: `${f.expectedConflist} holds no trellis plugin (its plugin types: ${JSON.stringify(c.value.types)})`,
      fix: `delete ${f.confDir}/${f.expectedConflist}; the agent rewrites it`,
    });
  } else if (
    c !== undefined &&
    f.agent.ok &&
    c.value.mtu !== undefined &&
    c.value.mtu !== f.agent.value.status.mtu
  ) {
    r.findings.push({
      problem: `${f.expectedConflist} sets MTU ${c.value.mtu}, the agent uses ${f.agent.value.status.mtu}`,
      fix: 'wait for the next reconcile pass (the agent rewrites the file) or restart the agent',
    });
  }
  return r;
}

function checkBinaries(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'cni-binaries',
    title: `CNI plugins ${REQUIRED_CNI_BINARIES.join(', ')} in ${f.binDir}`,
    findings: [],
  };
  // What the agent found running each binary where the runtime runs it (the host's mount namespace).
  const agentProblems = f.agent.ok ? (f.agent.value.status.cniBinaryProblems ?? []) : undefined;
  for (const name of REQUIRED_CNI_BINARIES) {
    const b = f.binaries[name];
    if (b?.danglingTo !== undefined) {
      // Judged where it runs: fine when the agent ran it on the host without a problem.
      if (agentProblems !== undefined && !agentProblems.some((p) => p.binary === `${f.binDir}/${name}`))
        continue;
      r.findings.push({
        problem: `${f.binDir}/${name} is a symlink to ${b.danglingTo}, which does not exist here${agentProblems === undefined ? '' : ' nor, by the agent, on the host'}`,
        fix: `point it at a ${name} plugin that exists on the host, or delete it and restart the trellis pod on this node (install-cni keeps any entry it finds, and copies one only where there is none)`,
      });
    } else if (b === undefined || !b.present) {
      r.findings.push({
        problem: `${f.binDir}/${name} is missing`,
        fix: 'restart the trellis pod on this node: its install-cni init container copies the plugins',
      });
    } else if (!b.executable) {
      r.findings.push({
        problem: `${f.binDir}/${name} is not executable`,
        fix: `chmod 0755 ${f.binDir}/${name}`,
      });
    }
  }
  // What the agent found running each binary's VERSION where the runtime runs it (the host's mount
  // namespace): a binary that is there and executable but cannot run on this host (its glibc).
  const seen = new Set(r.findings.map((x) => x.problem));
  for (const p of f.agent.ok ? (f.agent.value.status.cniBinaryProblems ?? []) : []) {
    if (p.problem === 'is missing' && seen.has(`${p.binary} is missing`)) continue;
    // A dangling symlink's finding above says it already.
    if (f.binaries[p.binary.slice(f.binDir.length + 1)]?.danglingTo !== undefined) continue;
    r.findings.push({
      problem: `${p.binary} ${p.problem} (the agent runs its VERSION where the runtime runs it); the config list stays unpublished`,
      fix: p.binary.endsWith('/trellis')
        ? 'the trellis binary does not run on this host: check the node is linux/amd64 or linux/arm64 with glibc, then restart the trellis pod'
        : `replace ${p.binary} with a build that runs on this host (the distribution's containernetworking-plugins >= 1.0, or the static upstream release); the agent publishes at its next pass`,
    });
  }
  return r;
}

function checkShimVersion(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'shim-version',
    title: 'installed trellis plugin matches the agent version',
    findings: [],
  };
  const skip =
    needsAgent(f) ?? (f.shimVersion === undefined ? 'the trellis plugin is not installed' : undefined);
  if (skip !== undefined || f.shimVersion === undefined || !f.agent.ok) return { ...r, skipped: skip };
  const want = f.agent.value.status.version;
  if (!f.shimVersion.ok) {
    r.findings.push({
      problem: `${f.binDir}/trellis --version failed: ${f.shimVersion.error}`,
      fix: 'restart the trellis pod on this node to reinstall the plugin',
    });
    return r;
  }
  const got = f.shimVersion.value.trim().replace(/^trellis\s+/, '');
  if (got !== want) {
    r.findings.push({
      problem: `${f.binDir}/trellis is version ${got}, the agent is ${want}`,
      fix: "restart the trellis pod on this node: install-cni replaces the plugin with the image's",
    });
  }
  return r;
}

/**
 * Forwarding must be on for each family the node has pod CIDRs of, and only those (the agent turns on
 * just those: a single-stack node keeps the other family as it was). An agent that cannot be asked
 * left them in node.json. Without either (or an agent waiting for its Node) nothing says which
 * families it needs: an agent waiting has not turned any on yet, and advising IPv6 forwarding for an
 * IPv4-only node would break its router advertisements.
 */
function checkForwarding(f: DoctorFacts): CheckResult {
  const podCIDRs = f.agent.ok ? f.agent.value.status.podCIDRs : (f.rememberedPodCIDRs ?? []);
  const families = ([4, 6] as const).filter((fam) => podCIDRs.some((c) => familyOfText(c) === fam));
  const r: CheckResult = {
    name: 'forwarding',
    title: `IP forwarding on (${families.length === 0 ? "the pod CIDRs' families" : families.map(familyName).join(' and ')})`,
    findings: [],
  };
  if (families.length === 0) {
    return {
      ...r,
      skipped: f.agent.ok
        ? "the agent does not know the node's pod CIDRs yet"
        : `${f.agent.error === ADMIN_SOCKET_OFF ? ADMIN_SOCKET_OFF : 'the agent is not reachable'} and its state directory has no usable node.json: the node's pod CIDRs are unknown`,
    };
  }
  if (families.includes(4) && f.forwarding.v4 !== '1') {
    r.findings.push({
      problem: `net.ipv4.ip_forward is ${f.forwarding.v4 ?? 'unreadable'}: the node does not route pod traffic`,
      fix: 'echo 1 > /proc/sys/net/ipv4/ip_forward (the agent turns it back on within 5 s; found off here, something keeps resetting it: check /etc/sysctl.d)',
    });
  }
  if (families.includes(6) && f.forwarding.v6 !== '1') {
    r.findings.push({
      problem: `net.ipv6.conf.all.forwarding is ${f.forwarding.v6 ?? 'unreadable'}: IPv6 pod traffic is not routed`,
      fix: 'echo 1 > /proc/sys/net/ipv6/conf/all/forwarding (the agent turns it back on within 5 s; found off here, something keeps resetting it: check /etc/sysctl.d)',
    });
  }
  return r;
}

/**
 * Strict rp_filter (1) passes every path trellis builds: a pod's address routes back to its own veth,
 * a remote pod CIDR to the interface its packets come in on (underlay or VXLAN device), and what pods
 * send off the cluster leaves masqueraded. The exception is traffic between pods and a VXLAN peer's own
 * address that keeps the pod address (masquerading off, or a no-masquerade CIDR covering it): it takes
 * the underlay one way and the tunnel the other, so strict filtering on the uplink drops the peer's pods'
 * packets to this node, and on the VXLAN device the peer's answers to pods here. Only that is flagged.
 */
function checkRpFilter(f: DoctorFacts): CheckResult {
  const r: CheckResult = { name: 'rp-filter', title: 'reverse-path filter passes pod traffic', findings: [] };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  // rp_filter is IPv4 only.
  const vxlan = f.agent.value.routes.peers.flatMap((p) => (p.path === 'vxlan' && p.family === 4 ? [p] : []));
  if (vxlan.length === 0) return r;
  const masq = f.agent.value.status.masquerade;
  if (masq === undefined)
    return { ...r, skipped: 'the agent does not report its masquerade settings (an older version)' };
  type Kept = { why: string; undo: string };
  const keptBy = (nodeIP: string, whose: string): Kept | undefined => {
    if (!masq.enabled) return { why: 'masquerading is off', undo: 'run the agents without --no-masquerade' };
    const ip = parseIp(nodeIP);
    const c = masq.noMasqueradeCIDRs.find((s) => {
      const cidr = parseCidr(s);
      return ip !== undefined && cidr !== undefined && cidr.family === 4 && cidrContains(cidr, ip);
    });
    return c === undefined
      ? undefined
      : {
          why: `no-masquerade CIDR ${c} covers ${whose}`,
          undo: 'leave the node addresses out of the no-masquerade CIDRs (TRELLIS_NO_MASQUERADE_CIDRS)',
        };
  };
  // Per interface: the peers whose traffic comes in on it but routes back through another one.
  const hit = new Map<string, { peers: string[]; kept: Kept; back: string; uplink: boolean }>();
  const note = (iface: string, peer: string, kept: Kept, back: string, uplink: boolean): void => {
    const h = hit.get(iface);
    if (h === undefined) hit.set(iface, { peers: [peer], kept, back, uplink });
    else h.peers.push(peer);
  };
  // The peer's pods keep their address toward this node's InternalIP when the no-masquerade CIDRs
  // (the same on every agent) cover it; this node's pods toward the peer's when they cover the peer's.
  // An older agent does not say its InternalIPs, nor one whose Node cache lacks its own (gone from
  // the API, served from memory): the peer's stands in, as before.
  const listed = f.agent.value.status.internalIPs?.filter((ip) => parseIp(ip)?.family === 4);
  const ownIPs = listed === undefined || listed.length === 0 ? undefined : listed;
  const keptToHere = ownIPs
    ?.map((ip) => keptBy(ip, `this node's InternalIP ${ip}`))
    .find((k) => k !== undefined);
  for (const p of vxlan) {
    const uplink = f.peerUplinks[p.nodeIP];
    const toHere = ownIPs === undefined ? keptBy(p.nodeIP, 'their InternalIPs') : keptToHere;
    if (uplink !== undefined && toHere !== undefined) note(uplink, p.node, toHere, p.linkName, true);
    const toPeer = keptBy(p.nodeIP, 'their InternalIPs');
    if (toPeer !== undefined)
      note(p.linkName, `${p.node} ${p.nodeIP}`, toPeer, uplink ?? 'the underlay', false);
  }
  const all = f.rpFilter.all ?? 0;
  const present = new Set(f.links.map((l) => l.name));
  for (const [iface, h] of [...hit].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const own = f.rpFilter.byIface[iface] ?? 0;
    if (!present.has(iface) || Math.max(all, own) !== 1) continue;
    const strict = `rp_filter on ${iface} is strict (effective max(all=${all}, ${iface}=${own}) = 1)`;
    r.findings.push({
      problem: h.uplink
        ? `${strict}: it drops packets from pods on VXLAN peers (${h.peers.join(', ')}) to this node's own addresses: they keep their pod address (${h.kept.why}) and come in on ${iface}, but the route back to their pod CIDR is ${h.back}`
        : `${strict}: it drops packets from VXLAN peers' own addresses (${h.peers.join(', ')}) to pods here, such as their answers to pods that talk to them with the pod address (${h.kept.why}): they come in on ${iface}, but the route back to those addresses is ${h.back}`,
      // The file itself: the image has no sysctl (procps), and an interface name may hold a dot (trellis.v4).
      fix: `echo 2 > /proc/sys/net/ipv4/conf/${iface}/rp_filter (loose on ${iface} alone: the kernel applies the larger of all and the interface), or ${h.kept.undo}`,
    });
  }
  return r;
}

function checkMtu(f: DoctorFacts): CheckResult {
  const r: CheckResult = { name: 'mtu', title: 'pod MTU fits the node interfaces', findings: [] };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  const podMtu = f.agent.value.status.mtu;
  const { mtuProblem } = f.agent.value.status;
  if (mtuProblem !== undefined) {
    r.findings.push({
      problem: `${mtuProblem}: every pod ADD would fail, so the agent does not publish it`,
      fix: `set TRELLIS_MTU (ConfigMap trellis-config) to 1280 or more, or 0 to detect it from an uplink of 1280 or more, and restart the agents`,
    });
  }
  // What leaves the node: the pod's default routes carry routeMtu when it is below the interface's.
  const leavingMtu = f.agent.value.status.routeMtu ?? podMtu;
  // The links toward peers: the underlay for direct (host-gw) peers, the VXLAN device (whose MTU already
  // leaves room for the encapsulation) for overlay peers.
  const names = new Set<string>();
  for (const p of f.agent.value.routes.peers) if ('linkName' in p) names.add(p.linkName);
  if (names.size === 0) for (const n of f.defaultRouteIfaces) names.add(n);
  // Tunnels the node clamps TCP into (auto mode: pods keep the full MTU there by design, and the node
  // answers larger packets of other protocols itself).
  const clamped = new Set(f.agent.value.status.mssClamp ?? []);
  for (const l of f.links) {
    if (!names.has(l.name) || clamped.has(l.name)) continue;
    if (leavingMtu > l.mtu - f.overhead) {
      const refused = l.kind === 'vxlan' ? f.agent.value.status.mssClampRefused : undefined;
      r.findings.push({
        problem: `pod MTU ${leavingMtu}${leavingMtu < podMtu ? ' (off the node)' : ''} is larger than ${l.name}'s MTU ${l.mtu}${f.overhead > 0 ? ` minus ${f.overhead} bytes of encapsulation` : ''}: large packets between nodes are dropped or fragmented${refused === undefined ? '' : `, and the kernel refused the TCP MSS clamp into it (${refused})`}`,
        fix:
          refused === undefined
            ? `set TRELLIS_MTU (ConfigMap trellis-config) to ${l.mtu - f.overhead} or less, or 0 to detect it, and restart the agents`
            : 'load the modules the clamp needs on the host (modprobe nft_exthdr nft_rt, as root on the node: the trellis image has no modprobe; the agent tries again at its next resync), or use TRELLIS_MODE=vxlan, whose pods leave room for the tunnel',
      });
    }
  }
  // A VXLAN device's packets leave the node larger by the encapsulation: they must fit the uplink
  // toward the peer (an --mtu set to the underlay's own MTU sizes the devices at it, and every full-size
  // packet through the tunnel is then fragmented or dropped on the way).
  const byName = new Map(f.links.map((l) => [l.name, l]));
  const tooBig = new Set<string>();
  for (const p of f.agent.value.routes.peers) {
    if (p.path !== 'vxlan') continue;
    const dev = byName.get(p.linkName);
    const uplink = byName.get(f.peerUplinks[p.nodeIP] ?? '');
    const overhead = VXLAN_OVERHEAD[p.family];
    if (dev === undefined || uplink === undefined || dev.mtu + overhead <= uplink.mtu) continue;
    if (tooBig.has(`${dev.name} ${uplink.name}`)) continue;
    tooBig.add(`${dev.name} ${uplink.name}`);
    r.findings.push({
      problem: `VXLAN device ${dev.name} has MTU ${dev.mtu}: with ${overhead} bytes of encapsulation its packets to ${p.node} (${p.nodeIP}) are ${dev.mtu + overhead} bytes, larger than ${uplink.name}'s MTU ${uplink.mtu}, so full-size packets through the tunnel are fragmented or dropped`,
      fix: `set TRELLIS_MTU (ConfigMap trellis-config) to 0 to detect it (the devices then get ${uplink.mtu - overhead}), or to ${uplink.mtu - overhead} or less, and restart the agents`,
    });
  }
  for (const l of f.links) {
    if (l.kind === 'veth' && isHostVethName(l.name) && l.mtu > podMtu) {
      r.findings.push({
        problem: `host veth ${l.name} has MTU ${l.mtu}, above the pod MTU ${podMtu} (created before the MTU changed)`,
        fix: 'recreate that pod (kubectl delete pod) so its interface gets the current MTU',
      });
    }
  }
  return r;
}

/** The nftables table the agent writes (masquerade, MSS clamp) went in the last time it tried. */
function checkMasquerade(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'masquerade',
    title: 'the nftables table inet trellis (masquerade, MSS clamp, source check) is written',
    findings: [],
  };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  const masq = f.agent.value.status.masquerade;
  if (masq === undefined)
    return { ...r, skipped: 'the agent does not report its masquerade settings (an older version)' };
  if (masq.lastError !== undefined) {
    const lost = masq.enabled
      ? 'pods leave the cluster with their own addresses, and nothing checks their source addresses'
      : 'nothing checks the source addresses of pods, nor clamps TCP into the tunnels';
    r.findings.push({
      problem: `the agent could not write its nftables table: ${masq.lastError}; ${lost}`,
      fix: 'check nft in the agent container (nft list ruleset) and the agent log ("masquerade rules could not be applied"); each pass retries',
    });
  }
  return r;
}

/**
 * No forward chain of another program's table (iptables' FORWARD, firewalld, ufw, Docker) drops what
 * this node forwards to or from its pods: one drop there is final, whatever trellis's table accepts.
 */
function checkFirewall(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'firewall',
    title:
      "the host firewall lets pod traffic through (its forward chains; its input chains for tunnelled nodes' VXLAN)",
    findings: [],
  };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  const fw = f.agent.value.status.forwardFirewall;
  if (fw === undefined)
    return { ...r, skipped: 'the agent does not check the host firewall (an older version)' };
  if (fw.off === true) return { ...r, skipped: 'the agent does not check it (--firewall-check-seconds 0)' };
  if (fw.checkedAt === undefined) {
    return {
      ...r,
      skipped:
        fw.error === undefined
          ? 'the agent has not checked it yet (it does after its first full pass over the Nodes)'
          : `the agent could not read it: ${fw.error}`,
    };
  }
  if (fw.error !== undefined) {
    // It read them once: the findings below are that check's, and accepts a reload took away since
    // are not put back while it cannot read them.
    r.findings.push({
      problem: `the agent cannot read the host firewall's forward chains now (${fw.error}); what it found is from its check at ${fw.checkedAt}`,
      fix: `see the agent log ("could not read the host firewall's forward chains") and run the command it names on the node`,
    });
  }
  for (const b of fw.blocks) {
    const what = b.direction === 'from-pods' ? 'leave this node' : 'reach pods on this node';
    r.findings.push({
      problem: `${describeBlock(b)}; IPv${b.family} pod traffic cannot ${what}`,
      // Docker's DOCKER-USER note is for tables anyone may write; an owned table's fix is its owner's.
      fix: b.owned === true ? fixCommand(b) : `${fixCommand(b)} (${DOCKER_NOTE})`,
    });
  }
  // Let through only by accepts an earlier run inserted: a firewall reload takes them, and this run
  // (--no-accept-forward) does not put them back.
  for (const b of fw.hiddenBlocks ?? []) {
    r.findings.push({
      problem: `${describeBlock(b)}, and only accept rules an earlier run of trellis inserted let IPv${b.family} pod traffic through; with --no-accept-forward trellis does not put them back after a firewall reload`,
      // nft names a rule by its handle, which a reload of the ruleset since the agent's read may have
      // given to another rule: the operator confirms the comment before deleting.
      fix: `accept it in the host firewall's own configuration (${fixCommand(b)}), then remove trellis's (as read at ${fw.checkedAt}; nft -a list ruleset shows each handle with its "trellis: pod traffic" comment to confirm first): ${(fw.earlierRemove ?? []).join('; ')}`,
    });
  }
  for (const b of fw.vxlanBlocks ?? []) {
    r.findings.push({
      problem: `${describeVxlanBlock(b)}; pods here and on those nodes cannot reach each other`,
      fix:
        b.owned === true
          ? vxlanFixCommand(b)
          : `${vxlanFixCommand(b)} (${VXLAN_NOTE.replaceAll('<port>', String(b.port))})`,
    });
  }
  // A legacy table it could not read: neither its drops nor their fix can be known now. Both families
  // unread for one reason (/proc/net's list of tables unreadable) are one finding.
  const unlisted = (t: UnreadTable): boolean => t.error.startsWith(LEGACY_LIST_UNREADABLE);
  const listing = (fw.unreadTables ?? []).find(unlisted);
  if (listing !== undefined) {
    r.findings.push({
      problem: `the agent cannot tell which legacy iptables tables the host has (${listing.error.slice(LEGACY_LIST_UNREADABLE.length)}); what they drop is as the agent last read them, and trellis accepts nothing there meanwhile`,
      fix: 'check that /proc/net/ip_tables_names and /proc/net/ip6_tables_names can be read in the agent container (cat them there)',
    });
  }
  for (const t of (fw.unreadTables ?? []).filter((x) => !unlisted(x))) {
    const tool = `${t.family}-save`;
    r.findings.push({
      problem: `the agent cannot read the host firewall's legacy table ${describeUnread(t)}; what it drops is as the agent last read it, and trellis accepts nothing there meanwhile`,
      fix: `make ${tool} run in the agent's container (the image ships it; the agent log says "could not read a legacy iptables table"), and check the table on the node: ${tool} -t filter`,
    });
  }
  // A chain whose fate the agent cannot tell: no pass (status says the same, "cannot judge").
  const undecided = fw.undecided ?? [];
  if (r.findings.length === 0 && undecided.length > 0) {
    return {
      ...r,
      skipped: `the agent cannot judge ${undecided.join(', ')} (rules it cannot read: a queue to another program, an unknown target); no drop found elsewhere`,
    };
  }
  return r;
}

/**
 * The `ip route del` that takes back the foreign route of a conflict row, named by prefix, protocol
 * and (where the kernel reported one) metric: a delete naming the gateway (`via X dev Y`) does not
 * match a route on a nexthop object (it fails with `No such process`; docs/operations.md), and a
 * device the agent could not name shows as `#12`. A type goes first (views.ts describe).
 */
function deleteCommand(fam: string, row: { dst: string; have: string; haveMetric?: number }): string {
  const type = /^blackhole\b/.test(row.have) ? 'blackhole ' : '';
  const proto = / (proto \d+)$/.exec(row.have)?.[1];
  return `ip ${fam}route del ${type}${row.dst}${proto === undefined ? '' : ` ${proto}`}${row.haveMetric === undefined ? '' : ` metric ${row.haveMetric}`}`;
}

function checkRoutes(f: DoctorFacts): CheckResult {
  const r: CheckResult = { name: 'routes', title: 'inter-node routes programmed as desired', findings: [] };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  if (f.agent.value.routes.synced === false) {
    return {
      ...r,
      skipped:
        'the agent has no list of Nodes with this node yet (is the API server reachable?): the routes it wants are not known, and it keeps those it programmed',
    };
  }
  // First what explains the rest: a link routes to peers leave by that is down.
  r.findings.push(...downLinkFindings(f.agent.value.routes, f.links, f.peerUplinks));
  for (const row of f.agent.value.routes.routes) {
    const fam = row.family === 6 ? '-6 ' : '';
    switch (row.state) {
      case 'ok':
        break;
      case 'missing':
        r.findings.push({
          problem: `route ${row.dst} (${row.want}) is missing from the kernel`,
          fix: `the agent puts it back at its next pass (within seconds when it sees the deletion); if it stays missing read the agent log for "route could not be programmed"`,
        });
        break;
      case 'held':
        r.findings.push({
          problem: `route ${row.dst} (${row.want}) is not in the kernel as wanted: it ${row.reason ?? "waits for this node's InternalIP"}`,
          fix: "put the node's address back on its interface (a DHCP client or NetworkManager re-adding it usually does within seconds); after the hold the agent plans without it (peers on that subnet through the tunnel in auto mode)",
        });
        break;
      case 'differs':
        r.findings.push({
          problem: `route ${row.dst} is "${row.have}", trellis wants "${row.want}"`,
          fix: 'the agent replaces it at its next pass; if it keeps changing, another program manages this prefix',
        });
        break;
      case 'conflict':
        if (row.unreadable === true) {
          r.findings.push({
            problem: `route ${row.dst} is held by ${UNREADABLE_HOLDER}; trellis wants ${row.want}`,
            fix: `see what holds it (ip ${fam}route show ${row.dst}) and remove it if it is not needed; trellis never overwrites it, and programs its own once that one is gone (at once for a route written by hand, at the next resync for a routing daemon's)`,
          });
          break;
        }
        r.findings.push({
          problem: `route ${row.dst} is held by a route trellis does not own (${row.have}); trellis wants ${row.want}`,
          fix: `remove the foreign route if it is not needed (${deleteCommand(fam, row)}); trellis never overwrites it, and programs its own as soon as that one is gone`,
        });
        break;
      case 'stale':
        r.findings.push({
          problem: `stale trellis route ${row.dst} (${row.have}) for a node that is gone`,
          fix: `the agent removes it once its node list is synced; by hand: ip ${fam}route del ${row.dst} proto 126`,
        });
        break;
    }
  }
  const mode = f.agent.value.status.mode;
  for (const p of f.agent.value.routes.peers) {
    if (p.path !== 'unreachable') continue;
    // Only host-gw is cured by another mode; in auto and vxlan the tunnel itself is what is missing.
    r.findings.push(
      mode === 'host-gw'
        ? {
            problem: `peer ${p.node} (IPv${p.family}) is unreachable with host-gw: ${p.reason}`,
            fix: 'put the nodes on one L2 subnet, or use the auto mode (TRELLIS_MODE=auto: VXLAN to nodes on other subnets)',
          }
        : {
            problem: `peer ${p.node} (IPv${p.family}) is unreachable in ${mode} mode: ${p.reason}`,
            fix: `a peer without a VTEP MAC has no trellis agent with an IPv${p.family} overlay running (kubectl -n kube-system get pods -o wide: its trellis pod, and that pod's log); without a VXLAN device of this family here, this agent's log says why it made none`,
          },
    );
  }
  // What the planner skipped (routes.problems): no route row and no decision says it. The peers as the
  // trellis_peer_route_broken metric and the coverage annotation judge them (peerRouteStates), which
  // leaves out what is only said (a malformed VTEP MAC routed directly, a nested CIDR of a routed peer);
  // then this node's own, which peerRouteStates leaves to the node's own view.
  const { routes } = f.agent.value;
  const states = peerRouteStates(
    { ...routes, decisions: routes.peers, errors: [], conflicts: [] },
    routes.node,
  );
  const skipped = new Set<string>();
  for (const s of states) {
    if (s.path !== 'skipped') continue;
    if (s.family === '') skipped.add(s.peer); // its reason says every problem of the peer
    const reason = s.reason ?? '';
    r.findings.push({
      problem: `peer ${s.peer}${s.family === '' ? '' : ` (IPv${s.family})`} is not routed from here: ${reason}`,
      fix: plannerFix(reason, `node ${s.peer}`),
    });
  }
  for (const p of routes.problems) {
    if (p.node === routes.node) {
      if (NESTED_CIDR.test(p.problem)) continue; // the wider CIDR holding it is routed and blackholed
      r.findings.push({ problem: `this node: ${p.problem}`, fix: plannerFix(p.problem, 'this node') });
    } else if (SHARED_INTERNAL_IP.test(p.problem) && !skipped.has(p.node)) {
      // Routed as planned, but to an address another node claims too: one of them is out of reach.
      r.findings.push({
        problem: `peer ${p.node}: ${p.problem}`,
        fix: plannerFix(p.problem, `node ${p.node}`),
      });
    } else if (p.refusedCidr !== undefined && !skipped.has(p.node)) {
      // A peer routed in part: the rest of its pod CIDRs are, this one is not (peerRouteStates, and
      // so the metric, count the peer as routed).
      r.findings.push({
        problem: `peer ${p.node}'s pod CIDR ${p.refusedCidr} is not routed from here: ${p.problem}`,
        fix: plannerFix(p.problem, `node ${p.node}`),
      });
    }
  }
  return r;
}

/**
 * The links that routes to peers leave by (a direct peer's underlay link, a VXLAN peer's device and
 * the uplink under it) that are down or have no carrier: every peer through one is cut off, and the
 * missing-route findings that follow are its doing. The agent's carrier watch logs it once; `status`
 * does not show it.
 */
function downLinkFindings(
  routes: RoutesView,
  links: readonly LinkFact[],
  peerUplinks: Readonly<Record<string, string>>,
): Finding[] {
  const peersVia = new Map<string, Set<string>>();
  const via = (link: string, peer: string): void => {
    const set = peersVia.get(link) ?? new Set<string>();
    set.add(peer);
    peersVia.set(link, set);
  };
  for (const p of routes.peers) {
    if (!('linkName' in p)) continue;
    via(p.linkName, p.node);
    const uplink = p.path === 'vxlan' ? peerUplinks[p.nodeIP] : undefined;
    if (uplink !== undefined) via(uplink, p.node);
  }
  const findings: Finding[] = [];
  for (const l of links) {
    const peers = peersVia.get(l.name);
    if (peers === undefined) continue;
    const state =
      l.up === false
        ? 'is down (set down)'
        : l.up === true && l.lowerUp === false
          ? 'has no carrier (cable, switch port, bond member or virtual NIC)'
          : undefined;
    if (state === undefined) continue;
    const names = [...peers].sort();
    const shown =
      names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ');
    findings.push({
      problem: `${l.name}, the way to peers ${shown}, ${state}: pod traffic to them cannot leave this node`,
      fix:
        l.up === false
          ? `ip link set ${l.name} up, and find what set it down (the network manager's log, ip monitor link); the agent routes through it again as soon as it is up`
          : `check ${l.name}'s link (ip -s link show ${l.name}, ethtool ${l.name}, the switch port or the VM's NIC); the agent routes through it again when its carrier is back`,
    });
  }
  return findings;
}

/** The planner's note on an InternalIP two nodes claim (desired.ts reportSharedInternalIPs). */
const SHARED_INTERNAL_IP = /^InternalIP \S+ is also /;

/** The planner's note on a node's own pod CIDR nested in another of its own (the wider one is used). */
const NESTED_CIDR = /^pod CIDR \S+ lies inside \S+; ignored$/;

/** The fix for a problem the route planner reported (pkg/routes/desired.ts) about `who`. */
function plannerFix(problem: string, who: string): string {
  const noIp = /no (?:usable )?IPv([46]) InternalIP/.exec(problem);
  if (noIp !== null) {
    const fam = noIp[1];
    return `give ${who} an IPv${fam} InternalIP: its kubelet's --node-ip names one address per family of a dual-stack node (--node-ip=<IPv4>,<IPv6>); restart the kubelet there, and the agents route it at their next pass`;
  }
  if (/no valid pod CIDR/.test(problem)) {
    return `give ${who} a pod CIDR: run kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr, or set spec.podCIDRs on the Node`;
  }
  const gone = /^InternalIP (\S+) is not an address of this node's interfaces/.exec(problem);
  if (gone !== null) {
    // The Node is right: the address left the machine (a link down flushes IPv6 addresses, a DHCP
    // lease lapsed, someone ran ip addr del).
    return `put ${gone[1]} back on this node's interface (ip -br addr; its DHCP client, NetworkManager, netplan or systemd-networkd; an IPv6 address a link down flushed stays with net.ipv6.conf.<link>.keep_addr_on_down=1); if the machine's address really changed, give the kubelet the new one (--node-ip) and restart it`;
  }
  if (SHARED_INTERNAL_IP.test(problem)) {
    return `find which machine really has that address: delete the Node object of a machine that is gone (kubectl delete node), or give ${who}'s kubelet its own address (--node-ip); the agents route it at their next pass`;
  }
  if (/overlaps|is also node|contains|is a subnet connected/.test(problem)) {
    return `correct spec.podCIDRs of ${who}'s Node (or of the node it clashes with): no two nodes' pod CIDRs may overlap, and none may hold a node's InternalIP or a subnet a node is connected to (--cluster-cidr must lie outside the node network); trellis routes none of a claim it cannot trust`;
  }
  return `correct ${who}'s Node object (kubectl get node -o yaml: spec.podCIDRs, status.addresses, trellis.dev annotations); the agents route it at their next pass`;
}

function checkLeases(f: DoctorFacts): CheckResult {
  const r: CheckResult = { name: 'leases', title: 'no leaked leases (pod namespace gone)', findings: [] };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  const links = new Set(f.links.map((x) => x.name));
  const after = f.leasesAfterLinks;
  const stillHeld = new Set(after?.leases.map(attachmentKey));
  const unjudged: string[] = [];
  for (const l of f.agent.value.leases.leases) {
    if (after !== undefined && !stillHeld.has(attachmentKey(l))) continue; // released meanwhile
    const pod = l.podName === '' ? `container ${shortId(l.containerId)}` : `${l.podNamespace}/${l.podName}`;
    if (l.netns === '') {
      // lease-rebuild restores a quarantined lease without its namespace when it cannot find it: no
      // evidence of a leak while the veth lives (its pod may be running); veth pairs die together, so
      // one without its host veth is gone.
      if (links.has(l.hostVeth)) continue;
      r.findings.push({
        problem: `lease ${l.addresses.join(', ')} of ${pod} is leaked: its network namespace is unknown (lease rebuilt after a crash) and its host veth ${l.hostVeth} is gone`,
        fix: 'restart the trellis pod (the start-up sweep releases leases whose veth is gone)',
      });
      continue;
    }
    if (l.netnsUnknown === true) {
      unjudged.push(pod);
      continue;
    }
    // The agent's verdict on this lease (its path may name another namespace now: another lease's at
    // the same reused /proc/PID path), else the path's.
    if ((l.netnsAlive ?? f.netnsExists[l.netns]) !== false) continue;
    // The start-up sweep releases a lease only once its namespace AND its veth are gone: while the veth
    // exists a restart alone changes nothing, so deleting it comes first.
    const gc = f.agent.value.status.standalone
      ? ''
      : '; in Kubernetes mode the periodic IPAM GC releases it, veth and all, once the pod is gone from the API';
    r.findings.push({
      problem: `lease ${l.addresses.join(', ')} of ${pod} is leaked: its network namespace ${l.netns} is gone (or that path names another namespace now), but the runtime never sent DEL`,
      fix: links.has(l.hostVeth)
        ? `ip link del ${l.hostVeth} (its veth still exists), then restart the trellis pod: its start-up sweep releases a lease only once its namespace and its veth are gone${gc}`
        : `restart the trellis pod (its start-up sweep releases leases whose namespace and veth are gone)${gc}`,
    });
  }
  if (unjudged.length > 0) {
    r.findings.push({
      problem: `the agent could not tell whether the network namespaces of ${unjudged.length === 1 ? unjudged[0] : `${unjudged.length} pods (${unjudged.slice(0, 3).join(', ')}${unjudged.length > 3 ? ', …' : ''})`} are there: it is out of file descriptors or memory (its log names the errno), and frees no such lease meanwhile`,
      fix: 'compare the agent\'s open files with its limit (ls /proc/<agent pid>/fd | wc -l; grep "open files" /proc/<agent pid>/limits) and the node\'s memory; restart the trellis pod if it holds descriptors it should not',
    });
  }
  return r;
}

function attachmentKey(l: { containerId: string; ifname: string }): string {
  return `${l.containerId}/${l.ifname}`;
}

function checkVeths(f: DoctorFacts): CheckResult {
  const r: CheckResult = {
    name: 'veths',
    title: 'no orphan trellis veths (veth without a lease)',
    findings: [],
  };
  const skip = needsAgent(f);
  if (skip !== undefined || !f.agent.ok) return { ...r, skipped: skip };
  // Held attachments' veths are kept on purpose (their pods may be running): not orphans. Nor are
  // those a DEL or GC is deleting, or whose attachment has a call in flight (DoctorFacts.leasesAfterLinks).
  const views = [f.agent.value.leases, ...(f.leasesAfterLinks === undefined ? [] : [f.leasesAfterLinks])];
  const owned = new Set(
    views.flatMap((v) => [
      ...[...v.leases, ...(v.held ?? [])].map((l) => l.hostVeth),
      ...(v.vethsInFlight ?? []),
    ]),
  );
  for (const l of f.links) {
    if (!isHostVethName(l.name) || owned.has(l.name)) continue;
    r.findings.push({
      problem: `host veth ${l.name} has no lease: left over from an interrupted ADD or DEL`,
      fix: `ip link del ${l.name} (or restart the trellis pod: its start-up sweep removes it)`,
    });
  }
  return r;
}

export const CHECKS = [
  checkAgent,
  checkConfig,
  checkBinaries,
  checkShimVersion,
  checkForwarding,
  checkRpFilter,
  checkMtu,
  checkMasquerade,
  checkFirewall,
  checkRoutes,
  checkLeases,
  checkVeths,
] as const;

/** The report of a doctor that checked nothing: its facts could not be gathered (DoctorReport.error). */
export function couldNotCheck(error: string): DoctorReport {
  return { ok: false, checks: [], error: `could not check this node: ${error}` };
}

export function runDoctor(f: DoctorFacts): DoctorReport {
  const checks = CHECKS.map((c) => c(f));
  return { ok: checks.every((c) => c.findings.length === 0), checks };
}
