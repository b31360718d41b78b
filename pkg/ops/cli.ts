/**
 * The operator subcommands of trellis-agent: status, routes, leases, doctor (this node, through the
 * agent's admin socket) and coverage (the cluster, through the API). They return an exit code; only
 * cmd/agent exits.
 *
 * Exit codes: 0 all good; 1 something is wrong (not ready, drift, a doctor finding, a coverage gap, or
 * the agent unreachable); 2 bad usage (a flag, or a kubeconfig that cannot be used); 3 doctor could not
 * check the node at all (its facts could not be gathered: the netlink handle, the links), so a script
 * does not take a broken doctor for a broken node. A check doctor skipped (SKIP, `skipped` in --json)
 * does not make it 3: the rest was checked, and what a skipped check needs is mostly another check's
 * finding (an unreachable agent: 1) or turned off (the firewall check: 0).
 */
import { parseArgs } from 'node:util';
import { DEFAULTS, parseDecimal } from '../agent/config.ts';
import { CONFLIST_FILE_NAME } from '../cniconf/render.ts';
import type { NetlinkHandle } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { K8sError, K8sReason, type NodeReader } from '../k8s/index.ts';
import { AdminError, adminGet, adminSocketProblem, defaultAdminSocket } from './admin-client.ts';
import { coverage } from './coverage.ts';
import { couldNotCheck, type DoctorFacts, runDoctor } from './doctor.ts';
import { gatherDoctorFacts } from './doctor-gather.ts';
import { formatCoverage, formatDoctor, formatLeases, formatRoutes, formatStatus } from './format.ts';
import { HEARTBEAT_MS, STALE_AFTER_MS } from './node-report.ts';
import { isReady, type LeasesView, type RoutesView, type StatusView } from './views.ts';

export const OPS_COMMANDS = ['status', 'routes', 'leases', 'doctor', 'coverage'] as const;
export type OpsCommand = (typeof OPS_COMMANDS)[number];

const HEARTBEAT_MINUTES = HEARTBEAT_MS / 60_000;
/**
 * The shortest --stale-minutes: a heartbeat, plus the minute between the agent's checks for a due
 * refresh, plus a minute for the write. A healthy agent's report ages up to ~11 minutes.
 */
const MIN_STALE_MINUTES = HEARTBEAT_MINUTES + 2;

export const OPS_USAGE = `operator commands (on a node: kubectl exec -n kube-system ds/trellis -- trellis-agent status):
  trellis-agent status   [--json]   the agent: node, pod CIDRs, mode, MTU, readiness, IPAM use
  trellis-agent routes   [--json]   desired vs programmed inter-node routes, per-peer paths (exit 1 on
                                    drift, or before the agent has listed the Nodes)
  trellis-agent leases   [--json]   IPAM leases: pod, addresses, host veth, netns
  trellis-agent doctor   [--json]   check this node; every problem with its fix (exit 1 on any,
                                    3 when it could not check at all)
  trellis-agent coverage [--json] [--kubeconfig FILE] [--stale-minutes N]
                                    nodes without a ready agent, a pod CIDR, or routes from their peers;
                                    an agent's report is stale after N minutes (default ${STALE_AFTER_MS / 60_000},
                                    at least ${MIN_STALE_MINUTES}: the agents refresh it every ${HEARTBEAT_MINUTES})
  --admin-socket PATH      [TRELLIS_ADMIN_SOCKET] the agent's admin socket (default: admin.sock next to --socket, ${defaultAdminSocket(DEFAULTS.socket)})
  --socket PATH            the agent's CNI socket, to derive the admin socket
  --cni-conf-dir DIR       doctor, when the agent cannot be asked (default ${DEFAULTS.cniConfDir})
  --cni-bin-dir DIR        doctor, when the agent cannot be asked (default ${DEFAULTS.cniBinDir})
  --state-dir DIR          doctor, when the agent cannot be asked: the pod CIDRs its last run saved (default ${DEFAULTS.stateDir})
`;

const FLAGS = {
  json: { type: 'boolean' },
  'admin-socket': { type: 'string' },
  socket: { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  'cni-bin-dir': { type: 'string' },
  'state-dir': { type: 'string' },
  kubeconfig: { type: 'string' },
  'stale-minutes': { type: 'string' },
} as const;

/** The flags each command reads (beyond --json): another one is a mistake worth saying, not ignoring. */
const FLAGS_OF: Readonly<Record<OpsCommand, readonly (keyof typeof FLAGS)[]>> = {
  status: ['admin-socket', 'socket'],
  routes: ['admin-socket', 'socket'],
  leases: ['admin-socket', 'socket'],
  doctor: ['admin-socket', 'socket', 'cni-conf-dir', 'cni-bin-dir', 'state-dir'],
  coverage: ['kubeconfig', 'stale-minutes'],
};

export interface OpsDeps {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** The node's (this network namespace's) netlink handle; doctor only. */
  openHost(): NetlinkHandle;
  /**
   * The API; coverage only. `kubeconfig` is --kubeconfig; without it the reader looks at `env`
   * ($KUBECONFIG, a list) and then at the service account. Throws a K8sError with reason CONFIG when
   * none can be used.
   */
  nodeReader(kubeconfig: string | undefined, env: Readonly<Record<string, string | undefined>>): NodeReader;
  now?: () => number;
}

