/**
 * Kubernetes mode: a live pod's lease file corrupted while the agent is down is rebuilt once the
 * agent learns its pod CIDRs from the Node object, with the pod's name, namespace and UID from the
 * API (matched by its IPs) where its veth's alias does not give them (a pod set up by a release
 * before aliases, as here), so the API-driven lease GC, which runs right after ready, keeps it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { nsPing } from '../../support/netns.ts';
import { POD_NAMESPACE, Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { waitFor } from './support.ts';

const skip = testbedSkipReason();

describe.skipIf(skip !== undefined)(
  `lease rebuild in Kubernetes mode${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let tb: Testbed;
    beforeAll(async () => {
      tb = await Testbed.create({ segments: [{ nodes: 1 }] });
    }, 120_000);
    afterAll(async () => {
      if (tb === undefined) return;
      await tb.teardown();
      expect(tb.leftovers()).toEqual([]);
    }, 60_000);

    it('rebuilds the lease with the pod fields from the API; the lease GC keeps it; the pod keeps working', async () => {
      const [node] = tb.nodes();
      const name = node!.name;
      const pod = await tb.addPod(name);
      const leaseFile = join(node!.dir, 'state', 'ipam', 'leases', `${pod.containerId}@eth0.json`);

      await tb.killAgent(name);
      writeFileSync(leaseFile, 'garbage');
      execFileSync('ip', [
        '-n',
        node!.ns,
        'link',
        'set',
        'dev',
        hostVethName(pod.containerId, 'eth0'),
        'alias',
        '',
      ]);
      const from = node!.logs.length;
      const requestsFrom = (await tb.faults.requests()).length;
      await tb.startAgent(name);
      const logs = () => node!.logs.slice(from);

      expect(logs().find((l) => l.msg === 'quarantined lease rebuilt')).toMatchObject({
        containerId: pod.containerId.slice(0, 12),
        addresses: [pod.v4, pod.v6],
        netns: pod.netnsPath,
        pod: `${POD_NAMESPACE}/${pod.name}`,
        podFrom: 'the API',
        source: 'kernel',
      });
      const lease = JSON.parse(readFileSync(leaseFile, 'utf8')) as Record<string, unknown>;
      expect(lease).toMatchObject({ podNamespace: POD_NAMESPACE, podName: pod.name, podUid: pod.uid });
      // Which namespace the path named when the rebuild confirmed it, as ADD records it: the same one.
      expect(lease.netnsId).toMatch(/^[0-9a-f-]{36}\/\d+:\d+$/);
      const { ino, dev } = statSync(pod.netnsPath);
      expect(String(lease.netnsId).split('/')[1]).toBe(`${dev}:${ino}`);

      // The GC pass that follows readiness has run (it lists this node's pods, then decides and says
      // so at debug level) and kept the lease.
      const decided = (l: Record<string, unknown>) =>
        l.msg === 'IPAM garbage collection released nothing' ||
        l.msg === 'IPAM garbage collection released leases of pods gone from this node';
      expect(await waitFor(() => logs().some(decided), 10_000), 'the lease GC ran').toBe(true);
      expect(logs().find(decided)).toMatchObject({
        msg: 'IPAM garbage collection released nothing',
        leases: 1,
      });
      expect(
        (await tb.faults.requests())
          .slice(requestsFrom)
          .some((r) => r.remoteAddress === node!.plan.v4 && r.path === '/api/v1/pods' && !r.watch),
        'the lease GC listed the pods on the node',
      ).toBe(true);
      expect(JSON.parse(readFileSync(leaseFile, 'utf8'))).toMatchObject({ podName: pod.name });
      expect(nsPing(node!.ns, pod.v4)).toBe(true);

      await tb.removePod(pod);
      expect(
        await waitFor(() => {
          try {
            readFileSync(leaseFile);
            return false;
          } catch {
            return true;
          }
        }, 5000),
      ).toBe(true);
    }, 120_000);
  },
);
