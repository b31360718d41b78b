import { isNetns } from './netns.ts';

/**
 * Where the agent opens a network namespace path a runtime names. containerd and CRI-O pin a pod's
 * namespace under /var/run/netns, which the DaemonSet mounts at the same path. cri-dockerd (Docker
 * Engine under kubeadm) names /proc/PID/ns/net instead, a PID of the host's PID namespace that the
 * agent, in its container's own, cannot see in its /proc (or sees as another process). With
 * --host-proc DIR (the host's /proc mounted at DIR) such a path is read there. Everything else, and
 * every path when DIR is '' (an agent running on the host itself), is opened as given.
 */
export function agentNetnsPath(path: string, hostProc: string): string {
  if (hostProc === '' || !path.startsWith('/proc/')) return path;
  return `${hostProc.replace(/\/+$/, '')}/${path.slice('/proc/'.length)}`;
}

/**
 * Why `dir` is not a mounted /proc, or undefined when it is usable: `self/ns/net` there must be a
 * network namespace (the agent's own, hostNetwork: the host's). PID 1's may not be readable (a
 * sandbox's init in another user namespace). Checked at start, so a DaemonSet without the mount fails
 * loudly instead of at the first cri-dockerd pod.
 */
export function hostProcProblem(dir: string): string | undefined {
  return isNetns(`${dir.replace(/\/+$/, '')}/self/ns/net`)
    ? undefined
    : "has no self/ns/net: is the host's /proc mounted there?";
}
