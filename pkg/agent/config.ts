import { dirname, join, normalize } from 'node:path';
import { parseArgs } from 'node:util';
import { MTU_MIN } from '../cni/netconf.ts';
import { IPV6_MIN_MTU } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { parseRanges } from '../ipam/ipam.ts';
import { validateNoMasqueradeCIDRs } from '../masq/render.ts';
import { LISTEN_ADDR_FORMS, splitListenAddr } from '../observe/listen-addr.ts';
import { LOG_LEVELS, type LogLevel } from '../observe/logger.ts';
import { MAX_SOCKET_PATH_BYTES, socketPathTooLong } from '../shim/protocol.ts';
import { DEFAULT_VXLAN_PORT, DEFAULT_VXLAN_VNI } from '../vxlan/constants.ts';

export const MODES = ['auto', 'host-gw', 'vxlan'] as const;
export type Mode = (typeof MODES)[number];

/** The agent's settings, validated once at start and frozen. */
export interface AgentConfig {
  /** Standalone when set: pod CIDRs from flags, no Kubernetes. */
  podCIDRs: readonly string[];
  nodeName: string | undefined;
  /** --kubeconfig; undefined: $KUBECONFIG, else the service account (pkg/k8s loadKubeConfig decides). */
  kubeconfig: string | undefined;
  socket: string;
  stateDir: string;
  spoolDir: string;
  cniConfDir: string;
  cniBinDir: string;
  /** Where the agent finds the binaries it installs (the trellis shim, loopback, portmap). */
  cniSourceDir: string;
  /** The host's /proc as mounted in the agent's container, for /proc/PID/ns/net paths; '' = /proc is the host's. */
  hostProc: string;
  /**
   * Where the runtime pins pod network namespaces (/var/run/netns for containerd and CRI-O): a pod's
   * veth pair is made when its namespace appears there, before its ADD (prepared-pairs.ts); '' = off.
   */
  netnsDir: string;
  mode: Mode;
  /** 0 = detect. */
  mtu: number;
  /** VXLAN network identifier of the overlay devices (auto and vxlan modes); the same on every node. */
  vxlanVni: number;
  /** UDP port of the overlay (auto and vxlan modes); the same on every node. */
  vxlanPort: number;
  /** host:port, [v6]:port or :port (every address of both families) for /metrics, /healthz, /readyz; '' disables. */
  metricsAddr: string;
  /**
   * How messages name the settings whose values are used after the start: the flag, and the environment
   * variable when the value came from there.
   */
  names: Readonly<{ metricsAddr: string; cniSourceDir: string }>;
  /** Root-only unix socket for `trellis-agent status|routes|leases|doctor`; admin.sock next to the CNI socket by default, '' disables. */
  adminSocket: string;
  logLevel: LogLevel;
  noMasqueradeCIDRs: readonly string[];
  /** Write the CNI config list once ready (off for tests that drive the shim directly). */
  publishCniConfig: boolean;
  /** Masquerade pod traffic leaving the cluster (nftables table `inet trellis`). */
  masquerade: boolean;
  /** Drop packets from pods whose source is not the sending pod's own address (--no-source-check: off). */
  sourceCheck: boolean;
  resyncMs: number;
  /** How often the host firewall's forward chains are read (forward-firewall.ts); 0: never. */
  firewallCheckMs: number;
  /** Insert accepts for the node's pod CIDRs where they drop pod traffic (--no-accept-forward: report only). */
  acceptForward: boolean;
  /** `uninstall`: how long to wait for a running agent (its state dir's lock) to stop. */
  uninstallWaitMs: number;
  /**
   * A CNI socket client must send its whole request within this time. Hidden flag
   * --cni-request-timeout-ms (not in USAGE): tests shorten it; operators have no reason to.
   */
  cniRequestTimeoutMs: number;
}

