import { describe, expect, it } from 'vitest';
import { needsTable, tableRules } from '../../../pkg/agent/table-rules.ts';

describe('tableRules', () => {
  it('clamps into both VXLAN devices in every mode that may tunnel, in Kubernetes mode', () => {
    for (const mode of ['auto', 'vxlan'] as const) {
      expect(tableRules({ mode, masquerade: true }, false)).toEqual({
        masquerade: true,
        clampMssInto: ['trellis.v4', 'trellis.v6'],
      });
    }
    expect(tableRules({ mode: 'host-gw', masquerade: true }, false).clampMssInto).toEqual([]);
    // Standalone: no peers, no VXLAN device.
    expect(tableRules({ mode: 'auto', masquerade: true }, true).clampMssInto).toEqual([]);
  });

  it('needs a table for masquerade or for the clamp, and none for host-gw without masquerade', () => {
    expect(needsTable(tableRules({ mode: 'auto', masquerade: false }, false))).toBe(true);
    expect(needsTable(tableRules({ mode: 'host-gw', masquerade: true }, false))).toBe(true);
    expect(needsTable(tableRules({ mode: 'host-gw', masquerade: false }, false))).toBe(false);
    expect(needsTable(tableRules({ mode: 'auto', masquerade: false }, true))).toBe(false);
  });
});
