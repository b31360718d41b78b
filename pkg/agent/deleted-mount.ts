/**
 * A directory the agent keeps files in whose host directory was deleted under it.
 *
 * In the DaemonSet, /run/trellis, /var/lib/trellis, /etc/cni/net.d and /opt/cni/bin are hostPath bind
 * mounts. `rm -rf /run/trellis` on the node deletes the directory the container's mount is rooted at:
 * the mount stays, on a directory with no links left, in which the kernel creates nothing (ENOENT), and
 * the host's new /run/trellis is another directory the container never sees. Putting the socket or the
 * lease records back cannot work then; only a new container, whose hostPath mount is made afresh
 * (DirectoryOrCreate), sees the host's directory again.
 *
 * Outside a container the same deletion leaves no directory at the path, and the agent makes it again.
 */
import { dirname } from 'node:path';

export type StatLinks = (path: string) => { nlink: number } | undefined;

/**
 * The deleted directory `dir` lies in (itself or the nearest ancestor there is), or undefined when it
 * lies in a live one. A live directory has links (two at least on most file systems, one on btrfs and
 * overlayfs); a deleted one, none.
 */
export function deletedDirectoryOf(dir: string, stat: StatLinks): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    const s = stat(d);
    if (s !== undefined) return s.nlink === 0 ? d : undefined;
    if (dirname(d) === d) return undefined;
  }
}
