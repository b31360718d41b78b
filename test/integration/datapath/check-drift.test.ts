import { afterEach, describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { convertResult } from '../../../pkg/cni/result.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { checkAttachment, expectedFromResult } from '../../../pkg/datapath/check.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { attachmentResult } from '../../../pkg/datapath/result.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { ip, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';
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
      // tuning's `mtu` sets the interface's MTU after trellis and passes the result on as it was: a
      // chain's own doing, not drift (ptp does not compare it either).
      ip(pod.name, 'link', 'set', 'dev', 'eth0', 'mtu', '1480');
      await check();

      ip(pod.name, '-4', 'route', 'del', '10.244.1.0/24');
      ip(pod.name, '-6', 'route', 'change', 'default', 'via', 'fe80::1', 'dev', 'eth0', 'mtu', '1400');
      const drift = await check().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(drift).toBeInstanceOf(CniError);
      expect((drift as CniError).code).toBe(CniCode.CHECK_FAILED);
      const msg = (drift as CniError).message;
      expect(msg).toContain('route 10.244.1.0/24 via 169.254.1.1 dev eth0 is missing in the pod');
      expect(msg).toContain('route ::/0 via fe80::1 has MTU 1400, prevResult says 1450');
      // What is still as ADD made it is not named.
      expect(msg).not.toContain('fd00:10:244:1::/64');
      expect(msg).not.toContain('0.0.0.0/0');

      // Routes keep their MTUs at every version (Go shares one route type), 0.4.0's too.
      const v04 = convertResult(result, '0.4.0');
      const drift04 = await check(v04).then(
        () => undefined,
        (e: unknown) => e,
      );
      const msg04 = (drift04 as CniError).message;
      expect(msg04).toContain('route 10.244.1.0/24 via 169.254.1.1 dev eth0 is missing in the pod');
      expect(msg04).toContain('route ::/0 via fe80::1 has MTU 1400, prevResult says 1450');
    });
  },
);

/**
 * One drift at a time, each made for real in the kernel (or the lease store) on an otherwise healthy
 * pod, in-process: no agent runs, so nothing repairs the drift before CHECK looks. Each CHECK must
 * fail with its code and name exactly that drift, and nothing else.
 */
