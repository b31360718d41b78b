import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../../../pkg/agent/agent.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { delAttachment } from '../../../pkg/datapath/del.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { openHostNetlink, withNetns } from '../../../pkg/netns/index.ts';
import { type HttpListener, startAdminServer } from '../../../pkg/observe/http-server.ts';
import { runDoctor } from '../../../pkg/ops/doctor.ts';
import { gatherDoctorFacts } from '../../../pkg/ops/doctor-gather.ts';
import { leasesView, routesView, statusView } from '../../../pkg/ops/views.ts';
import { ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from '../datapath/in-process-deps.ts';

/**
 * The race behind doctor's orphan-veth check, on real namespaces: DEL releases the lease first and
 * leaves the pair to the BackgroundDeleter, whose deletion (15-33 ms in the kernel, longer under load)
 * is held here until doctor has looked. The admin socket serves the views the agent builds from what
 * it holds (its snapshot's vethsInFlight: the deleter's pending names); doctor gathers the links of the
 * namespace for real.
 */
describe.skipIf(netnsSkipReason !== undefined)(
  'doctor and a veth being deleted (root, real namespaces)',
  () => {
    const pool = new NetnsPool();
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0).reverse()) c();
      pool.cleanup();
    });

    it('a veth whose DEL answered (lease released) while the kernel has not deleted it yet is no orphan', async () => {
      const host = pool.add('host');
      const pod = pool.add('pod');
      const deps = inProcessDeps(host, ['10.244.1.0/24'], cleanups, { echo: true });
      // The kernel's deletion held until doctor has looked: as a slow one under load.
      let release!: () => void;
      const kernelBusy = new Promise<void>((r) => {
        release = r;
      });
      const deleteLink = deps.host.deleteLink.bind(deps.host);
      deps.host.deleteLink = async (index) => {
        await kernelBusy;
        return deleteLink(index);
      };
      const key = { containerId: 'c'.repeat(64), ifname: 'eth0' };
      await addAttachment(deps, { ...key, netns: pod.path, mtu: 1500 });
      const veth = hostVethName(key.containerId, key.ifname);

      const dir = mkdtempSync(join(tmpdir(), 'trl-doctor-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const snapshot = (): AgentSnapshot => ({
        node: 'n1',
        standalone: true,
        mode: 'host-gw',
        mtu: 1500,
        podCIDRs: ['10.244.1.0/24'],
        internalIPs: [],
        ready: true,
        notReadyReason: undefined,
        socket: join(dir, 'cni.sock'),
        stateDir: dir,
        cniConfDir: dir,
        cniBinDir: dir,
        leases: deps.ipam.list(),
        vethsInFlight: deps.deleter.pendingNames(),
        ipamUsage: [],
        watch: undefined,
        mssClamp: [],
        masquerade: { enabled: true, noMasqueradeCIDRs: [] },
      });
      const server: HttpListener = await startAdminServer(join(dir, 'admin.sock'), {
        '/status': () => statusView(snapshot(), '0.0.0', 'test'),
        '/routes': () =>
          routesView('n1', {
            synced: true,
            desired: [],
            programmed: [],
            problems: [],
            decisions: [],
            links: [],
          }),
        '/leases': () => leasesView(snapshot()),
      });
      cleanups.push(() => void server.close());
      const veths = async () => {
        const facts = await gatherDoctorFacts({
          adminSocket: join(dir, 'admin.sock'),
          cniConfDir: dir,
          cniBinDir: dir,
          stateDir: dir,
          conflistName: '10-trellis.conflist',
          openHost: () => withNetns(host.path, () => openHostNetlink()),
        });
        return runDoctor(facts).checks.find((c) => c.name === 'veths')!.findings;
      };
      expect(await veths()).toEqual([]); // leased

      const out = await delAttachment(deps, key);
      expect(out.vethScheduled).toBe(true);
      expect(deps.ipam.list()).toEqual([]); // DEL answered: the lease is gone...
      expect(ip(host.name, 'link', 'show')).toContain(veth); // ...and the veth still there
      expect(await veths()).toEqual([]);

      release();
      await deps.deleter.drain();
      expect(ip(host.name, 'link', 'show')).not.toContain(veth);
      expect(await veths()).toEqual([]);
    });
  },
);
