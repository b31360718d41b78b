import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { isPreparedName } from '../../../pkg/datapath/prepared-pairs.ts';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { AGENT_BINARY, builtSkipReason } from '../../support/cni-driver.ts';
import { ipJson, netnsSkipReason, nsPing, type TestNetns } from '../../support/netns.ts';
import { createPodPins, type PodPins } from '../../support/pod-pins.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

const skip = netnsSkipReason ?? builtSkipReason();

interface IpLink {
  ifname: string;
  ifindex: number;
  ifalias?: string;
}

/**
 * The agent with --netns-dir, driven as containerd drives it: a pod's namespace is pinned in the
 * directory (a file, then the nsfs bind-mounted onto it), and the shim's ADD names that path. The
 * pins' root is a shared mount made before the agent starts, whose mount namespace receives them as
 * a DaemonSet's does through its HostToContainer /var/run/netns.
 */
describe.skipIf(skip !== undefined)(
  `agent --netns-dir: veth pairs made as pod namespaces appear${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness(['10.244.1.0/24']);
    let pins: PodPins<'watched' | 'elsewhere'>;
    beforeAll(async () => {
      pins = createPodPins(['watched', 'elsewhere']);
      await node.start(['--netns-dir', pins.dir('watched')]);
    });
    afterAll(async () => {
      try {
        await node.stop();
      } finally {
        pins?.teardown();
      }
    });

    const hostLinks = (): IpLink[] => ipJson<IpLink[]>(node.host.name, 'link', 'show');
    const podLinks = (pod: TestNetns): string[] =>
      ipJson<IpLink[]>(pod.name, 'link', 'show').map((l) => l.ifname);

    /** Polls until `pred` holds (the agent works after the pin, on its own time). */
    async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 3000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = probe();
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }

    /** `trellis-agent status --json` through the agent's admin socket, in the node's namespace. */
    const status = (): StatusView => {
      const r = spawnSync(
        'ip',
        ['netns', 'exec', node.host.name, AGENT_BINARY, 'status', '--socket', node.agent.socket, '--json'],
        { encoding: 'utf8', timeout: 30_000 },
      );
      return JSON.parse(r.stdout) as StatusView;
    };

    const preparedFor = (pod: TestNetns): IpLink | undefined => {
      const inPod = podLinks(pod);
      return hostLinks().find((l) => isPreparedName(l.ifname) && inPod.includes(l.ifname));
    };

    it('a namespace pinned in the directory gets its pair, which its ADD takes; one pinned elsewhere gets none', async () => {
      const [elsewhere, watched] = [node.podNs(), node.podNs()];
      pins.pin(`${pins.dir('elsewhere')}/${elsewhere.name}`, elsewhere.path);
      const path = pins.pin(`${pins.dir('watched')}/${watched.name}`, watched.path);
      const made = await until('the prepared pair', () => preparedFor(watched));
      // The directory's events come in order: the other pin was seen (and passed over) first.
      expect(hostLinks().filter((l) => isPreparedName(l.ifname))).toEqual([made]);
      expect(podLinks(elsewhere)).toEqual(['lo']);

      const id = containerId();
      const add = await node.call({ command: 'ADD', containerId: id, netns: path, ifname: 'eth0' });
      expect(add.code, add.stderr).toBe(0);
      const name = hostVethName(id, 'eth0');
      const taken = hostLinks().find((l) => l.ifname === name);
      expect(taken?.ifindex).toBe(made.ifindex);
      // Renamed and labelled in the same datagram: the alias says whose it is (veth-alias.ts).
      expect(taken?.ifalias).toBe(`trellis id=${id} if=eth0 net=trellis`);
      expect(podLinks(watched).sort()).toEqual(['eth0', 'lo']);
      expect(nsPing(node.host.name, podAddr(add.json as AddResult, 4))).toBe(true);
      const line = await node.logLine((l) => l.msg === 'CNI ADD ok' && l.hostIf === name);
      expect(line).toMatchObject({ preparedVeth: true, hostIf: name, netns: path });

      expect((await node.call({ command: 'DEL', containerId: id, netns: path, ifname: 'eth0' })).code).toBe(
        0,
      );
      pins.unpin(path);
      pins.unpin(`${pins.dir('elsewhere')}/${elsewhere.name}`);
      expect(await node.waitForVeths(0)).toEqual([]);
    });

    it('a pair whose namespace file goes before any ADD is deleted; status counts it while it waits', async () => {
      const pod = node.podNs();
      const path = pins.pin(`${pins.dir('watched')}/${pod.name}`, pod.path);
      const made = await until('the prepared pair', () => preparedFor(pod));
      expect(status().preparedPairs).toEqual({ dir: pins.dir('watched'), watching: true, waiting: 1 });
      // As containerd removes a pod's namespace: a lazy unmount, then the file.
      pins.unpin(path);
      await until('the pair deleted', () =>
        hostLinks().some((l) => l.ifindex === made.ifindex) ? undefined : true,
      );
      expect(podLinks(pod)).toEqual(['lo']);
      const line = await node.logLine(
        (l) => l.msg === 'prepared veth pair deleted' && l.link === made.ifname,
      );
      expect(line).toMatchObject({ outcome: 'gone', netns: path });
      expect(status().preparedPairs?.waiting).toBe(0);
    });

    it('SIGTERM deletes the waiting pairs; a pair a killed agent left is removed by the next start', async () => {
      const pods = [node.podNs(), node.podNs()];
      const paths: string[] = [];
      // One after the other: a namespace that appears while a pair is being made gets none.
      for (const [i, p] of pods.entries()) {
        paths.push(pins.pin(`${pins.dir('watched')}/${p.name}`, p.path));
        await until(`pair ${i}`, () => preparedFor(p));
      }
      await node.agent.stop();
      expect(hostLinks().filter((l) => isPreparedName(l.ifname))).toEqual([]);
      expect(pods.map(podLinks)).toEqual([['lo'], ['lo']]);

      await node.startAgain(['--netns-dir', pins.dir('watched')]);
      const pod = node.podNs();
      paths.push(pins.pin(`${pins.dir('watched')}/${pod.name}`, pod.path));
      const left = await until('the pair', () => preparedFor(pod));
      await node.agent.kill();
      expect(hostLinks().map((l) => l.ifname)).toContain(left.ifname);
      await node.startAgain();
      await until('the start-up sweep', () =>
        hostLinks().some((l) => isPreparedName(l.ifname)) ? undefined : true,
      );
      expect(podLinks(pod)).toEqual(['lo']);
      for (const p of paths) pins.unpin(p);
    });
  },
);
