import type { Family } from '../../../pkg/datapath/ports.ts';
import type { Testbed, TestbedNode } from '../../support/testbed/index.ts';
import { podCIDROf } from '../../support/testbed/plan.ts';
import { within } from '../faults/support.ts';

/** The device of a VXLAN path in each family. */
export const throughTunnel = (family: Family): string => `trellis.v${family}`;
/** The device of a direct path on the test bed's segments. */
export const direct = (): string => 'eth0';

/**
 * Waits until each node of the pair routes the other's pod CIDR of every family through the device
 * `dev` names for that family, read from the kernel: both directions must take the same kind of path.
 */
export async function untilPairRoutes(
  tb: Testbed,
  pair: readonly [TestbedNode, TestbedNode],
  dev: (family: Family) => string,
  timeoutMs = 10_000,
): Promise<void> {
  for (const [from, to] of [pair, [pair[1], pair[0]]] as const) {
    for (const family of to.plan.families) {
      const cidr = podCIDROf(to.plan, family);
      await within(
        timeoutMs,
        `${from.name} -> ${to.name}'s IPv${family} pods through ${dev(family)}`,
        () => tb.routes(from.name, family).find((r) => r.dst === cidr)?.dev === dev(family),
      );
    }
  }
}
