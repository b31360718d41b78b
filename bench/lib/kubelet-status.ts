/**
 * What kubelets put in their Node objects and keep sending: a status of the size a real node reports
 * (five conditions with heartbeat times, capacity and allocatable, node info, a list of cached
 * images; ~5 KB of JSON, where bench/lib/cluster.ts's nodeObject is ~0.4 KB), and the status update
 * every kubelet sends at least every nodeStatusReportFrequency (5 minutes by default) with fresh
 * heartbeat times, even when nothing changed. 5,000 nodes: ~16.7 Node updates a second, each one a
 * watch event the agent must read and decide it can ignore.
 */
import type { JsonObject } from '../../test/support/apiserver/patch.ts';

/** Kubelet's default nodeStatusReportFrequency. */
export const STATUS_REPORT_SECONDS = 300;

const CONDITIONS = [
  ['MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'],
  ['DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'],
  ['PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'],
  ['Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'],
] as const;

function conditions(heartbeat: string): JsonObject[] {
  return CONDITIONS.map(([type, status, reason, message]) => ({
    type,
    status,
    lastHeartbeatTime: heartbeat,
    lastTransitionTime: '2026-11-01T00:00:00Z',
    reason,
    message,
  }));
}

/** Images a node of a busy cluster has cached: names and sizes, as the kubelet lists them. */
function images(i: number): JsonObject[] {
  return Array.from({ length: 24 }, (_, k) => ({
    names: [
      `registry.example.com/team-${k % 7}/service-${k}@sha256:${(i * 31 + k).toString(16).padStart(64, '0')}`,
      `registry.example.com/team-${k % 7}/service-${k}:v1.${k}.${i % 10}`,
    ],
    sizeBytes: 20_000_000 + k * 1_234_567,
  }));
}

/** `node` with a kubelet's status added (its own addresses and conditions kept where it has them). */
export function withKubeletStatus(node: JsonObject, i: number, heartbeat: string): JsonObject {
  const status = (node.status ?? {}) as JsonObject;
  return {
    ...node,
    status: {
      ...status,
      capacity: { cpu: '16', 'ephemeral-storage': '203056560Ki', memory: '65851484Ki', pods: '110' },
      allocatable: { cpu: '15890m', 'ephemeral-storage': '187136925387', memory: '64700508Ki', pods: '110' },
      conditions: conditions(heartbeat),
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: i.toString(16).padStart(32, '0'),
        systemUUID: `ec2${i.toString(16).padStart(5, '0')}-0000-4000-8000-000000000000`,
        bootID: `${i.toString(16).padStart(8, '0')}-1111-4111-8111-111111111111`,
        kernelVersion: '6.1.0-27-cloud-amd64',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.24',
        kubeletVersion: 'v1.31.4',
        kubeProxyVersion: 'v1.31.4',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
      images: images(i),
    },
  };
}

/** The same Node with every condition's heartbeat moved to `heartbeat`: a kubelet's periodic report. */
export function heartbeat(node: JsonObject, heartbeatTime: string): JsonObject {
  const status = (node.status ?? {}) as JsonObject;
  const conds = (status.conditions ?? []) as JsonObject[];
  return {
    ...node,
    status: { ...status, conditions: conds.map((c) => ({ ...c, lastHeartbeatTime: heartbeatTime })) },
  };
}
