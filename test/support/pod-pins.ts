import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdirSync, openSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
// biome-ignore lint/style/noRestrictedImports: test tooling, not agent code: mount(2) and umount2(2), which Node does not expose and pkg/netns has no port for.
import { DataType, define, open } from 'ffi-rs';
import { errnoName } from '../../pkg/errno.ts';
import type { CallResult } from '../../pkg/netns/libc.ts';
import { undoIfSignalled } from './signal-undo.ts';

/**
 * Pod network namespaces pinned the way a runtime pins them (containerd's pkg/netns, CRI-O's pinns):
 * an empty file created at the pod's path, then the namespace's nsfs bind-mounted onto it; unpinned
 * by a lazy unmount and an unlink. In-process through libc (tens of microseconds), not a process
 * spawn per pod.
 *
 * The pins live under a root of their own, /run/trl-pins-HEX, bind-mounted onto itself and made
 * shared (in a peer group of its own, not its parent's): mount namespaces copied from this one later,
 * as `ip netns exec` copies them (slave mounts) for an agent and the benchmark's plugin runners, then
 * receive the pins made afterwards, as a containerized agent receives the runtime's from a shared
 * /var/run/netns. One subdirectory per user (a plugin, an agent), so that an agent watching its own
 * sees only its own pods. Create the root before the processes that must see the pins start.
 */

const MS_BIND = 0x1000;
const MS_PRIVATE = 1 << 18;
const MS_SHARED = 1 << 20;
const MNT_DETACH = 2;
const EINVAL = 22;
const ENOENT = 2;

interface MountCalls {
  mount(source: string, target: string, flags: number): CallResult;
  umount2(target: string, flags: number): CallResult;
}

let calls: MountCalls | undefined;

function libc(): MountCalls {
  if (calls !== undefined) return calls;
  const library = 'trl-bench-mount';
  open({ library, path: 'libc.so.6' });
  const fns = define({
    mount: {
      library,
      retType: DataType.I32,
      paramsType: [DataType.String, DataType.String, DataType.String, DataType.I64, DataType.String],
      errno: true,
    },
    umount2: { library, retType: DataType.I32, paramsType: [DataType.String, DataType.I32], errno: true },
  });
  const result = (r: { value: number; errnoCode: number }): CallResult => ({
    value: r.value,
    errno: r.value === -1 ? r.errnoCode : 0,
  });
  calls = {
    // The file system type and data are ignored for a bind mount and a propagation change: given as
    // 'none' and '' rather than NULL.
    mount: (source, target, flags) => result(fns.mount([source, target, 'none', flags, ''])),
    umount2: (target, flags) => result(fns.umount2([target, flags])),
  };
  return calls;
}

function mountOrThrow(source: string, target: string, flags: number, what: string): void {
  const r = libc().mount(source, target, flags);
  if (r.value !== 0) throw new Error(`${what} ${target}: mount: ${errnoName(r.errno)}`);
}

export interface PodPins<D extends string = string> {
  /** /run/trl-pins-HEX. */
  readonly root: string;
  /** A pod directory, ROOT/DIR. */
  dir(dir: D): string;
  /**
   * Pins the namespace at `source` (an nsfs file, e.g. /var/run/netns/NAME) at `path`, which must be
   * in one of the pod directories and not exist yet; returns path.
   */
  pin(path: string, source: string): string;
  /** Unmounts (lazily) and removes a pin of pin's; nothing for a path it has not pinned. */
  unpin(path: string): void;
  /**
   * Unpins whatever is left, unmounts the root and removes it. Never throws (it runs in finally
   * blocks): what it could not undo is written to stderr.
   */
  teardown(): void;
}

/** Creates the root, its self bind mount (shared) and the pod directories `dirs` in it. */
export function createPodPins<D extends string>(dirs: readonly D[]): PodPins<D> {
  const root = `/run/trl-pins-${randomBytes(4).toString('hex')}`;
  const pinned = new Set<string>();
  let rootMounted = false;
  let tornDown = false;

  const inPodDir = (path: string): boolean =>
    dirs.some(
      (d) => path.startsWith(`${root}/${d}/`) && !path.slice(root.length + d.length + 2).includes('/'),
    );

  /** umount2 (lazy) and unlink; an error for what failed, ENOENT/EINVAL (not there, not mounted) excepted. */
  const release = (path: string): string | undefined => {
    let problem: string | undefined;
    const r = libc().umount2(path, MNT_DETACH);
    if (r.value !== 0 && r.errno !== EINVAL && r.errno !== ENOENT) problem = `umount2: ${errnoName(r.errno)}`;
    try {
      unlinkSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') problem = `${problem === undefined ? '' : `${problem}, `}unlink: ${code}`;
    }
    return problem;
  };

  let unregister = (): void => undefined;
  const pins: PodPins<D> = {
    root,
    dir: (d) => join(root, d),
    pin(path, source) {
      if (!inPodDir(path)) throw new Error(`refusing to pin ${path}: not in a pod directory of ${root}`);
      // As containerd: the mount point first, an empty file of its own (not one already there).
      closeSync(openSync(path, constants.O_RDONLY | constants.O_CREAT | constants.O_EXCL, 0o444));
      pinned.add(path);
      try {
        mountOrThrow(source, path, MS_BIND, `pinning ${source} at`);
      } catch (e) {
        release(path);
        pinned.delete(path);
        throw e;
      }
      return path;
    },
    unpin(path) {
      if (!pinned.has(path)) return;
      const problem = release(path);
      pinned.delete(path);
      if (problem !== undefined) throw new Error(`unpinning ${path}: ${problem}`);
    },
    teardown() {
      if (tornDown) return;
      tornDown = true;
      unregister();
      const warn = (what: string): void => {
        process.stderr.write(`warning: pod pins: ${what}\n`);
      };
      // Every entry of the pod directories, not only those pinned here: a pin interrupted between its
      // file and its mount leaves a file.
      for (const d of dirs) {
        let names: string[] = [];
        try {
          names = readdirSync(join(root, d));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') warn(`reading ${join(root, d)}: ${String(e)}`);
        }
        for (const name of names) {
          const problem = release(join(root, d, name));
          if (problem !== undefined) warn(`unpinning ${join(root, d, name)}: ${problem}`);
        }
      }
      pinned.clear();
      if (rootMounted) {
        const r = libc().umount2(root, MNT_DETACH);
        if (r.value !== 0) warn(`unmounting ${root}: umount2: ${errnoName(r.errno)}`);
      }
      try {
        rmSync(root, { recursive: true, force: true });
      } catch (e) {
        warn(`removing ${root}: ${String(e)}`);
      }
    },
  };

  mkdirSync(root, { mode: 0o755 }); // not recursive: the name is fresh, an existing one is not ours
  unregister = undoIfSignalled(`pod pins ${root}`, () => pins.teardown());
  try {
    mountOrThrow(root, root, MS_BIND, 'bind-mounting');
    rootMounted = true;
    // Private first, then shared: a peer group of its own. A bind mount under a shared parent would
    // otherwise join the parent's group, and the pins would propagate wherever the parent's do.
    mountOrThrow('none', root, MS_PRIVATE, 'making private');
    mountOrThrow('none', root, MS_SHARED, 'making shared');
    for (const d of dirs) mkdirSync(join(root, d), { mode: 0o755 });
  } catch (e) {
    pins.teardown();
    throw e;
  }
  return pins;
}
