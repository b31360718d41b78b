import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { BackgroundDeleter } from '../../../pkg/datapath/background-deleter.ts';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { createNetnsPort, openHostNetlink, readSysctlSync, withNetns } from '../../../pkg/netns/index.ts';
import type { TestNetns } from '../../support/netns.ts';

/** The datapath's dependencies, and the scratch directory their leases are in. */
export type InProcessDeps = DatapathDeps & { readonly leaseDir: string };

/**
 * The datapath's dependencies for in-process tests, with the test's `host` namespace as the node:
 * its netlink handle, its sysctls (never the test process's own), and leases in a scratch directory.
 * `echo`: the agent's own host handle (the kernel echoes a new pair); otherwise a plain handle, whose
 * pairs are looked up. What needs closing or removing is pushed onto `cleanups`.
 */
export function inProcessDeps(
  host: TestNetns,
  ranges: string[],
  cleanups: (() => void)[],
  opts: { echo: boolean },
): InProcessDeps {
  const port = createNetnsPort();
  const handle: NetlinkHandle = opts.echo
    ? withNetns(host.path, () => openHostNetlink())
    : port.openNetlinkIn(host.path);
  const dir = mkdtempSync(join(tmpdir(), 'trl-dp-'));
  cleanups.push(
    () => handle.close(),
    () => rmSync(dir, { recursive: true, force: true }),
  );
  return {
    host: handle,
    netns: {
      ...port,
      writeSysctl: (key, value) => port.writeSysctlIn(host.path, key, value),
      // Read in the node's namespace too, as the agent reads its own: not this process's (the root's).
      readSysctl: (key) => withNetns(host.path, () => readSysctlSync(key)),
    },
    ipam: openIpam({ dir, ranges }),
    deleter: new BackgroundDeleter(() => undefined),
    leaseDir: dir,
  };
}

/**
 * `deps` whose namespace port cannot open the namespace at `path` (every one when absent) for want of
 * file descriptors: what openNetnsFd throws on a real EMFILE (test/integration/netns/
 * host-netlink-open.test.ts proves it under prlimit). The rest of the port is the real one.
 */
export function starvedOf<T extends Pick<DatapathDeps, 'netns'>>(deps: T, path?: string): T {
  const starve =
    <R>(real: (p: string) => R) =>
    (p: string): R => {
      if (path !== undefined && p !== path) return real(p);
      throw new CniError(CniCode.IO_FAILURE, `cannot open network namespace ${p}: EMFILE`);
    };
  return {
    ...deps,
    netns: {
      ...deps.netns,
      openNetnsFd: starve((p) => deps.netns.openNetnsFd(p)),
      isNetns: starve((p) => deps.netns.isNetns(p)),
    },
  };
}
