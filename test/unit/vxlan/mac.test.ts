import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { annotationPatch } from '../../../pkg/k8s/annotation-patch.ts';
import { vtepAnnotations, vtepMacsFromAnnotations } from '../../../pkg/vxlan/annotations.ts';
import { VTEP_MAC_ANNOTATIONS } from '../../../pkg/vxlan/constants.ts';
import { parseVtepMac, vtepMac } from '../../../pkg/vxlan/mac.ts';

describe('vtepMac', () => {
  it('is deterministic, per node and family, locally administered unicast (property)', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 63 }),
        fc.constantFrom(4 as const, 6 as const),
        (name, family) => {
          const mac = vtepMac(name, family);
          expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
          expect(vtepMac(name, family)).toBe(mac);
          const first = Number.parseInt(mac.slice(0, 2), 16);
          expect(first & 0x02).toBe(0x02); // locally administered
          expect(first & 0x01).toBe(0); // unicast
          expect(parseVtepMac(mac)).toBe(mac);
          expect(vtepMac(name, family === 4 ? 6 : 4)).not.toBe(mac);
        },
      ),
    );
  });

  it('differs between nodes (no collision over 10,000 names) and is pinned for a known name', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) seen.add(vtepMac(`node-${i}`, 4));
    expect(seen.size).toBe(10_000);
    // Pinned: changing the derivation would change every node's MAC on upgrade and break peers' entries.
    expect(vtepMac('node-1', 4)).toBe('f6:24:a0:28:cc:28');
  });
});

describe('parseVtepMac', () => {
  it('accepts unicast MACs (normalised to lower case), rejects the rest', () => {
    expect(parseVtepMac('0A:1b:2C:3d:4E:5f')).toBe('0a:1b:2c:3d:4e:5f');
    for (const bad of [
      '',
      '00:00:00:00:00:00',
      'ff:ff:ff:ff:ff:ff',
      '01:00:5e:00:00:01',
      '0a:1b:2c:3d:4e',
      '0a-1b-2c-3d-4e-5f',
      'zz:00:00:00:00:00',
    ]) {
      expect(parseVtepMac(bad), bad).toBeUndefined();
    }
  });
});

describe('VTEP annotations', () => {
  const v4 = VTEP_MAC_ANNOTATIONS[4];
  const v6 = VTEP_MAC_ANNOTATIONS[6];
  it('reads MACs per family, canonical, and passes a malformed one on as written (for the planner to report)', () => {
    expect(vtepMacsFromAnnotations({ [v4]: '0A:00:00:00:00:01', [v6]: 'nope', other: 'x' })).toEqual({
      4: '0a:00:00:00:00:01',
      6: 'nope',
    });
    expect(vtepMacsFromAnnotations(undefined)).toEqual({});
  });

  it('patches only what differs, removes the annotation of a family without a device, else nothing', () => {
    const mac4 = vtepMac('n', 4);
    const mac6 = vtepMac('n', 6);
    const patch = (current: Record<string, string> | undefined, macs: { 4?: string; 6?: string }) =>
      annotationPatch(current, vtepAnnotations(macs));
    expect(patch({}, { 4: mac4, 6: mac6 })).toEqual({ [v4]: mac4, [v6]: mac6 });
    expect(patch({ [v4]: mac4, [v6]: mac6, other: 'x' }, { 4: mac4, 6: mac6 })).toBeUndefined();
    expect(patch({ [v4]: mac4, [v6]: mac6 }, { 4: mac4 })).toEqual({ [v6]: null });
    expect(patch({ [v4]: 'stale' }, {})).toEqual({ [v4]: null });
    expect(patch(undefined, {})).toBeUndefined();
  });
});
