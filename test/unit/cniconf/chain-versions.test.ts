import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    `Debian's portmap answers VERSION without 1.1.0, so only 1.0.0 is advertised${existsSync(PORTMAP) ? '' : ` (skipped: no ${PORTMAP}; apt-get install containernetworking-plugins)`}`,
    async () => {
      const versions = await pluginVersions(PORTMAP);
      expect(versions).toContain('1.0.0');
      expect(versions).not.toContain('1.1.0');
      expect(await new ChainVersionProbe().versions([PORTMAP])).toEqual(['1.0.0']);
    },
  );

  it.skipIf(!existsSync(SHIM_BINARY))(
    `a chain of plugins that speak 1.1.0 (our shim) advertises it${existsSync(SHIM_BINARY) ? '' : ` (skipped: no ${SHIM_BINARY}; npm run build)`}`,
    async () => {
      expect(await new ChainVersionProbe().versions([SHIM_BINARY])).toEqual(['1.0.0', '1.1.0']);
    },
  );

  it('a plugin that cannot run counts as supporting nothing, and the list never goes empty', async () => {
    expect(await pluginVersions('/nonexistent/portmap')).toEqual([]);
    expect(await new ChainVersionProbe().versions(['/nonexistent/portmap'])).toEqual(['1.0.0']);
  });

  it('a plugin that exits without reading stdin (EPIPE on our write) neither crashes us nor loses its answer', async () => {
    // Before the fix, the EPIPE on the plugin's closed stdin was an uncaught 'error' event: the
    // agent died at start-up (seen in the fault suite's test bed). 1,000 quick probes reproduced it
    // every time here.
    const dir = mkdtempSync(join(tmpdir(), 'trl-chain-'));
    const plugin = join(dir, 'plug');
    writeFileSync(
      plugin,
      `#!/bin/sh\nexec 0<&-\necho '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'\n`,
    );
    chmodSync(plugin, 0o755);
    try {
      for (let round = 0; round < 20; round++) {
        const answers = await Promise.all(Array.from({ length: 50 }, () => pluginVersions(plugin)));
        for (const a of answers) expect(a).toEqual(['0.4.0', '1.0.0']);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
