import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../../pkg/agent/config.ts';
import { configPathProblem } from '../../../pkg/agent/config-paths.ts';

describe('configPathProblem: directories the agent writes, checked at start', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function setUp() {
    const root = mkdtempSync(join(tmpdir(), 'trl-paths-'));
    dirs.push(root);
    const at = (...p: string[]) => join(root, ...p);
    const config = (extra: string[] = []) =>
      parseAgentConfig(
        [
          '--pod-cidr',
          '10.244.1.0/24',
          `--state-dir=${at('state')}`,
          `--socket=${at('run', 'cni.sock')}`,
          `--cni-conf-dir=${at('net.d')}`,
          `--cni-bin-dir=${at('bin')}`,
          ...extra,
        ],
        {},
      );
    return { at, config };
  }

  it('directories that exist or can be made are fine, missing ancestors included', () => {
    const { at, config } = setUp();
    expect(configPathProblem(config())).toBeUndefined();
    mkdirSync(at('net.d'));
    expect(configPathProblem(config())).toBeUndefined();
  });

  it('a file where the conf dir should be, or under the socket path, is named with its flag', () => {
    const { at, config } = setUp();
    writeFileSync(at('net.d'), '');
    expect(configPathProblem(config())).toBe(`--cni-conf-dir ${at('net.d')} is not a directory`);
    // Not published: the conf dir is not the agent's to write.
    expect(configPathProblem(config(['--no-cni-config']))).toBeUndefined();
    rmSync(at('net.d'));
    writeFileSync(at('run'), '');
    expect(configPathProblem(config())).toBe(
      `--socket ${at('run', 'cni.sock')}: its directory ${at('run')} is not a directory`,
    );
  });

  it('a file further up is the one named', () => {
    const { at, config } = setUp();
    writeFileSync(at('state'), '');
    expect(configPathProblem(config([`--state-dir=${at('state', 'deep', 'er')}`]))).toBe(
      `--state-dir ${at('state', 'deep', 'er')} (${at('state')} is in the way) is not a directory`,
    );
  });
});
