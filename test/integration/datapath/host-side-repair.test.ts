import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, ipJson, netnsSkipReason, nsPing } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr } from './harness.ts';

/**
 * A running pod's host end loses what ADD gave it behind the agent's back: `ip route flush proto 126`
 * (an operator cleaning up after another network), a route deleted by hand, the veth set down and up
 * (which drops its IPv6 addresses, the pod's gateway among them). The agent's next full pass puts it
 * back and says so; the node reaches the pod again, both families.
 */
const skip = netnsSkipReason ?? builtSkipReason();

describe.skipIf(skip !== undefined)(`a pod's host end put back${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const node = new NodeHarness();
  beforeAll(() => node.start(['--resync-seconds', '1']));
  afterAll(() => node.stop());

  it('routes flushed, the veth down and up: back at the next pass, one warning naming what was lost', async () => {
    const pod = node.podNs();
    const id = containerId();
    const add = await node.add(pod, id);
    expect(add.code, add.stdout).toBe(0);
    const result = add.json as AddResult;
    const [v4, v6] = [podAddr(result, 4), podAddr(result, 6)];
    const hostIf = hostVethName(id, 'eth0');
    const reach = () => nsPing(node.host.name, v4) && nsPing(node.host.name, v6);
    expect(reach()).toBe(true);

    const mark = node.agent.logs.length;
    ip(node.host.name, 'route', 'del', `${v4}/32`, 'dev', hostIf);
    ip(node.host.name, '-6', 'route', 'del', `${v6}/128`, 'dev', hostIf);
    ip(node.host.name, 'link', 'set', hostIf, 'down');
    ip(node.host.name, 'link', 'set', hostIf, 'up');
    expect(
      ipJson<{ addr_info: { local: string }[] }[]>(
        node.host.name,
        '-6',
        'addr',
        'show',
        'dev',
        hostIf,
      )[0]?.addr_info.map((a) => a.local) ?? [],
    ).not.toContain('fe80::1');
    expect(nsPing(node.host.name, v4)).toBe(false);

    const line = await node.logLine(
      (l) => l.msg === "a pod's host end had lost what ADD gave it; put back",
      10_000,
    );
    expect(line).toMatchObject({ level: 'warn', hostIf, ifname: 'eth0' });
    expect(line?.missing).toEqual(
      expect.arrayContaining([`route ${v4}/32`, 'address fe80::1', `route ${v6}/128`]),
    );
    expect(
      node.agent.logs.slice(mark).filter((l) => String(l.msg).startsWith("a pod's host end")).length,
    ).toBe(1);
    await vi.waitFor(() => expect(reach()).toBe(true), { timeout: 5000, interval: 200 });
    expect((await node.del(id, pod.path)).code).toBe(0);
  }, 30_000);

  it('a running pod whose lease record is gone at a restart: its veth goes, and a warning names it and its addresses', async () => {
    const pod = node.podNs();
    const id = containerId();
    const add = await node.add(pod, id);
    expect(add.code, add.stdout).toBe(0);
    const result = add.json as AddResult;
    await node.agent.stop();
    rmSync(join(node.agent.stateDir, 'ipam', 'leases', `${id}@eth0.json`));
    await node.startAgain(['--resync-seconds', '1']);
    const line = await node.logLine((l) =>
      String(l.msg).startsWith('start-up sweep removed routed pod veths'),
    );
    expect(line).toMatchObject({
      level: 'warn',
      veths: [
        {
          name: hostVethName(id, 'eth0'),
          addresses: expect.arrayContaining([podAddr(result, 4), podAddr(result, 6)]),
        },
      ],
    });
    await node.waitForVeths(0);
  }, 30_000);
});
