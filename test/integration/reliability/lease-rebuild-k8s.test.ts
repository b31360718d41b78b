/**
 * Kubernetes mode: a live pod's lease file corrupted while the agent is down is rebuilt once the
 * agent learns its pod CIDRs from the Node object, with the pod's name, namespace and UID from the
 * API (matched by its IPs), so the API-driven lease GC, which runs right after ready, keeps it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
      const from = node!.logs.length;
      const requestsFrom = (await tb.faults.requests()).length;
      await tb.startAgent(name);
      const logs = () => node!.logs.slice(from);

      expect(logs().find((l) => l.msg === 'quarantined lease rebuilt')).toMatchObject({
        containerId: pod.containerId.slice(0, 12),
        addresses: [pod.v4, pod.v6],
        netns: pod.netnsPath,
        pod: `${POD_NAMESPACE}/${pod.name}`,
        source: 'kernel',
      });
      const lease = JSON.parse(readFileSync(leaseFile, 'utf8')) as Record<string, unknown>;
      expect(lease).toMatchObject({ podNamespace: POD_NAMESPACE, podName: pod.name, podUid: pod.uid });

      // The GC pass that follows readiness has run: it lists this node's pods (a GC that releases
      // nothing logs nothing), then decides; the lease is still there.
      const agentAddr = node!.plan.v4;
      let listed = false;
      for (const deadline = Date.now() + 5000; !listed && Date.now() < deadline; ) {
        listed = (await tb.faults.requests())
          .slice(requestsFrom)
          .some((r) => r.remoteAddress === agentAddr && r.path === '/api/v1/pods' && !r.watch);
        if (!listed) await new Promise((r) => setTimeout(r, 50));
      }
      expect(listed, 'the lease GC listed the pods on the node').toBe(true);
      await new Promise((r) => setTimeout(r, 300)); // its decision follows the answer at once
      expect(
        logs().some((l) => l.msg === 'IPAM garbage collection released leases of pods gone from this node'),
      ).toBe(false);
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
