import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { KNOWN_CNI_VERSIONS } from './render.ts';

/**
 * Which of KNOWN_CNI_VERSIONS every chained plugin speaks, asked the way a runtime asks: VERSION.
 * libcni >= 1.2 sends the highest `cniVersions` entry to every plugin in the list, so 1.1.0 (GC,
 * STATUS) is advertised only when the installed portmap accepts it too; Debian's 1.1.1 does not.
 */
export function commonVersions(supported: readonly (readonly string[])[]): string[] {
  return KNOWN_CNI_VERSIONS.filter((v) => supported.every((list) => list.includes(v)));
}

/** A plugin's `supportedVersions` from its VERSION answer; [] when it cannot be run or answers oddly. */
export function pluginVersions(path: string): Promise<string[]> {
  return new Promise((resolve) => {
    const child = execFile(
      path,
      [],
      { env: { CNI_COMMAND: 'VERSION' }, timeout: 5_000, encoding: 'utf8' },
      (err, stdout) => {
        if (err !== null) return resolve([]);
        try {
          const reply = JSON.parse(stdout) as { supportedVersions?: unknown };
          const list = reply.supportedVersions;
          resolve(Array.isArray(list) ? list.filter((v): v is string => typeof v === 'string') : []);
        } catch {
          resolve([]);
        }
      },
    );
    // A plugin may answer VERSION and exit without reading stdin; writing to its closed pipe then fails
    // with EPIPE, which without a listener is an uncaught 'error' that kills the agent. The answer is
    // judged from stdout and the exit alone.
    child.stdin?.on('error', () => {});
    child.stdin?.end(JSON.stringify({ cniVersion: '1.0.0' }));
  });
}

/** Caches each binary's answer by size and mtime: the agent publishes on every pass. */
export class ChainVersionProbe {
  private readonly cache = new Map<string, { key: string; versions: string[] }>();

  async versions(paths: readonly string[]): Promise<string[]> {
    const lists = await Promise.all(paths.map((p) => this.one(p)));
    const common = commonVersions(lists);
    // 1.0.0 is what runtimes of the containerd 1.6 generation read; never publish an empty list.
    return common.length > 0 ? common : ['1.0.0'];
  }

  private async one(path: string): Promise<string[]> {
    let key: string;
    try {
      const st = await stat(path);
      key = `${st.size}:${st.mtimeMs}`;
    } catch {
      return [];
    }
    const hit = this.cache.get(path);
    if (hit !== undefined && hit.key === key) return hit.versions;
    const versions = await pluginVersions(path);
    this.cache.set(path, { key, versions });
    return versions;
  }
}
