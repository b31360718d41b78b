import { describe, expect, it } from 'vitest';
import { SysctlError } from '../../../pkg/netns/errors.ts';
import { sysctlPath } from '../../../pkg/netns/sysctl.ts';

describe('sysctlPath', () => {
  it('accepts a key naming any interface Linux accepts (ADD writes net/ipv6/conf/<ifname>/accept_dad)', () => {
    for (const ifname of ['eth0', '_x', 'e@1', 'a+b', 'x.json', '...', 'a$(id)`x`', 'é']) {
      const key = `net/ipv6/conf/${ifname}/accept_dad`;
      expect(sysctlPath(key)).toBe(`/proc/sys/${key}`);
    }
  });

  it('refuses a key that could leave /proc/sys or names no file there', () => {
    for (const bad of [
      '',
      '/etc/passwd',
      '../../etc/passwd',
      'net/../../x',
      'net/./ipv4',
      'net//ipv4',
      'net/ipv4/',
      'net/ipv4/conf/a b/x',
      'net/ipv4/conf/a\tb/x',
      'net/ipv4/conf/a\0b/x',
    ]) {
      expect(() => sysctlPath(bad), JSON.stringify(bad)).toThrow(SysctlError);
    }
  });
});
