import { describe, expect, it } from 'vitest';
import { needsTable, tableRules } from '../../../pkg/agent/table-rules.ts';

describe('tableRules', () => {
  it('clamps into and masquerades the node into both VXLAN devices in every mode that may tunnel, in Kubernetes mode', () => {
    for (const mode of ['auto', 'vxlan'] as const) {
      expect(tableRules({ mode, masquerade: true }, false)).toEqual({
        masquerade: true,
        clampMssInto: ['trellis.v4', 'trellis.v6'],
        tunnels: ['trellis.v4', 'trellis.v6'],
        sourceCheck: true,
      });
    }
    expect(tableRules({ mode: 'host-gw', masquerade: true }, false).clampMssInto).toEqual([]);
    expect(tableRules({ mode: 'host-gw', masquerade: true }, false).tunnels).toEqual([]);
    // Standalone: no peers, no VXLAN device.
    expect(tableRules({ mode: 'auto', masquerade: true }, true).clampMssInto).toEqual([]);
    expect(tableRules({ mode: 'auto', masquerade: true }, true).tunnels).toEqual([]);
  });

  it('checks pod source addresses unless told not to (--no-source-check)', () => {
    expect(tableRules({ mode: 'host-gw', masquerade: false }, true).sourceCheck).toBe(true);
    expect(tableRules({ mode: 'host-gw', masquerade: false, sourceCheck: false }, true).sourceCheck).toBe(
      false,
    );
  });

  it('needs a table for masquerade, the clamp or the source check; none without all three', () => {
    expect(needsTable(tableRules({ mode: 'auto', masquerade: false, sourceCheck: false }, false))).toBe(true);
    expect(needsTable(tableRules({ mode: 'host-gw', masquerade: true, sourceCheck: false }, false))).toBe(
      true,
    );
    expect(needsTable(tableRules({ mode: 'host-gw', masquerade: false }, false))).toBe(true);
    expect(needsTable(tableRules({ mode: 'host-gw', masquerade: false, sourceCheck: false }, false))).toBe(
      false,
    );
    expect(needsTable(tableRules({ mode: 'auto', masquerade: false, sourceCheck: false }, true))).toBe(false);
  });
});
