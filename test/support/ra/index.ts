import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** send-ra.py: one router advertisement out of an interface (run inside a test namespace). */
export const SEND_RA = join(import.meta.dirname, 'send-ra.py');

/** Why an RA cannot be sent here (no python3), or undefined. */
export function raSkipReason(): string | undefined {
  const python = spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status === 0;
  return python
    ? undefined
    : 'needs python3 to send a router advertisement (apt-get install python3-minimal)';
}
