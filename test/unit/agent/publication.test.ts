import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentConfig } from '../../../pkg/agent/config.ts';
import { CniConfigPublisher } from '../../../pkg/agent/publication.ts';

const VERSION_REPLY = `echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'`;

describe('CniConfigPublisher.keep (the published list removed under the agent)', () => {
  let dir: string;
  let binDir: string;
  let confDir: string;
  let publisher: CniConfigPublisher;
  const conflist = (): string => join(confDir, '10-trellis.conflist');
  const plugin = (name: string, body: string): void =>
    writeFileSync(join(binDir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trl-publication-'));
    binDir = join(dir, 'bin');
    confDir = join(dir, 'net.d');
    mkdirSync(binDir);
    mkdirSync(confDir);
    for (const b of ['trellis', 'portmap', 'loopback']) plugin(b, VERSION_REPLY);
    const config = {
      cniBinDir: binDir,
      cniConfDir: confDir,
      hostProc: '',
      socket: join(dir, 'cni.sock'),
      spoolDir: join(dir, 'spool'),
    } as AgentConfig;
    publisher = new CniConfigPublisher(config, pino({ level: 'silent' }));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes back the list as last published', async () => {
    expect(await publisher.publish(1450)).toBeUndefined();
    const published = readFileSync(conflist(), 'utf8');
    expect(await publisher.keep()).toBe('present'); // in place: nothing to do
    rmSync(conflist());
    expect(await publisher.keep()).toBe('written');
    expect(readFileSync(conflist(), 'utf8')).toBe(published);
  });

  it('not while the binaries last failed their check: the list the publisher refused stays away', async () => {
    expect(await publisher.publish(1450)).toBeUndefined();
    plugin('portmap', 'echo "broken" >&2; exit 1');
    expect(await publisher.publish(1450)).toMatchObject({ problems: [{ binary: join(binDir, 'portmap') }] });
    rmSync(conflist());
    expect(await publisher.keep()).toBe('skipped');
    expect(existsSync(conflist())).toBe(false);
    // Fixed: the next publish writes it, and keep() looks after it again.
    plugin('portmap', VERSION_REPLY);
    expect(await publisher.publish(1450)).toBeUndefined();
    rmSync(conflist());
    expect(await publisher.keep()).toBe('written');
  });

  it('leaves the list to a publish under way, without waiting for its VERSION probes', async () => {
    expect(await publisher.publish(1450)).toBeUndefined();
    // A slow plugin (new file: not cached) holds the next publish for a while.
    plugin('portmap', `sleep 1; ${VERSION_REPLY}`);
    const publishing = publisher.publish(1500);
    rmSync(conflist());
    // keep() answers while the publish still waits for the plugin's second of sleep.
    const first = await Promise.race([
      publisher.keep().then((kept) => `keep: ${kept}`),
      publishing.then(() => 'the publish'),
    ]);
    expect(first).toBe('keep: skipped');
    expect(await publishing).toBeUndefined();
    expect(readFileSync(conflist(), 'utf8')).toContain('1500');
  });
});
