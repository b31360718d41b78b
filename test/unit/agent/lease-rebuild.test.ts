import { describe, expect, it } from 'vitest';
import {
  decideRebuild,
  type HeldObservation,
  netnsFromRecord,
  podForAddresses,
} from '../../../pkg/agent/lease-rebuild.ts';

const key = { containerId: 'abc', ifname: 'eth0' };
const seen = (routes: HeldObservation['routes'], extra: Partial<HeldObservation> = {}): HeldObservation => ({
  key,
  hostVeth: 'trl0123456789ab',
  link: { index: 7, mtu: 1500 },
  routes,
  ...extra,
});

describe('decideRebuild', () => {
  it('takes the pod addresses from the /32 and /128 host routes, IPv4 first, canonical', () => {
    expect(
      decideRebuild(
        seen([
          { family: 6, dst: 'FD00:10:244:7::0005/128' },
          { family: 4, dst: '10.244.7.3/32' },
        ]),
      ),
    ).toEqual({ kind: 'restore', key, addresses: ['10.244.7.3', 'fd00:10:244:7::5'] });
    expect(decideRebuild(seen([{ family: 4, dst: '10.244.7.3/32' }]))).toEqual({
      kind: 'restore',
      key,
      addresses: ['10.244.7.3'],
    });
  });

  it('carries a verified namespace path', () => {
    expect(decideRebuild(seen([{ family: 4, dst: '10.244.7.3/32' }], { netns: '/run/netns/p1' }))).toEqual({
      kind: 'restore',
      key,
      addresses: ['10.244.7.3'],
      netns: '/run/netns/p1',
    });
  });

  it('ignores routes that are not pod host routes, and says why when nothing is left', () => {
    const d = decideRebuild(
      seen([
        { family: 4, dst: '10.244.7.0/24' },
        { family: 6, dst: '::/0' },
        { family: 4, dst: 'garbage/32' },
      ]),
    );
    expect(d).toEqual({ kind: 'skip', key, reason: 'no trellis host routes via trl0123456789ab' });
  });

  it('releases when the veth is gone (no pod can hold the addresses), refuses when a family is ambiguous', () => {
    expect(decideRebuild(seen([], { link: undefined }))).toMatchObject({
      kind: 'release',
      reason: expect.stringMatching(/host veth trl0123456789ab does not exist/),
    });
    expect(
      decideRebuild(
        seen([
          { family: 4, dst: '10.244.7.3/32' },
          { family: 4, dst: '10.244.7.4/32' },
          { family: 6, dst: 'fd00::5/128' },
        ]),
      ),
    ).toMatchObject({ kind: 'skip', reason: expect.stringMatching(/2 IPv4 pod routes .*ambiguous/) });
    // The same route twice (e.g. listed from two tables' views) is one address.
    expect(
      decideRebuild(
        seen([
          { family: 4, dst: '10.244.7.3/32' },
          { family: 4, dst: '10.244.7.3/32' },
        ]),
      ),
    ).toMatchObject({ kind: 'restore', addresses: ['10.244.7.3'] });
  });
});

describe('netnsFromRecord', () => {
  it('finds a plain path under /run/netns or /var/run/netns in torn JSON', () => {
    expect(
      netnsFromRecord('{"version":1,"containerId":"abc","netns":"/var/run/netns/cni-1234-ab'),
    ).toBeUndefined();
    expect(netnsFromRecord('{"version":1,"netns": "/var/run/netns/cni-1234-ab","podNa')).toBe(
      '/var/run/netns/cni-1234-ab',
    );
    expect(netnsFromRecord('{"netns":"/run/netns/trl-p1_2.x"}')).toBe('/run/netns/trl-p1_2.x');
  });

  it('rejects anything else: other directories, climbing out, nesting, escapes, nothing', () => {
    for (const bad of [
      '{"netns":"/proc/1/ns/net"}',
      '{"netns":"/var/run/netns/../../etc/passwd"}',
      '{"netns":"/run/netns/a/b"}',
      '{"netns":"/run/netns/"}',
      '{"netns":"/run/netns/.."}',
      '{"netns":"/run/netns//x"}',
      '{"netns":"run/netns/x"}',
      '{"netns":"/run/netns/x\\u0000"}',
      '{"netns":"/run/netns/x y"}',
      '{"containerId":"tor',
      '',
    ]) {
      expect(netnsFromRecord(bad), bad).toBeUndefined();
    }
  });
});

describe('podForAddresses', () => {
  const pod = (name: string, podIPs: string[], phase = 'Running') => ({
    namespace: 'ns',
    name,
    uid: `u-${name}`,
    phase,
    podIPs,
  });

  it('names the one running pod that has one of the addresses (canonical comparison)', () => {
    const pods = [pod('a', ['10.244.7.2']), pod('b', ['10.244.7.3', 'FD00::0005'])];
    expect(podForAddresses(pods, ['10.244.7.3', 'fd00::5'])?.name).toBe('b');
    expect(podForAddresses(pods, ['fd00::5'])?.name).toBe('b');
  });

  it('names none when no pod, only a finished pod, or several pods claim them', () => {
    expect(podForAddresses([pod('a', ['10.244.7.2'])], ['10.244.7.3'])).toBeUndefined();
    expect(podForAddresses([pod('done', ['10.244.7.3'], 'Succeeded')], ['10.244.7.3'])).toBeUndefined();
    expect(
      podForAddresses([pod('x', ['10.244.7.3']), pod('y', ['10.244.7.3'])], ['10.244.7.3']),
    ).toBeUndefined();
    expect(podForAddresses([pod('bad', ['not-an-ip'])], ['10.244.7.3'])).toBeUndefined();
  });
});
