import { execFile } from 'node:child_process';
import type { NetlinkHandle } from '../datapath/ports.ts';

/**
 * The kernel deletes a veth pair inside the deleting sendmsg() (15-33 ms here), and the agent has one
 * JS thread: deleted through the agent's own netlink socket, every background veth deletion froze
 * every CNI call behind it (measured: sequential DELs at ~36 ms p50, agent profile dominated by that
 * one syscall). Handing the deletion to a short-lived `ip link del` makes that process wait for the
 * kernel instead, and the agent keeps serving. The result is the same kernel operation; completion
 * is still awaited (BackgroundDeleter's ordering, ADD waiting for the name, drain on shutdown).
 */

export type RunIp = (args: string[]) => Promise<{ code: number; stderr: string }>;

const runIp: RunIp = (args) =>
  new Promise((resolve, reject) => {
    execFile('ip', args, { encoding: 'utf8', timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err === null) resolve({ code: 0, stderr });
      else if (typeof err.code === 'number') resolve({ code: err.code, stderr });
      else reject(err); // could not run `ip` at all (ENOENT, timeout)
    });
  });

/**
 * `handle` with deleteLink(index) done by an `ip` child process in the agent's namespace (it inherits
 * it). Every other method is the handle's own. When `ip` cannot run, the handle's own deleteLink.
 */
export function withDetachedLinkDelete(handle: NetlinkHandle, run: RunIp = runIp): NetlinkHandle {
  const deleteLink = async (index: number): Promise<void> => {
    const link = await handle.getLinkByIndex(index);
    if (link === undefined) return handle.deleteLink(index); // the handle's typed "not found"
    let out: { code: number; stderr: string };
    try {
      out = await run(['link', 'del', 'dev', link.name]);
    } catch {
      return handle.deleteLink(index);
    }
    if (out.code === 0) return;
    // Gone meanwhile, or any other failure: let the handle report it with its typed errors.
    if ((await handle.getLinkByIndex(index))?.name !== link.name) return;
    return handle.deleteLink(index);
  };
  return new Proxy(handle, {
    get(target, prop) {
      if (prop === 'deleteLink') return deleteLink;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
