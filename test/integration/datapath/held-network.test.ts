import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { addAttachment } from '../../../pkg/datapath/add.ts';
import { delAttachment } from '../../../pkg/datapath/del.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { ipJson, NetnsPool, netnsSkipReason } from '../../support/netns.ts';
import { inProcessDeps } from './in-process-deps.ts';

const RANGE = '10.244.1.0/24';

/**
 * An attachment whose lease record was torn (its addresses held, no lease) is still its network's:
 * the network is on its host veth's alias. Another network's ADD or DEL with the same container id
 * and ifname (Multus, a runtime cleaning up after a failed ADD) must leave it alone, as it leaves an
 * attachment with a lease alone: before, ADD restored the held addresses into a lease of its own
 * network and DEL freed them and deleted the veth of the running pod.
 */
describe.skipIf(netnsSkipReason !== undefined)(
  'a held attachment and another network (real namespaces)',
  () => {
    const pool = new NetnsPool();
    const closers: (() => void)[] = [];
    afterEach(() => {
      for (const c of closers.splice(0)) c();
      pool.cleanup();
    });

    it("another network's ADD and DEL leave it; its own DEL frees it", async () => {
      const host = pool.add('host');
      const first = inProcessDeps(host, [RANGE], closers, { echo: false });
      const pod = pool.add('pod', { loUp: false });
      const key = { containerId: 'c-two-nets', ifname: 'eth0' };
      await addAttachment(first, { ...key, netns: pod.path, mtu: 1500, network: 'net-a' });
      const dir = join(first.leaseDir, 'leases');
      for (const f of readdirSync(dir)) writeFileSync(join(dir, f), '{"containerId": "c-two');
      const ipam = openIpam({ dir: first.leaseDir, ranges: [RANGE] }); // the restarted agent's
      const deps = { ...first, ipam };
      expect(ipam.heldKeys()).toEqual([key]);
      const veth = hostVethName(key.containerId, key.ifname);
      const links = (): string[] =>
        ipJson<{ ifname: string }[]>(host.name, 'link', 'show').map((l) => l.ifname);
      const b = { network: 'net-b', unrecorded: 'trellis' };

      await expect(
        addAttachment(deps, {
          ...key,
          netns: pod.path,
          mtu: 1500,
          network: 'net-b',
          unrecordedNetwork: 'trellis',
        }),
      ).rejects.toMatchObject({ code: CniCode.INVALID_ENV, message: expect.stringContaining('"net-a"') });
      expect(ipam.get(key)).toBeUndefined(); // not restored as net-b's
      expect(await delAttachment(deps, key, { netns: pod.path, ...b })).toEqual({
        released: [],
        vethScheduled: false,
        otherNetwork: 'net-a',
      });
      expect(ipam.heldKeys()).toEqual([key]);
      expect(links()).toContain(veth);

      const own = await delAttachment(deps, key, {
        netns: pod.path,
        network: 'net-a',
        unrecorded: 'trellis',
      });
      expect(own).toMatchObject({
        vethScheduled: true,
        released: [expect.objectContaining({ range: RANGE })],
      });
      expect(ipam.heldKeys()).toEqual([]);
      await deps.deleter.drain();
      expect(links()).not.toContain(veth);
    });
  },
);