describe.skipIf(netnsSkipReason !== undefined)(
  'CHECK names each kind of drift (root, real namespaces)',
  () => {
    const pool = new NetnsPool();
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0)) c();
      pool.cleanup();
    });

    interface Pod {
      deps: ReturnType<typeof inProcessDeps>;
      host: TestNetns;
      pod: TestNetns;
      req: { containerId: string; ifname: string; netns: string };
      hostEnd: string;
      v4: string;
      v6: string;
      podMac: string;
      check: () => Promise<void>;
    }

    /** A healthy dual-stack pod whose CHECK passes, on its own node namespace. */
    const healthyPod = async (): Promise<Pod> => {
      const host = pool.add('host');
      const deps = inProcessDeps(host, ['10.244.1.0/24', 'fd00:10:244:1::/64'], cleanups, { echo: false });
      const pod = pool.add('pod');
      const req = { containerId: 'c0ffee000000000000000001', ifname: 'eth0', netns: pod.path };
      const att = await addAttachment(deps, { ...req, mtu: 1500 });
      const result = attachmentResult(att);
      const v4 = att.addresses.find((a) => a.family === 4)!.address;
      const v6 = att.addresses.find((a) => a.family === 6)!.address;
      const check = () => checkAttachment(deps, req, expectedFromResult(result, 'eth0'));
      await check();
      const hostEnd = hostVethName(req.containerId, 'eth0');
      return { deps, host, pod, req, hostEnd, v4, v6, podMac: att.pod.mac, check };
    };

    /** CHECK's error, which must be a CniError. */
    const failure = async (p: Pod): Promise<CniError> => {
      const err = await p.check().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CniError);
      return err as CniError;
    };

    /** CHECK fails with 104 naming exactly `problems`, in order. */
    const expectDrift = async (p: Pod, ...problems: string[]) => {
      const err = await failure(p);
      expect(err.code).toBe(CniCode.CHECK_FAILED);
      expect(err.message).toBe(`CHECK c0ffee000000/eth0 found drift: ${problems.join('; ')}`);
    };

    it('a host route deleted by hand', async () => {
      const p = await healthyPod();
      ip(p.host.name, '-6', 'route', 'del', `${p.v6}/128`, 'dev', p.hostEnd);
      await expectDrift(p, `host route ${p.v6}/128 dev ${p.hostEnd} is missing`);
    });

    it("eth0's default route deleted while another interface holds one: still drift (prevResult lists trellis's own)", async () => {
      const p = await healthyPod();
      // Another plugin's interface in the pod with a default route of its own, at a higher metric.
      ip(p.pod.name, 'link', 'add', 'net1', 'type', 'veth', 'peer', 'name', 'net1peer');
      ip(p.pod.name, 'addr', 'add', '192.168.5.2/24', 'dev', 'net1');
      ip(p.pod.name, 'link', 'set', 'net1', 'up');
      ip(p.pod.name, '-4', 'route', 'add', 'default', 'via', '192.168.5.1', 'dev', 'net1', 'metric', '100');
      await p.check();
      ip(p.pod.name, '-4', 'route', 'del', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
      await expectDrift(p, 'default route 0.0.0.0/0 via 169.254.1.1 is missing in the pod (IPv4)');
    });

    it('a pod address deleted', async () => {
      const p = await healthyPod();
      ip(p.pod.name, 'addr', 'del', `${p.v4}/32`, 'dev', 'eth0');
      // The kernel takes the default route through the address's on-link gateway with it.
      await expectDrift(
        p,
        `address ${p.v4}/32 is missing on eth0`,
        'default route 0.0.0.0/0 via 169.254.1.1 is missing in the pod (IPv4)',
      );
    });

    it('the pod interface set down', async () => {
      const p = await healthyPod();
      ip(p.pod.name, 'link', 'set', 'eth0', 'down');
      // The kernel takes the pod's IPv6 address and the default routes with it: named too, not asserted.
      const err = await failure(p);
      expect(err.code).toBe(CniCode.CHECK_FAILED);
      expect(err.message).toContain(`interface eth0 in ${p.pod.path} is down`);
    });

    it('the host veth set down', async () => {
      const p = await healthyPod();
      ip(p.host.name, 'link', 'set', p.hostEnd, 'down');
      // The kernel takes the host routes and fe80::1 with it: named too, not asserted.
      const err = await failure(p);
      expect(err.code).toBe(CniCode.CHECK_FAILED);
      expect(err.message).toContain(`host veth ${p.hostEnd} is down`);
    });

    it('the host veth deleted (the pod end goes with it)', async () => {
      const p = await healthyPod();
      ip(p.host.name, 'link', 'del', p.hostEnd);
      await expectDrift(p, `host veth ${p.hostEnd} is missing`, `interface eth0 is missing in ${p.pod.path}`);
    });

    it('a pod MAC changed', async () => {
      const p = await healthyPod();
      ip(p.pod.name, 'link', 'set', 'eth0', 'address', '02:00:00:00:be:ef');
      expect(p.podMac).not.toBe('02:00:00:00:be:ef');
      await expectDrift(p, `interface eth0 has MAC 02:00:00:00:be:ef, prevResult says ${p.podMac}`);
    });

    it('the lease released', async () => {
      const p = await healthyPod();
      expect(p.deps.ipam.release(p.req)).toBe(true);
      const err = await failure(p);
      expect(err.code).toBe(CniCode.CHECK_FAILED);
      expect(err.message).toBe('CHECK c0ffee000000/eth0: trellis holds no address lease for this attachment');
    });

    it('the pod namespace deleted: code 102', async () => {
      const p = await healthyPod();
      ip(undefined, 'netns', 'del', p.pod.name);
      const err = await failure(p);
      expect(err.code).toBe(CniCode.NETNS_NOT_FOUND);
      expect(err.message).toBe(
        `CHECK c0ffee000000/eth0: network namespace ${p.pod.path} does not exist or is not a network namespace`,
      );
    });
  },
);
