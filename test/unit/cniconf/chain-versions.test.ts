import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ChainVersionProbe, commonVersions, pluginVersions } from '../../../pkg/cniconf/index.ts';
import { SHIM_BINARY } from '../../support/cni-driver.ts';

const PORTMAP = '/usr/lib/cni/portmap';

describe('the versions a config list may advertise', () => {
  it('are the known versions every chained plugin supports', () => {
    expect(
      commonVersions([
        ['0.4.0', '1.0.0', '1.1.0'],
        ['1.0.0', '1.1.0'],
      ]),
    ).toEqual(['1.0.0', '1.1.0']);
    expect(
      commonVersions([
        ['0.4.0', '1.0.0', '1.1.0'],
        ['0.3.1', '1.0.0'],
      ]),
    ).toEqual(['1.0.0']);
    expect(commonVersions([['1.1.0'], []])).toEqual([]);
  });

  it.skipIf(!existsSync(PORTMAP))(
    "Debian's portmap answers VERSION without 1.1.0, so only 1.0.0 is advertised",
    async () => {
      const versions = await pluginVersions(PORTMAP);
      expect(versions).toContain('1.0.0');
      expect(versions).not.toContain('1.1.0');
      expect(await new ChainVersionProbe().versions([PORTMAP])).toEqual(['1.0.0']);
    },
  );

  it.skipIf(!existsSync(SHIM_BINARY))(
    'a chain of plugins that speak 1.1.0 (our shim) advertises it',
    async () => {
      expect(await new ChainVersionProbe().versions([SHIM_BINARY])).toEqual(['1.0.0', '1.1.0']);
    },
  );

  it('a plugin that cannot run counts as supporting nothing, and the list never goes empty', async () => {
    expect(await pluginVersions('/nonexistent/portmap')).toEqual([]);
    expect(await new ChainVersionProbe().versions(['/nonexistent/portmap'])).toEqual(['1.0.0']);
  });
});
