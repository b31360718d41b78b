import { describe, expect, it } from 'vitest';
import { parseCidr, specialRangeProblem } from '../../../pkg/ip/index.ts';
import { parseRange } from '../../../pkg/ipam/range.ts';

describe('specialRangeProblem: what no pod CIDR may overlap', () => {
  const problem = (text: string) => specialRangeProblem(parseCidr(text)!, text);

  it.each([
    ['0.0.0.0/0', '"this network" space (0.0.0.0/8)'],
    ['127.0.0.0/24', 'loopback space (127.0.0.0/8)'],
    ['169.254.0.0/24', 'link-local space (169.254.0.0/16)'],
    ['224.0.0.0/24', 'multicast space (224.0.0.0/4)'],
    ['255.255.255.0/24', 'broadcast space (255.255.255.255/32)'],
    ['::/0', 'unspecified and loopback space (::/127)'],
    ['::ffff:10.0.0.0/120', 'IPv4-mapped space (::ffff:0:0/96)'],
    ['fe80::/64', 'link-local space (fe80::/10)'],
    ['ff00::/64', 'multicast space (ff00::/8)'],
  ])('%s overlaps %s', (text, what) => {
    expect(problem(text)).toBe(`${text} overlaps ${what}: pods need unicast addresses a node can route`);
  });

  it.each([
    '10.244.0.0/16',
    '100.64.0.0/10',
    '240.0.0.0/12',
    '192.168.0.0/24',
    'fd00:10:244::/56',
    '2001:db8::/64',
    '64:ff9b::/96',
  ])('%s is a usable pod CIDR', (text) => {
    expect(problem(text)).toBeUndefined();
  });

  it('IPAM refuses such a range with INVALID_CONFIG naming it (standalone --pod-cidr, remembered node)', () => {
    expect(() => parseRange('0.0.0.0/0')).toThrow(/pod CIDR 0\.0\.0\.0\/0 overlaps "this network" space/);
    expect(parseRange('10.244.1.0/24').prefixLen).toBe(24);
  });
});
