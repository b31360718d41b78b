import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPreparedName } from '../../../pkg/datapath/prepared-pairs.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason, fakeCniBinDir } from '../../support/cni-driver.ts';
import { ipJson, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';
import { createPodPins, type PodPins } from '../../support/pod-pins.ts';

const skip = netnsSkipReason ?? builtSkipReason();

/** Another network's own config list (kindnet's or a runtime's default, left in the conf dir). */
const OTHER_NETWORK = JSON.stringify({
  cniVersion: '1.0.0',
  name: 'other',
  plugins: [{ type: 'ptp', ipam: { type: 'host-local' } }],
});

interface IpLink {
  ifname: string;
  ifindex: number;
}

/**
 * Another network's config sorting before trellis's (kindnet's or a runtime's default left behind):
 * the runtime gives new pods that network, so the agent makes no veth pairs in their namespaces as
 * they appear. Real agent publishing its config list, real pins, real namespaces.
 */
describe.skipIf(skip !== undefined)(
  `agent --netns-dir while another network's config sorts first${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const pool = new NetnsPool();
    const dir = mkdtempSync(join(tmpdir(), 'trl-shadow-'));
    const confDir = join(dir, 'net.d');
    const binDir = join(dir, 'bin');
    const other = join(confDir, '05-other.conflist');
    let pins: PodPins<'watched'>;
    let host: TestNetns;
    let agent: AgentProcess;
    const pinned: string[] = [];

    beforeAll(async () => {
      mkdirSync(confDir, { recursive: true });
      fakeCniBinDir(binDir);
      writeFileSync(other, OTHER_NETWORK);
      pins = createPodPins(['watched']);
      host = pool.add('psh-host');
      agent = startAgent({
        ns: host.name,
        podCIDRs: ['10.244.1.0/24'],
        publish: { confDir, binDir },
        extraArgs: ['--netns-dir', pins.dir('watched'), '--resync-seconds', '1'],
      });
      await agent.ready();
    });
    afterAll(async () => {
      try {
        await agent?.stop();
        for (const p of pinned) pins.unpin(p);
      } finally {
        pins?.teardown();
        pool.cleanup();
        if (agent !== undefined) removeAgentDir(agent.dir);
        rmSync(dir, { recursive: true, force: true });
      }
    });

    const prepared = (): IpLink[] =>
      ipJson<IpLink[]>(host.name, 'link', 'show').filter((l) => isPreparedName(l.ifname));
    const logged = (start: string): boolean => agent.logs.some((l) => String(l.msg).startsWith(start));
    async function until(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }

    it('makes no pair while the other config sorts first, and pairs again once it is gone', async () => {
      await until('the shadowing warning', () => logged('CNI config 05-other.conflist sorts before'));
      const shadowedPod = pool.add('psh-pod');
      pinned.push(pins.pin(`${pins.dir('watched')}/${shadowedPod.name}`, shadowedPod.path));
      // A pair is made within milliseconds of a pin (prepared-by-agent.test.ts); a second is ample.
      await new Promise((r) => setTimeout(r, 1000));
      expect(prepared()).toEqual([]);
      expect(ipJson<IpLink[]>(shadowedPod.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);

      unlinkSync(other);
      await until('trellis first again', () => logged('10-trellis.conflist is the first CNI config again'));
      const pod = pool.add('psh-pod');
      pinned.push(pins.pin(`${pins.dir('watched')}/${pod.name}`, pod.path));
      await until('the prepared pair', () => prepared().length === 1);
      const inPod = ipJson<IpLink[]>(pod.name, 'link', 'show').map((l) => l.ifname);
      expect(inPod).toContain(prepared()[0]!.ifname);
    });

    it("a meta-plugin's config (Multus) sorting first, which may hand pods on to trellis: pairs are still made; rewritten in place as a network's, they stop", async () => {
      const made = prepared().length;
      // A clusterNetwork the check cannot match to trellis (a NetworkAttachmentDefinition's name).
      writeFileSync(
        other,
        JSON.stringify({
          cniVersion: '1.0.0',
          name: 'multus-cni-network',
          plugins: [{ type: 'multus', clusterNetwork: 'trellis-default' }],
        }),
      );
      const mark = agent.logs.length;
      await until('the shadowing warning', () =>
        agent.logs
          .slice(mark)
          .some((l) => String(l.msg).startsWith('CNI config 05-other.conflist sorts before')),
      );
      const pod = pool.add('psh-pod');
      pinned.push(pins.pin(`${pins.dir('watched')}/${pod.name}`, pod.path));
      await until('the prepared pair', () => prepared().length === made + 1);
      // The same file rewritten in place as a network's own config: pairs stop (passes every second).
      writeFileSync(other, OTHER_NETWORK);
      const passes = () => agent.logs.filter((l) => l.msg === 'reconciled').length;
      const seen = passes();
      await until('two passes', () => passes() >= seen + 2);
      const later = pool.add('psh-pod');
      pinned.push(pins.pin(`${pins.dir('watched')}/${later.name}`, later.path));
      await new Promise((r) => setTimeout(r, 1000));
      expect(ipJson<IpLink[]>(later.name, 'link', 'show').map((l) => l.ifname)).toEqual(['lo']);
      unlinkSync(other);
    });
  },
);
