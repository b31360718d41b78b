import { describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import {
  checkVersion,
  checkVersionAllows,
  compareVersions,
  isSupportedVersion,
  LATEST_VERSION,
  parseVersion,
  SUPPORTED_VERSIONS,
  selectConfigVersion,
  versionAtLeast,
  versionReply,
} from '../../../pkg/cni/version.ts';
import { thrown } from './thrown.ts';

describe('versions', () => {
  it('supports exactly 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0', () => {
    expect(SUPPORTED_VERSIONS).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    expect(LATEST_VERSION).toBe('1.1.0');
  });

  it('parses x, x.y and x.y.z like Go ParseVersion', () => {
    expect(parseVersion('1.1.0')).toEqual({ major: 1, minor: 1, patch: 0 });
    expect(parseVersion('0.4')).toEqual({ major: 0, minor: 4, patch: 0 });
    expect(parseVersion('2')).toEqual({ major: 2, minor: 0, patch: 0 });
    for (const bad of ['', 'v1.0.0', '1.0.0.0', '1..0', '01.0.0', '1.0.0-rc1', ' 1.0.0', 'x']) {
      expect(thrown(() => parseVersion(bad)).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    }
  });

  it('compares numerically, not lexically', () => {
    expect(compareVersions('0.10.0', '0.4.0')).toBeGreaterThan(0);
    expect(compareVersions('1.0.0', '1.0')).toBe(0);
    expect(compareVersions('0.3.1', '1.0.0')).toBeLessThan(0);
    expect(versionAtLeast('1.1.0', '1.1.0')).toBe(true);
    expect(versionAtLeast('1.0.0', '1.1.0')).toBe(false);
  });

  it('matches supported versions exactly, as libcni reconciles', () => {
    expect(isSupportedVersion('1.0.0')).toBe(true);
    expect(isSupportedVersion('1.0')).toBe(false);
    expect(isSupportedVersion('0.2.0')).toBe(false);
  });

  it('checkVersion names the version and the supported list (code 1)', () => {
    expect(checkVersion('0.4.0')).toBe('0.4.0');
    const err = thrown(() => checkVersion('0.2.0'));
    expect(err.code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(err.message).toBe(
      'incompatible CNI versions: config is "0.2.0", plugin supports ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]',
    );
  });

  it('refuses CHECK before 0.4.0 and GC/STATUS before 1.1.0, as the skel does', () => {
    expect(() => checkVersionAllows('0.4.0', 'CHECK')).not.toThrow();
    expect(thrown(() => checkVersionAllows('0.3.1', 'CHECK')).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(() => checkVersionAllows('1.1.0', 'GC')).not.toThrow();
    expect(thrown(() => checkVersionAllows('1.0.0', 'GC')).message).toContain('does not allow GC');
    expect(thrown(() => checkVersionAllows('1.0.0', 'STATUS')).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(() => checkVersionAllows('0.3.0', 'ADD')).not.toThrow();
    expect(() => checkVersionAllows('0.3.0', 'constructor')).not.toThrow();
  });
});

describe('versionReply', () => {
  it('has the shape of the spec example and echoes the input version', () => {
    expect(versionReply('1.0.0')).toEqual({
      cniVersion: '1.0.0',
      supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
    });
  });

  it('answers with the latest version when the input has none or junk', () => {
    expect(versionReply().cniVersion).toBe('1.1.0');
    expect(versionReply('banana').cniVersion).toBe('1.1.0');
  });

  it('returns a fresh list each time', () => {
    const a = versionReply();
    a.supportedVersions.push('9.9.9');
    expect(versionReply().supportedVersions).toHaveLength(5);
  });
});

describe('selectConfigVersion (1.1 cniVersions)', () => {
  it('picks the highest supported version from cniVersion and cniVersions', () => {
    expect(selectConfigVersion({ cniVersion: '1.0.0', cniVersions: ['1.0.0', '1.1.0'] })).toBe('1.1.0');
    expect(selectConfigVersion({ cniVersions: ['0.3.1', '0.4.0', '1.0.0', '1.1.0'] })).toBe('1.1.0');
  });

  it('skips versions newer than what is supported', () => {
    expect(selectConfigVersion({ cniVersion: '1.0.0', cniVersions: ['1.0.0', '1.1.0', '2.0.0'] })).toBe(
      '1.1.0',
    );
    expect(selectConfigVersion({ cniVersions: ['1.0.0', '1.1.0'] }, ['0.4.0', '1.0.0'])).toBe('1.0.0');
  });

  it('uses cniVersion alone when there is no list', () => {
    expect(selectConfigVersion({ cniVersion: '0.4.0' })).toBe('0.4.0');
  });

  it('fails with code 1 when nothing is supported, and code 7 for non-version entries', () => {
    expect(thrown(() => selectConfigVersion({ cniVersions: ['0.1.0', '2.0.0'] })).code).toBe(
      CniCode.INCOMPATIBLE_VERSION,
    );
    expect(thrown(() => selectConfigVersion({})).code).toBe(CniCode.INCOMPATIBLE_VERSION);
    expect(thrown(() => selectConfigVersion({ cniVersions: ['1.0.0', 1] })).code).toBe(
      CniCode.INVALID_CONFIG,
    );
    expect(thrown(() => selectConfigVersion({ cniVersions: '1.0.0' })).code).toBe(CniCode.INVALID_CONFIG);
    expect(thrown(() => selectConfigVersion({ cniVersions: ['one'] })).code).toBe(CniCode.INVALID_CONFIG);
  });
});
