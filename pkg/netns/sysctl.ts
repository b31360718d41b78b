import { readFileSync, writeFileSync } from 'node:fs';
import { SysctlError } from './errors.ts';

/**
 * /proc/sys access by slash-separated key ("net/ipv4/conf/eth0/forwarding"). Keys are validated
 * because they are built from interface names: nothing may escape /proc/sys. Each part between the
 * slashes may be any interface name Linux accepts ("e@1", "a+b", "_x" name their own directories
 * under net/ipv6/conf), so a part is refused only when it is empty, "." or "..", or holds NUL or
 * whitespace (which no interface name holds).
 */

const PART = /^[^\s\0/]+$/u;

export function sysctlPath(key: string): string {
  if (!key.split('/').every((part) => PART.test(part) && part !== '.' && part !== '..')) {
    throw new SysctlError(
      key,
      'invalid key (parts between "/" must not be empty, "." or "..", or hold NUL or whitespace)',
    );
  }
  return `/proc/sys/${key}`;
}

/** Synchronous on purpose: inside withNetns only the JS thread is in the target namespace. */
export function writeSysctlSync(key: string, value: string): void {
  const path = sysctlPath(key);
  try {
    writeFileSync(path, value);
  } catch (e) {
    throw new SysctlError(
      key,
      `write ${JSON.stringify(value)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      {
        cause: e,
      },
    );
  }
}

export function readSysctlSync(key: string): string {
  const path = sysctlPath(key);
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new SysctlError(key, `read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
}
