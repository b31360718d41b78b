import type { ChildProcess } from 'node:child_process';

export interface ChildOutput {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A child's stdout and stderr as text, once it has exited and both are closed ('close', not 'exit',
 * so nothing it wrote is missed). Rejects when it could not be started. Its stdout and stderr must
 * be pipes.
 */
export function childOutput(child: ChildProcess): Promise<ChildOutput> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
