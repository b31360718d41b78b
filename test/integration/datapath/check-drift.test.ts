import { afterEach, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { convertResult } from '../../../pkg/cni/result.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { checkAttachment, expectedFromResult } from '../../../pkg/datapath/check.ts';
import { attachmentResult } from '../../../pkg/datapath/result.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

/**
 * CHECK against everything ADD made and listed, on an overlay node (route MTU below the interface
 * MTU): the routes to the node's own pod CIDRs, the default routes' MTU and the interface MTU, not
 * only the addresses and default routes (CNI: CHECK fails when a listed resource is missing or wrong).
 */
describe.skipIf(netnsSkipReason !== undefined)(
  'CHECK finds drift in routes and MTUs (root, real namespaces)',
  () => {
    const pool = new NetnsPool();
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0)) c();
      pool.cleanup();
    });

    const setUp = (): DatapathDeps =>
      inProcessDeps(pool.add('host'), ['10.244.1.0/24', 'fd00:10:244:1::/64'], cleanups, { echo: false });

    it('names a missing pod-CIDR route, a default route MTU and an interface MTU that changed', async () => {
      const deps = setUp();
      const pod = pool.add('pod');
      const req = { containerId: 'c1', ifname: 'eth0', netns: pod.path };
      const att = await addAttachment(deps, {
        ...req,
        mtu: 1500,
        routeMtu: 1450,
        nodeCidrs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
      });
      const result = attachmentResult(att);
      expect(result.routes).toEqual([
        { dst: '0.0.0.0/0', gw: '169.254.1.1', mtu: 1450 },
        { dst: '10.244.1.0/24', gw: '169.254.1.1' },
        { dst: '::/0', gw: 'fe80::1', mtu: 1450 },
        { dst: 'fd00:10:244:1::/64', gw: 'fe80::1' },
      ]);
      const check = (prev = result) => checkAttachment(deps, req, expectedFromResult(prev, 'eth0'));
      await check();

      ip(pod.name, '-4', 'route', 'del', '10.244.1.0/24');
      ip(pod.name, '-6', 'route', 'change', 'default', 'via', 'fe80::1', 'dev', 'eth0', 'mtu', '1400');
      ip(pod.name, 'link', 'set', 'dev', 'eth0', 'mtu', '1480');
      const drift = await check().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(drift).toBeInstanceOf(CniError);
      expect((drift as CniError).code).toBe(CniCode.CHECK_FAILED);
      const msg = (drift as CniError).message;
      expect(msg).toContain('route 10.244.1.0/24 via 169.254.1.1 dev eth0 is missing in the pod');
      expect(msg).toContain('route ::/0 via fe80::1 has MTU 1400, prevResult says 1450');
      expect(msg).toContain('interface eth0 has MTU 1480, prevResult says 1500');
      // What is still as ADD made it is not named.
      expect(msg).not.toContain('fd00:10:244:1::/64');
      expect(msg).not.toContain('0.0.0.0/0');

      // A 0.4.0 result has no interface MTU (Go's types040 has none): that one is not compared then.
      // Routes keep theirs at every version (Go shares one route type).
      const v04 = convertResult(result, '0.4.0');
      const drift04 = await check(v04).then(
        () => undefined,
        (e: unknown) => e,
      );
      const msg04 = (drift04 as CniError).message;
      expect(msg04).toContain('route 10.244.1.0/24 via 169.254.1.1 dev eth0 is missing in the pod');
      expect(msg04).toContain('route ::/0 via fe80::1 has MTU 1400, prevResult says 1450');
      expect(msg04).not.toContain('interface eth0 has MTU');
    });
  },
);
