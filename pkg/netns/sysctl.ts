import { readFileSync, writeFileSync } from 'node:fs';
import { SysctlError } from './errors.ts';

/**
 * /proc/sys access by slash-separated key ("net/ipv4/conf/eth0/forwarding"). Keys are validated
 * because they are built from interface names: nothing may escape /proc/sys. Upper case is
 * accepted because interface names may contain it.
 */

const KEY = /^[A-Za-z0-9_][A-Za-z0-9_./-]*$/;

export function sysctlPath(key: string): string {
  if (!KEY.test(key) || key.split('/').includes('..')) {
    throw new SysctlError(key, 'invalid key (allowed: letters, digits, "_", ".", "-", "/"; no "..")');
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
