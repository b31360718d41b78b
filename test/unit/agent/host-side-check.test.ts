import { describe, expect, it } from 'vitest';
import { stillLeased } from '../../../pkg/agent/host-side-check.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';

const lease: Lease = {
  containerId: 'aaa',
  ifname: 'eth0',
  addresses: [{ family: 4, address: '10.244.1.2', range: '10.244.1.0/24' }],
  createdAt: '2026-12-02T00:00:00.000Z',
};

describe('stillLeased', () => {
  it('is the same lease only with the same creation and addresses', () => {
    expect(stillLeased({ ...lease, podName: 'filled in later' }, lease)).toBe(true);
    expect(stillLeased(undefined, lease)).toBe(false);
    expect(stillLeased({ ...lease, createdAt: '2026-12-02T00:00:01.000Z' }, lease)).toBe(false);
    expect(
      stillLeased(
        { ...lease, addresses: [{ family: 4, address: '10.244.1.3', range: '10.244.1.0/24' }] },
        lease,
      ),
    ).toBe(false);
  });
});
