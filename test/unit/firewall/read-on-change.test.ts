import { describe, expect, it } from 'vitest';
import type { ForwardRuleset, LegacyFamily, VxlanInKind } from '../../../pkg/firewall/index.ts';
import { readOnChange } from '../../../pkg/firewall/index.ts';

const KIND: VxlanInKind = { family: 4, port: 8472, sources: ['10.100.1.12'], devices: ['eth0'] };
const PODS = ['10.244.1.0/24'];

/** A host whose every committed transaction moves `generation` on; `reads` counts the rulesets read. */
function host() {
  const h = {
    generation: 1,
    legacy: [] as LegacyFamily[],
    reads: 0,
    /** A transaction committed while the ruleset is being read. */
    commitWhileReading: false,
    failGeneration: false,
    /** /proc/net's table list unreadable (EACCES). */
    failLegacyList: false,
  };
  const read = readOnChange({
    read: async (): Promise<ForwardRuleset> => {
      h.reads++;
      if (h.commitWhileReading) {
        h.commitWhileReading = false;
        h.generation++;
      }
      return { baseChains: [], rules: new Map() };
    },
    generation: async () => {
      if (h.failGeneration) throw new Error('EPERM');
      return h.generation;
    },
    legacyTables: () => {
      if (h.failLegacyList) throw new Error("EACCES: permission denied, open '/proc/net/ip_tables_names'");
      return h.legacy;
    },
  });
  return { h, read };
}

describe('readOnChange: the forward ruleset read again only when it may have changed', () => {
  it('answers from the last reading while the generation and the question stay the same', async () => {
    const { h, read } = host();
    const first = await read(PODS, [KIND]);
    expect(await read([...PODS], [{ ...KIND, sources: [...KIND.sources] }])).toBe(first);
    expect(h.reads).toBe(1);
    h.generation++; // any table's transaction
    await read(PODS, [KIND]);
    expect(h.reads).toBe(2);
    await read(PODS, [KIND]);
    expect(h.reads).toBe(2);
  });

  it('reads for other pod CIDRs or other VXLAN packets', async () => {
    const { h, read } = host();
    await read(PODS, [KIND]);
    await read(['10.244.2.0/24'], [KIND]);
    await read(['10.244.2.0/24'], [{ ...KIND, sources: ['10.100.1.13'] }]);
    await read(['10.244.2.0/24'], [{ ...KIND, sources: ['10.100.1.13'], devices: ['eth1'] }]);
    await read(['10.244.2.0/24'], []);
    expect(h.reads).toBe(5);
  });

  it('a transaction committed during a reading makes the next check read again', async () => {
    const { h, read } = host();
    h.commitWhileReading = true;
    await read(PODS, []);
    await read(PODS, []);
    expect(h.reads).toBe(2);
    await read(PODS, []);
    expect(h.reads).toBe(2);
  });

  it('always reads where a legacy filter table exists (its changes move no generation) or the generation fails', async () => {
    const { h, read } = host();
    h.legacy = ['iptables-legacy'];
    await read(PODS, []);
    await read(PODS, []);
    expect(h.reads).toBe(2);
    h.legacy = [];
    h.failGeneration = true;
    await read(PODS, []);
    await read(PODS, []);
    expect(h.reads).toBe(4);
    h.failGeneration = false;
    await read(PODS, []);
    await read(PODS, []);
    expect(h.reads).toBe(5);
  });

  it('reads every time while the legacy tables cannot be listed: the read itself says what it could not read', async () => {
    const { h, read } = host();
    h.failLegacyList = true;
    await read(PODS, [KIND]);
    await read(PODS, [KIND]);
    expect(h.reads).toBe(2);
    h.failLegacyList = false;
    await read(PODS, [KIND]);
    await read(PODS, [KIND]);
    expect(h.reads).toBe(3);
  });
});
