import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentConfig } from '../../../pkg/agent/config.ts';
import { CniConfigPublisher, withdrawPreviousBootConflist } from '../../../pkg/agent/publication.ts';

const VERSION_REPLY = `echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'`;

/** A node's CNI dirs in a temp dir: bin/ with trellis, portmap and loopback answering `reply`, net.d/, state/. */
function nodeDirs(reply: string): { dir: string; binDir: string; confDir: string; config: AgentConfig } {
  const dir = mkdtempSync(join(tmpdir(), 'trl-publication-'));
  const binDir = join(dir, 'bin');
  const confDir = join(dir, 'net.d');
  for (const d of [binDir, confDir, join(dir, 'state')]) mkdirSync(d);
  for (const b of ['trellis', 'portmap', 'loopback'])
    writeFileSync(join(binDir, b), `#!/bin/sh\n${reply}\n`, { mode: 0o755 });
  const config = {
    cniBinDir: binDir,
    cniConfDir: confDir,
    hostProc: '',
    socket: join(dir, 'cni.sock'),
    spoolDir: join(dir, 'spool'),
    stateDir: join(dir, 'state'),
  } as AgentConfig;
  return { dir, binDir, confDir, config };
}

describe('CniConfigPublisher.keep (the published list removed under the agent)', () => {
  let dir: string;
  let binDir: string;
  let confDir: string;
  let publisher: CniConfigPublisher;
  const conflist = (): string => join(confDir, '10-trellis.conflist');
  const plugin = (name: string, body: string): void =>
    writeFileSync(join(binDir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });

  beforeEach(() => {
    let config: AgentConfig;
    ({ dir, binDir, confDir, config } = nodeDirs(VERSION_REPLY));
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

describe('CniConfigPublisher: plugins other tools chained into the list', () => {
  let dir: string;
  let confDir: string;
  let config: AgentConfig;
  const conflist = (): string => join(confDir, '10-trellis.conflist');
  const read = (): { cniVersions: string[]; plugins: { type: string; mtu?: number }[] } =>
    JSON.parse(readFileSync(conflist(), 'utf8'));
  const istio = { type: 'istio-cni', log_level: 'info' };

  beforeEach(() => {
    // Every binary speaks 1.1.0: trellis's own list offers it.
    ({ dir, confDir, config } = nodeDirs(
      `echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'`,
    ));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** What a mesh's installer does: read the list, append its plugin, write it back in its own layout. */
  const chainIstio = (): void => {
    const list = read();
    list.plugins.push(istio);
    writeFileSync(conflist(), JSON.stringify(list, null, 4));
  };

  it('a rewrite keeps them (its own fields new), and a list that says the same is not rewritten', async () => {
    const publisher = new CniConfigPublisher(config, pino({ level: 'silent' }));
    expect(await publisher.publish(1450)).toBeUndefined();
    expect(read().cniVersions).toEqual(['1.0.0', '1.1.0']);
    chainIstio();
    expect(await publisher.publish(1450)).toBeUndefined();
    expect(read().cniVersions).toEqual(['1.0.0']); // their versions unknown: 1.0.0 only
    // Written again in their layout, saying the same: not answered with a rewrite.
    writeFileSync(conflist(), JSON.stringify(read(), null, 4));
    const theirs = readFileSync(conflist(), 'utf8');
    expect(await publisher.publish(1450)).toBeUndefined();
    expect(readFileSync(conflist(), 'utf8')).toBe(theirs);
    expect(await publisher.publish(1400)).toBeUndefined(); // an MTU change rewrites it
    const list = read();
    expect(list.plugins.map((p) => p.type)).toEqual(['trellis', 'portmap', 'istio-cni']);
    expect(list.plugins[0]?.mtu).toBe(1400);
    expect(list.plugins[2]).toEqual(istio);
    expect(list.cniVersions).toEqual(['1.0.0']);
  });

  it("the list removed under the agent comes back as trellis's own (their binaries may be gone with it)", async () => {
    const publisher = new CniConfigPublisher(config, pino({ level: 'silent' }));
    expect(await publisher.publish(1450)).toBeUndefined();
    chainIstio();
    expect(await publisher.publish(1450)).toBeUndefined();
    rmSync(conflist());
    expect(await publisher.keep()).toBe('written');
    expect(read().plugins.map((p) => p.type)).toEqual(['trellis', 'portmap']);
  });

  it("a previous boot's list withdrawn at start: the first publish puts their plugins back, also after a crash in between", async () => {
    const first = new CniConfigPublisher(config, pino({ level: 'silent' }));
    expect(await first.publish(1450)).toBeUndefined();
    chainIstio();
    // The node reboots: no ready marker, the list is withdrawn until the new agent is ready; that
    // agent dies before it publishes (its publisher never runs), and the next one starts.
    await withdrawPreviousBootConflist(confDir, config.socket, pino({ level: 'silent' }), config.stateDir);
    expect(existsSync(conflist())).toBe(false);
    await withdrawPreviousBootConflist(confDir, config.socket, pino({ level: 'silent' }), config.stateDir);
    const next = new CniConfigPublisher(config, pino({ level: 'silent' }));
    expect(await next.publish(1450)).toBeUndefined();
    expect(read().plugins.map((p) => p.type)).toEqual(['trellis', 'portmap', 'istio-cni']);
    // Back in place: what the state directory kept for it is gone, and a list removed later comes
    // back as trellis's own.
    expect(existsSync(join(config.stateDir, 'withdrawn-chained-plugins.json'))).toBe(false);
    rmSync(conflist());
    expect(await new CniConfigPublisher(config, pino({ level: 'silent' })).publish(1450)).toBeUndefined();
    expect(read().plugins.map((p) => p.type)).toEqual(['trellis', 'portmap']);
  });
});
