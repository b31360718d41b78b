import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hostVethName, isHostVethName } from '../../../pkg/datapath/names.ts';
import { isPreparedName, PREPARED_PREFIX } from '../../../pkg/datapath/prepared-pairs.ts';

/**
 * A prepared pair's temporary host name and an attachment's host name never meet: GC and the lease
 * collector delete host veths without a lease by isHostVethName, which must never take a pair waiting
 * for its ADD; the start-up sweep deletes a previous run's prepared pairs by isPreparedName, which
 * must never take a pod's veth.
 */
describe('prepared pair names', () => {
  it('an attachment name is never a prepared one, and the other way round', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 1, maxLength: 15 }), (id, ifname) => {
        const name = hostVethName(id, ifname);
        expect(isHostVethName(name)).toBe(true);
        expect(isPreparedName(name)).toBe(false);
      }),
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9a-f]{11}$/), (hex) => {
        const name = `${PREPARED_PREFIX}${hex}`;
        expect(name).toHaveLength(15); // IFNAMSIZ - 1
        expect(isPreparedName(name)).toBe(true);
        expect(isHostVethName(name)).toBe(false);
      }),
    );
  });

  it('takes no other name', () => {
    for (const name of [
      'trlp',
      'trlp0123456789a0',
      'trlp0123456789A',
      'trl0123456789ab',
      'trlpzzzzzzzzzzz',
      'eth0',
    ]) {
      expect(isPreparedName(name), name).toBe(false);
    }
  });
});
