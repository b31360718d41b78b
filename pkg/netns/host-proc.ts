import { existsSync } from 'node:fs';
import { isNetns } from './netns.ts';

/**
 * Where the agent opens a network namespace path a runtime names. containerd and CRI-O pin a pod's
 * namespace under /var/run/netns, which the DaemonSet mounts at the same path. cri-dockerd (Docker
 * Engine under kubeadm) names /proc/PID/ns/net instead, a PID of the host's PID namespace that the
 * agent, in its container's own, cannot see in its /proc (or sees as another process). With
 * --host-proc DIR (the host's /proc mounted at DIR) such a path is read there. A path the container
 * does not have (containerd's `netns_mounts_under_state_dir`, CRI-O's `namespaces_dir` elsewhere) is
 * opened through the host's root as its PID 1 sees it, DIR/1/root, when it is there. Everything
 * else, and every path when DIR is '' (an agent running on the host itself), is opened as given.
 */
export function agentNetnsPath(
  path: string,
  hostProc: string,
  exists: (path: string) => boolean = existsSync,
): string {
  if (hostProc === '' || !path.startsWith('/')) return path;
  const dir = hostProc.replace(/\/+$/, '');
  if (path.startsWith('/proc/')) return `${dir}/${path.slice('/proc/'.length)}`;
  if (exists(path)) return path;
  // Only when it is there: a namespace gone (a late DEL) is reported under the runtime's own path.
  const viaHostRoot = `${dir}/1/root${path}`;
  return exists(viaHostRoot) ? viaHostRoot : path;
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
