import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { exitedAndRead, readAgentLog } from '../../support/agent-process.ts';

/**
 * The tests read an agent's log lines once it has exited: 'exit' alone can come before the pipe's
 * last lines are read. A grandchild that writes after its parent exited makes the gap certain.
 */
describe('exitedAndRead', () => {
  it('resolves with the exit code only once the lines written up to the pipe closing are read', async () => {
    const child = spawn(
      'sh',
      ['-c', '(sleep 0.3; echo \'{"msg":"last"}\') & echo \'{"msg":"first"}\'; exit 3'],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    const { logs } = readAgentLog(child.stdout!);
    const atExit = new Promise<string[]>((resolve) =>
      child.once('exit', () => resolve(logs.map((l) => String(l.msg)))),
    );
    expect(await exitedAndRead(child)).toBe(3);
    expect(logs.map((l) => l.msg)).toEqual(['first', 'last']);
    expect(await atExit).not.toContain('last'); // what a read at 'exit' would have seen
  });

  it('gives up waiting for the pipe 2 s after the exit when a grandchild keeps it open', async () => {
    // Its own process group, so that the sleeping grandchild is killed with it afterwards.
    const child = spawn('sh', ['-c', 'sleep 30 & exit 0'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    try {
      expect(await exitedAndRead(child)).toBe(0);
      expect(child.stdout?.readableEnded).toBe(false); // the grandchild still holds the pipe
    } finally {
      process.kill(-child.pid!, 'SIGKILL');
      child.stdout?.destroy();
    }
  });
});
