/**
 * The two things the VXLAN backend needs that the netlink port (pkg/datapath/ports.ts) cannot do yet:
 * read a VXLAN device's parameters (IFLA_INFO_DATA) and set a link's MAC (IFLA_ADDRESS). This adapter
 * asks iproute2, which the image ships (Dockerfile) and the tests use: argv only, never a shell, with a
 * timeout. It runs `ip` in the agent's namespace; tests pass `netns` to run `ip -n NAME`.
 * When the netlink adapter grows these operations, a handle-backed VxlanLinkTool replaces this file.
 */

import { execFile } from 'node:child_process';
import { errorText } from '../error-text.ts';

export interface VxlanParams {
  vni: number;
  port: number;
  /** IFLA_VXLAN_LOCAL / LOCAL6; undefined when the device has none. */
  localIp: string | undefined;
  learning: boolean;
}

/** Link details the netlink port does not carry, and the link MAC setter. */
export interface VxlanLinkTool {
  /** The device's VXLAN parameters; undefined when it does not exist, null when it is not a VXLAN device. */
  vxlanParams(name: string): Promise<VxlanParams | undefined | null>;
  setMac(name: string, mac: string): Promise<void>;
}

export class IpCommandError extends Error {
  readonly argv: readonly string[];
  readonly stderr: string;
  constructor(argv: readonly string[], stderr: string, cause: unknown) {
    super(`${argv.join(' ')}: ${stderr.trim() || errorText(cause)}`, {
      cause,
    });
    this.name = 'IpCommandError';
    this.argv = argv;
    this.stderr = stderr;
  }
}

export interface IpRouteToolOptions {
  /** The ip binary; 'ip' on PATH by default. */
  ipPath?: string;
  /** Run as `ip -n NAME ...` (tests); the agent's own namespace when unset. */
  netns?: string;
  timeoutMs?: number;
}

/** `ip -d -j link show` JSON for one link (only the fields read here). */
interface IpLinkJson {
  linkinfo?: {
    info_kind?: string;
    info_data?: { id?: number; port?: number; local?: string; local6?: string; learning?: boolean };
  };
}

/** Parses `ip -d -j link show dev NAME` output into VxlanParams (null: not a VXLAN device). */
export function parseIpLinkJson(stdout: string): VxlanParams | null {
  const links = JSON.parse(stdout) as IpLinkJson[];
  const info = links[0]?.linkinfo;
  if (info?.info_kind !== 'vxlan' || info.info_data === undefined) return null;
  const d = info.info_data;
  return {
    vni: d.id ?? -1,
    port: d.port ?? -1,
    localIp: d.local ?? d.local6,
    learning: d.learning === true,
  };
}

export class IpRouteTool implements VxlanLinkTool {
  private readonly ipPath: string;
  private readonly prefix: readonly string[];
  private readonly timeoutMs: number;

  constructor(opts: IpRouteToolOptions = {}) {
    this.ipPath = opts.ipPath ?? 'ip';
    this.prefix = opts.netns === undefined ? [] : ['-n', opts.netns];
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  async vxlanParams(name: string): Promise<VxlanParams | undefined | null> {
    try {
      return parseIpLinkJson(await this.run(['-d', '-j', 'link', 'show', 'dev', name]));
    } catch (err) {
      if (err instanceof IpCommandError && /does not exist/.test(err.stderr)) return undefined;
      throw err;
    }
  }

  async setMac(name: string, mac: string): Promise<void> {
    await this.run(['link', 'set', 'dev', name, 'address', mac]);
  }

  private run(args: string[]): Promise<string> {
    const argv = [...this.prefix, ...args];
    return new Promise((resolve, reject) => {
      execFile(
        this.ipPath,
        argv,
        { timeout: this.timeoutMs, encoding: 'utf8', maxBuffer: 1 << 20 },
        (err, stdout, stderr) => {
          if (err !== null) reject(new IpCommandError([this.ipPath, ...argv], stderr, err));
          else resolve(stdout);
        },
      );
    });
  }
}