export const DEFAULTS = Object.freeze({
  socket: '/run/trellis/cni.sock',
  stateDir: '/var/lib/trellis',
  cniConfDir: '/etc/cni/net.d',
  cniBinDir: '/opt/cni/bin',
  mode: 'auto' as Mode,
  mtu: 0,
  vxlanVni: DEFAULT_VXLAN_VNI,
  vxlanPort: DEFAULT_VXLAN_PORT,
  metricsAddr: ':9743',
  logLevel: 'info' as LogLevel,
  resyncMs: 60_000,
  firewallCheckMs: 60_000,
  // The DaemonSet's terminationGracePeriodSeconds (30) and some: an agent's shutdown ends well inside it.
  uninstallWaitMs: 45_000,
  cniRequestTimeoutMs: 10_000,
});

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const FLAGS = {
  'pod-cidr': { type: 'string', multiple: true },
  'node-name': { type: 'string' },
  kubeconfig: { type: 'string' },
  socket: { type: 'string' },
  'state-dir': { type: 'string' },
  'spool-dir': { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  'cni-bin-dir': { type: 'string' },
  'cni-source-dir': { type: 'string' },
  'host-proc': { type: 'string' },
  'netns-dir': { type: 'string' },
  mode: { type: 'string' },
  mtu: { type: 'string' },
  'vxlan-vni': { type: 'string' },
  'vxlan-port': { type: 'string' },
  'metrics-addr': { type: 'string' },
  'admin-socket': { type: 'string' },
  'log-level': { type: 'string' },
  'no-masquerade-cidr': { type: 'string', multiple: true },
  'no-cni-config': { type: 'boolean' },
  'no-masquerade': { type: 'boolean' },
  'no-source-check': { type: 'boolean' },
  'resync-seconds': { type: 'string' },
  'firewall-check-seconds': { type: 'string' },
  'no-accept-forward': { type: 'boolean' },
  'uninstall-wait-seconds': { type: 'string' },
  'cni-request-timeout-ms': { type: 'string' },
} as const;

export const USAGE = `usage: trellis-agent [flags]               run the agent
       trellis-agent install-cni [flags]   install trellis, and loopback/portmap if missing (init container)
       trellis-agent uninstall [flags]     remove everything trellis created on this node
       trellis-agent status|routes|leases|doctor|coverage [--json]   operator commands (--help for theirs)
       trellis-agent --version

flags (environment variable in brackets):
  --pod-cidr CIDR            standalone mode: a pod CIDR of this node, repeat for IPv4 and IPv6
  --node-name NAME           [NODE_NAME] this node's name in Kubernetes
  --kubeconfig FILE          [KUBECONFIG, a list: its first file that exists] default: in-cluster service account
  --socket PATH              CNI socket (default ${DEFAULTS.socket})
  --state-dir DIR            leases, spool, the Node's last pod CIDRs and MTU (node.json) (default ${DEFAULTS.stateDir})
  --spool-dir DIR            spooled DELs (default STATE_DIR/spool)
  --cni-conf-dir DIR         where the config list is published (default ${DEFAULTS.cniConfDir})
  --cni-bin-dir DIR          where CNI binaries are installed (default ${DEFAULTS.cniBinDir})
  --cni-source-dir DIR       [TRELLIS_CNI_SOURCE_DIR] install-cni: where trellis, loopback and portmap
                             are taken from (default: the shim next to the agent, Debian's plugins);
                             a set one must exist and hold trellis; a plugin it lacks comes from
                             Debian's; loopback and portmap are copied only when the bin dir has none
  --host-proc DIR            the host's /proc mounted in the agent's container: a pod namespace given as
                             /proc/PID/ns/net (cri-dockerd) is opened there, and the CNI binaries answer
                             VERSION in PID 1's mount namespace (install-cni's new trellis before it is
                             installed, all of them before the config list) (default '': /proc is the host's)
  --netns-dir DIR            where the runtime pins pod network namespaces (/var/run/netns for containerd
                             and CRI-O): a pod's veth pair is made as soon as its namespace appears there,
                             while the runtime starts the CNI plugin (default '': made by ADD)
  --mode auto|host-gw|vxlan  [TRELLIS_MODE] (default auto)
  --mtu N                    [TRELLIS_MTU] pod MTU, 0 = detect (default 0)
  --vxlan-vni N              [TRELLIS_VXLAN_VNI] VXLAN network identifier (default ${DEFAULTS.vxlanVni})
  --vxlan-port N             [TRELLIS_VXLAN_PORT] VXLAN UDP port (default ${DEFAULTS.vxlanPort})
  --metrics-addr HOST:PORT   [TRELLIS_METRICS_ADDR] metrics and health; :PORT = every IPv4 and IPv6 address, '' disables (default ${DEFAULTS.metricsAddr})
  --admin-socket PATH        [TRELLIS_ADMIN_SOCKET] local admin socket for status/routes/leases/doctor, '' disables (default admin.sock next to --socket)
  --log-level LEVEL          [TRELLIS_LOG_LEVEL] ${LOG_LEVELS.join('|')} (default info)
  --no-masquerade-cidr CIDR  [TRELLIS_NO_MASQUERADE_CIDRS, comma-separated] never masquerade to it
  --no-cni-config            do not publish the CNI config list
  --no-masquerade            do not masquerade pod traffic leaving the cluster
  --no-source-check          let pods send with addresses that are not theirs (a pod that routes for others)
  --resync-seconds N         periodic full reconcile (default 60)
  --firewall-check-seconds N read the host firewall's forward chains this often (and at start) and let
                             the cluster's pod network through any that drop them (0: never) (default 60)
  --no-accept-forward        only report such chains (log, status, doctor, metric); insert nothing
  --uninstall-wait-seconds N uninstall: wait this long for a running agent on the node to stop (default 45)
`;

/** The flags each maintenance subcommand reads; the rest of USAGE is the running agent's. */
const SUBCOMMAND_FLAGS = {
  'install-cni': {
    what: 'copy the trellis shim, and loopback/portmap if missing, into the CNI bin dir (init container)',
    flags: ['cni-bin-dir', 'cni-source-dir', 'host-proc', 'log-level'],
  },
  uninstall: {
    what: 'remove everything trellis created on this node (run it once the DaemonSet is deleted)',
    flags: [
      'socket',
      'admin-socket',
      'state-dir',
      'spool-dir',
      'cni-conf-dir',
      'cni-bin-dir',
      'log-level',
      'uninstall-wait-seconds',
    ],
  },
} as const;

/** `trellis-agent install-cni|uninstall --help`: what it does and just the flags it reads. */
export function subcommandUsage(sub: keyof typeof SUBCOMMAND_FLAGS): string {
  const { what, flags } = SUBCOMMAND_FLAGS[sub];
  const wanted = new Set<string>(flags);
  const lines: string[] = [];
  let keep = false;
  for (const line of USAGE.slice(USAGE.indexOf('\nflags')).split('\n')) {
    // A flag's line starts "  --name"; its continuation lines are indented further.
    const flag = /^ {2}--([a-z-]+)/.exec(line)?.[1];
    if (flag !== undefined) keep = wanted.has(flag);
    else if (!line.startsWith('   ')) keep = false;
    if (keep) lines.push(line);
  }
  return `usage: trellis-agent ${sub} [flags]   ${what}\n\nflags (environment variable in brackets):\n${lines.join('\n')}\n`;
}

/**
 * A whole number written in decimal digits, without sign ("1500", "0"); undefined for anything else.
 * Number() alone would take "0x500" (1280), "1e3" and "" (as 0). Surrounding whitespace and leading
 * zeros are taken, as earlier releases took them: a ConfigMap value written as a YAML block ("1500\n")
 * must not stop an upgraded agent.
 */
export function parseDecimal(raw: string): number | undefined {
  const digits = raw.trim();
  if (!/^[0-9]{1,15}$/.test(digits)) return undefined;
  return Number(digits);
}

function decimalInt(name: string, raw: string, min: number, max: number): number {
  const n = parseDecimal(raw);
  if (n === undefined || n < min || n > max) {
    throw new ConfigError(
      `${name} must be a decimal integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

type Values = ReturnType<
  typeof parseArgs<{ options: typeof FLAGS; strict: true; allowPositionals: false }>
>['values'];
type StringFlag = { [K in keyof Values]-?: Values[K] extends string | undefined ? K : never }[keyof Values];

/**
 * A setting's raw value, from its flag, else its environment variable, else undefined; and how a message
 * names it: the flag, or the flag and the variable when the value came from the environment.
 */
function setting(
  values: Values,
  env: Readonly<Record<string, string | undefined>>,
  flag: StringFlag,
  envName?: string,
): { raw: string | undefined; name: string } {
  const fromFlag = values[flag];
  if (fromFlag !== undefined) return { raw: fromFlag, name: `--${flag}` };
  // Trimmed: a ConfigMap value written as a YAML block ("vxlan\n") must not stop an upgraded agent.
  const fromEnv = envName === undefined ? undefined : env[envName]?.trim();
  if (fromEnv !== undefined) return { raw: fromEnv, name: `--${flag} (from $${envName})` };
  return { raw: undefined, name: `--${flag}` };
}

/** Parses argv (after the subcommand) and the environment into a frozen config; throws ConfigError. */
export function parseAgentConfig(
  argv: string[],
  env: Readonly<Record<string, string | undefined>>,
  opts: { requireNode?: boolean } = {},
): AgentConfig {
  let values: Values;
  try {
    values = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ConfigError(`${errorText(err)}\n\n${USAGE}`);
  }
  const get = (flag: StringFlag, envName?: string) => setting(values, env, flag, envName);
  const modeSetting = get('mode', 'TRELLIS_MODE');
  const mode = (modeSetting.raw ?? DEFAULTS.mode) as Mode;
  if (!MODES.includes(mode)) {
    throw new ConfigError(
      `${modeSetting.name} must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`,
    );
  }
  const logSetting = get('log-level', 'TRELLIS_LOG_LEVEL');
  const logLevel = (logSetting.raw ?? DEFAULTS.logLevel) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(
      `${logSetting.name} must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`,
    );
  }
  const int = (
    s: { raw: string | undefined; name: string },
    fallback: number,
    min: number,
    max: number,
  ): number => (s.raw === undefined ? fallback : decimalInt(s.name, s.raw, min, max));
  const mtuSetting = get('mtu', 'TRELLIS_MTU');
  // 0 asks for detection; any other value must be a usable MTU.
  const mtu =
    mtuSetting.raw !== undefined && parseDecimal(mtuSetting.raw) === 0
      ? 0
      : int(mtuSetting, DEFAULTS.mtu, MTU_MIN, 65535);
  const vxlanVni = int(get('vxlan-vni', 'TRELLIS_VXLAN_VNI'), DEFAULTS.vxlanVni, 1, 16_777_215);
  const vxlanPort = int(get('vxlan-port', 'TRELLIS_VXLAN_PORT'), DEFAULTS.vxlanPort, 1, 65_535);
  const resyncMs = int(get('resync-seconds'), DEFAULTS.resyncMs / 1000, 1, 86_400) * 1000;
  const firewallCheckMs =
    int(get('firewall-check-seconds'), DEFAULTS.firewallCheckMs / 1000, 0, 86_400) * 1000;
  const uninstallWaitMs = int(get('uninstall-wait-seconds'), DEFAULTS.uninstallWaitMs / 1000, 0, 3600) * 1000;
  const cniRequestTimeoutMs = int(get('cni-request-timeout-ms'), DEFAULTS.cniRequestTimeoutMs, 100, 600_000);
  const metrics = get('metrics-addr', 'TRELLIS_METRICS_ADDR');
  const metricsAddr = metrics.raw ?? DEFAULTS.metricsAddr;
  if (metricsAddr !== '' && splitListenAddr(metricsAddr) === undefined) {
    throw new ConfigError(
      `${metrics.name} must be ${LISTEN_ADDR_FORMS}, or '' to disable, got ${JSON.stringify(metricsAddr)}`,
    );
  }
  const cniSource = get('cni-source-dir', 'TRELLIS_CNI_SOURCE_DIR');
  const stateDir = tidyPath(values['state-dir'] ?? DEFAULTS.stateDir);
  const socket = tidyPath(values.socket ?? DEFAULTS.socket);
  const noMasq = values['no-masquerade-cidr'] ?? splitList(env.TRELLIS_NO_MASQUERADE_CIDRS);
  const config: AgentConfig = {
    podCIDRs: values['pod-cidr'] ?? [],
    nodeName: values['node-name'] ?? emptyToUndefined(env.NODE_NAME?.trim()),
    // The flag alone: $KUBECONFIG is a list, which loadKubeConfig reads itself (and names in its messages).
    kubeconfig: emptyToUndefined(values.kubeconfig),
    socket,
    stateDir,
    spoolDir: tidyPath(values['spool-dir'] ?? `${stateDir}/spool`),
    cniConfDir: tidyPath(values['cni-conf-dir'] ?? DEFAULTS.cniConfDir),
    cniBinDir: tidyPath(values['cni-bin-dir'] ?? DEFAULTS.cniBinDir),
    cniSourceDir: tidyPath(cniSource.raw ?? ''),
    hostProc: tidyPath(values['host-proc'] ?? ''),
    netnsDir: tidyPath(values['netns-dir'] ?? ''),
    mode,
    mtu,
    vxlanVni,
    vxlanPort,
    metricsAddr,
    // The CLI reads $TRELLIS_ADMIN_SOCKET too: one ConfigMap key moves both ends.
    adminSocket: tidyPath(
      get('admin-socket', 'TRELLIS_ADMIN_SOCKET').raw ?? join(dirname(socket), 'admin.sock'),
    ),
    logLevel,
    noMasqueradeCIDRs: noMasq,
    publishCniConfig: values['no-cni-config'] !== true,
    masquerade: values['no-masquerade'] !== true,
    sourceCheck: values['no-source-check'] !== true,
    resyncMs,
    firewallCheckMs,
    acceptForward: values['no-accept-forward'] !== true,
    uninstallWaitMs,
    cniRequestTimeoutMs,
    names: Object.freeze({ metricsAddr: metrics.name, cniSourceDir: cniSource.name }),
  };
  const paths = [
    ['--socket', config.socket],
    ['--state-dir', config.stateDir],
    ['--spool-dir', config.spoolDir],
    ['--cni-conf-dir', config.cniConfDir],
    ['--cni-bin-dir', config.cniBinDir],
  ] as const;
  for (const [name, path] of paths) {
    if (!path.startsWith('/')) {
      throw new ConfigError(`${name} must be an absolute path, got ${JSON.stringify(path)}`);
    }
  }
  if (config.hostProc !== '' && !config.hostProc.startsWith('/')) {
    throw new ConfigError(
      `--host-proc must be an absolute path or '', got ${JSON.stringify(config.hostProc)}`,
    );
  }
  if (config.netnsDir !== '' && !config.netnsDir.startsWith('/')) {
    throw new ConfigError(
      `--netns-dir must be an absolute path or '', got ${JSON.stringify(config.netnsDir)}`,
    );
  }
  if (config.adminSocket !== '' && !config.adminSocket.startsWith('/')) {
    throw new ConfigError(
      `--admin-socket must be an absolute path or '', got ${JSON.stringify(config.adminSocket)}`,
    );
  }
  for (const [name, path] of [
    ['--socket', config.socket],
    ['--admin-socket', config.adminSocket],
  ] as const) {
    if (socketPathTooLong(path)) {
      throw new ConfigError(
        `${name} must be at most ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket path's limit), got ${Buffer.byteLength(path)}: ${JSON.stringify(path)}`,
      );
    }
  }
  // Checked here, not at the first pass: a bad entry would otherwise fail every pass's nft update
  // while the agent still went Ready, leaving pods without masquerade (or an old table in force).
  const noMasqName =
    values['no-masquerade-cidr'] === undefined && env.TRELLIS_NO_MASQUERADE_CIDRS !== undefined
      ? '--no-masquerade-cidr (from $TRELLIS_NO_MASQUERADE_CIDRS)'
      : '--no-masquerade-cidr';
  try {
    validateNoMasqueradeCIDRs(config.noMasqueradeCIDRs);
  } catch (err) {
    throw new ConfigError(`${noMasqName}: ${(err as Error).message}`);
  }
  for (const cidr of config.podCIDRs) {
    try {
      parseRanges([cidr]);
    } catch (err) {
      throw new ConfigError(`--pod-cidr ${JSON.stringify(cidr)}: ${(err as Error).message}`);
    }
  }
  let podRanges: string[];
  try {
    podRanges = parseRanges(config.podCIDRs).map((r) => r.text);
  } catch (err) {
    throw new ConfigError(`--pod-cidr: ${(err as Error).message}`);
  }
  // Canonical, as the IPAM holds them and as Node objects' are: compared as text with what it holds
  // on every pass, `FD00:10:244:1:0::/64` would be set again (and logged as a change) each time.
  config.podCIDRs = podRanges;
  const v6Cidr = config.podCIDRs.find((c) => c.includes(':'));
  if (config.mtu > 0 && config.mtu < IPV6_MIN_MTU && v6Cidr !== undefined) {
    // Every ADD would fail (the kernel takes IPv6 off a smaller link); in Kubernetes mode, where the
    // pod CIDRs come later, the agent stays not ready instead (Agent.onSynced).
    throw new ConfigError(
      `${mtuSetting.name} ${config.mtu} is below ${IPV6_MIN_MTU}, the smallest MTU IPv6 runs on, and --pod-cidr ${v6Cidr} is IPv6`,
    );
  }
  if (opts.requireNode !== false && config.podCIDRs.length === 0 && config.nodeName === undefined) {
    throw new ConfigError(
      'the node name is unknown: set NODE_NAME (the DaemonSet passes spec.nodeName through the downward API) ' +
        'or --node-name, or run standalone with --pod-cidr',
    );
  }
  return Object.freeze(config);
}

function splitList(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function emptyToUndefined(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

/**
 * An absolute path as the agent writes it into the CNI config and compares it: `/var/lib/trellis/`
 * and `/run/trellis//cni.sock` name the same places as their tidy forms, but the config renderer
 * (rightly) refuses a path that is not normalized, which failed every pass and kept the agent from
 * ever becoming ready. Relative paths and '' are left as given, for the checks below to refuse or allow.
 */
function tidyPath(path: string): string {
  if (!path.startsWith('/')) return path;
  const n = normalize(path);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}
