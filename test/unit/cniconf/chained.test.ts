import { describe, expect, it } from 'vitest';
import { chainedParts, chainedTypes, withChained } from '../../../pkg/cniconf/chained.ts';
import { buildConflist } from '../../../pkg/cniconf/render.ts';

const ours = buildConflist({
  socket: '/run/trellis/cni.sock',
  spoolDir: '/var/lib/trellis/spool',
  mtu: 1450,
  cniVersions: ['1.0.0', '1.1.0'],
});
const istio = { type: 'istio-cni', kubernetes: { kubeconfig: '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig' } };

describe('chainedParts: what other tools put into our list', () => {
  it('keeps their plugins on the side of trellis they were on, and their top-level fields', () => {
    const found = {
      ...ours,
      disableCheck: true,
      plugins: [{ type: 'tuning', sysctl: {} }, ...ours.plugins, istio],
    };
    const parts = chainedParts(found, ours.name);
    expect(parts).toEqual({
      before: [{ type: 'tuning', sysctl: {} }],
      after: [istio],
      fields: { disableCheck: true },
    });
    expect(chainedTypes(parts)).toEqual(['tuning', 'istio-cni']);
  });

  it("trellis's own entries (trellis, portmap) are not theirs, whatever they now say", () => {
    const found = {
      ...ours,
      plugins: [
        { type: 'trellis', mtu: 9000 },
        { type: 'portmap', snat: false },
      ],
    };
    expect(chainedParts(found, ours.name)).toBeUndefined();
  });

  it('nothing of theirs in another network, a list without trellis, or what is not a list', () => {
    expect(
      chainedParts({ ...ours, name: 'kindnet', plugins: [...ours.plugins, istio] }, ours.name),
    ).toBeUndefined();
    expect(chainedParts({ ...ours, plugins: [{ type: 'bridge' }, istio] }, ours.name)).toBeUndefined();
    for (const found of [
      undefined,
      null,
      'text',
      [],
      { name: ours.name },
      { name: ours.name, plugins: {} },
    ]) {
      expect(chainedParts(found, ours.name)).toBeUndefined();
    }
  });

  it('entries the runtime would fail every pod on (not an object, no type) are dropped', () => {
    const found = { ...ours, plugins: [...ours.plugins, 7, null, { type: '' }, { mtu: 1 }, istio] };
    expect(chainedParts(found, ours.name)?.after).toEqual([istio]);
  });
});

describe('withChained', () => {
  it('puts them back around our plugins and offers CNI 1.0.0 only while a plugin is chained', () => {
    const list = withChained(ours, { before: [], after: [istio], fields: {} });
    expect(list.plugins.map((p) => p.type)).toEqual(['trellis', 'portmap', 'istio-cni']);
    expect([list.cniVersion, list.cniVersions]).toEqual(['1.0.0', ['1.0.0']]);
    expect(Object.keys(list)).toEqual(['cniVersion', 'cniVersions', 'name', 'plugins']);
  });

  it('other fields alone keep our versions; nothing of theirs leaves our list as it is', () => {
    const list = withChained(ours, { before: [], after: [], fields: { disableGC: true } });
    expect(list).toEqual({ ...ours, disableGC: true });
    expect(withChained(ours, undefined)).toBe(ours);
  });
});
