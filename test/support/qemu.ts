import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import { join } from 'node:path';

/** qemu-user runs an arm64 executable here, with Debian's arm64 libraries as its loader's root. */
export const QEMU_AARCH64 = '/usr/bin/qemu-aarch64';
export const ARM64_SYSROOT = '/usr/aarch64-linux-gnu';

/**
 * Why arm64 programs cannot run here under qemu-user, or undefined: not an x64 machine, or no qemu, or
 * no `lib` in the sysroot's lib/ (`what` names it, `packages` are the Debian packages that bring both).
 */
export function qemuArm64SkipReason(lib: string, what: string, packages: string): string | undefined {
  if (arch() !== 'x64') return `runs the arm64 build on an x64 machine; this one is ${arch()}`;
  if (!existsSync(QEMU_AARCH64) || !existsSync(join(ARM64_SYSROOT, 'lib', lib))) {
    return `needs ${QEMU_AARCH64} and ${what} in ${ARM64_SYSROOT} (apt-get install ${packages})`;
  }
  return undefined;
}