export async function runOpsCommand(cmd: OpsCommand, argv: string[], deps: OpsDeps): Promise<number> {
  let values: ReturnType<
    typeof parseArgs<{ options: typeof FLAGS; strict: true; allowPositionals: false }>
  >['values'];
  try {
    values = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    deps.stderr(`trellis-agent ${cmd}: ${(err as Error).message}\n\n${OPS_USAGE}`);
    return 2;
  }
  const unused = Object.keys(values).filter(
    (k) => k !== 'json' && !FLAGS_OF[cmd].includes(k as keyof typeof FLAGS),
  );
  if (unused.length > 0) {
    deps.stderr(`trellis-agent ${cmd}: --${unused[0]} means nothing to ${cmd}\n\n${OPS_USAGE}`);
    return 2;
  }
  const json = values.json === true;
  const admin =
    values['admin-socket'] ??
    deps.env.TRELLIS_ADMIN_SOCKET?.trim() ??
    defaultAdminSocket(values.socket ?? DEFAULTS.socket);
  // doctor goes on without the agent (its own checks of the node); coverage reads the API alone.
  const adminProblem = cmd === 'coverage' ? undefined : adminSocketProblem(admin);
  if (adminProblem !== undefined && (cmd !== 'doctor' || admin !== '')) {
    deps.stderr(`trellis-agent ${cmd}: ${adminProblem}\n`);
    return 2;
  }
  const print = (doc: unknown, human: () => string): void => {
    deps.stdout(json ? `${JSON.stringify(doc, null, 2)}\n` : human());
  };
  try {
    switch (cmd) {
      case 'status': {
        const s = await adminGet<StatusView>(admin, '/status');
        print(s, () => formatStatus(s));
        return isReady(s) ? 0 : 1;
      }
      case 'routes': {
        const r = await adminGet<RoutesView>(admin, '/routes');
        print(r, () => formatRoutes(r));
        // Not synced: no drift found says nothing, the routes wanted being unknown.
        return r.drift === 0 && r.synced !== false ? 0 : 1;
      }
      case 'leases': {
        const l = await adminGet<LeasesView>(admin, '/leases');
        print(l, () => formatLeases(l));
        return 0;
      }
      case 'doctor': {
        let facts: DoctorFacts;
        try {
          facts = await gatherDoctorFacts({
            adminSocket: admin,
            cniConfDir: values['cni-conf-dir'] ?? DEFAULTS.cniConfDir,
            cniBinDir: values['cni-bin-dir'] ?? DEFAULTS.cniBinDir,
            stateDir: values['state-dir'] ?? DEFAULTS.stateDir,
            conflistName: CONFLIST_FILE_NAME,
            openHost: deps.openHost,
          });
        } catch (err) {
          // Nothing was checked: no finding about the node, so not exit 1; --json still gets a document.
          const failed = couldNotCheck(errorText(err));
          deps.stderr(`trellis-agent doctor: ${failed.error}\n`);
          if (json) print(failed, () => '');
          return 3;
        }
        const report = runDoctor(facts);
        print(report, () => formatDoctor(report));
        return report.ok ? 0 : 1;
      }
      case 'coverage': {
        const staleRaw = values['stale-minutes'];
        const staleMinutes = staleRaw === undefined ? undefined : parseDecimal(staleRaw);
        // Below the heartbeat every healthy agent's report ages past the limit before its refresh.
        if (staleRaw !== undefined && (staleMinutes === undefined || staleMinutes < MIN_STALE_MINUTES)) {
          deps.stderr(
            `trellis-agent coverage: --stale-minutes must be a decimal integer of at least ${MIN_STALE_MINUTES} (each agent refreshes its report every ${HEARTBEAT_MINUTES} minutes: a shorter limit calls healthy nodes stale), got ${JSON.stringify(staleRaw)}\n`,
          );
          return 2;
        }
        const staleMs = staleMinutes === undefined ? STALE_AFTER_MS : staleMinutes * 60_000;
        const nodes = await deps.nodeReader(emptyToUndefined(values.kubeconfig), deps.env).listNodes();
        const report = coverage(nodes.items, (deps.now ?? Date.now)(), staleMs);
        for (const p of nodes.problems) deps.stderr(`warning: a Node could not be read: ${p}\n`);
        print(report, () => formatCoverage(report));
        return report.ok && nodes.problems.length === 0 ? 0 : 1;
      }
    }
  } catch (err) {
    const msg = err instanceof AdminError ? err.message : err instanceof Error ? err.message : String(err);
    deps.stderr(`trellis-agent ${cmd}: ${msg}\n`);
    return err instanceof K8sError && err.reason === K8sReason.CONFIG ? 2 : 1;
  }
}

function emptyToUndefined(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}
