import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ReadyMark } from '../../../pkg/agent/ready-mark.ts';
import { STATUS_GRACE_MS } from '../../../pkg/shim/ready-marker.ts';

/** The agent's side of the ready marker, on a real file. */
describe('ReadyMark', () => {
  let dir = '';
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });

  it('vouches for a previous agent’s fresh marker while this one has not been ready', () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-mark-'));
    const socket = join(dir, 'cni.sock');
    writeFileSync(`${socket}.ready`, '');
    expect(new ReadyMark(socket, log).vouches()).toBe(true);
    const old = new Date(Date.now() - STATUS_GRACE_MS - 1_000);
    utimesSync(`${socket}.ready`, old, old);
    expect(new ReadyMark(socket, log).vouches()).toBe(false);
  });

  it('never vouches once this agent was ready: one that stops being ready is not restarting', () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-mark-'));
    const mark = new ReadyMark(join(dir, 'cni.sock'), log);
    expect(mark.vouches()).toBe(false); // no marker at all
    mark.touch();
    expect(mark.vouches()).toBe(false);
    // A later agent on the same node reads it as a restart's.
    expect(new ReadyMark(join(dir, 'cni.sock'), log).vouches()).toBe(true);
  });
});
