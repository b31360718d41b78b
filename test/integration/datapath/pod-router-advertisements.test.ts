import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ipJson, netnsSkipReason, nsExec, nsSysctl } from '../../support/netns.ts';
import { raSkipReason, SEND_RA } from '../../support/ra/index.ts';
import { type AddResult, containerId, NodeHarness, V4_CIDR } from './harness.ts';

/**
 * A pod cannot route its node. Router advertisements a pod sends out of its eth0 (a raw socket needs
 * only NET_RAW, which runtimes grant by default) reach the host end of its veth; a host end that took
 * them would give the node a default route and an address through the pod. The agent writes
 * accept_ra=0 on the host end of every IPv6 pod, and turns IPv6 off on the host end of a pod without
 * IPv6. Real agent, real shim, real advertisements.
 */
const skip = netnsSkipReason ?? builtSkipReason() ?? raSkipReason();

type Route = { dst: string; gateway?: string; dev?: string; protocol?: string };

/**
 * Sends one RA advertising `prefix` out of `iface` in namespace `ns`, from its link-local address (a
 * node takes RAs from link-local sources only; before the link has one, the kernel would pick another).
 */
async function sendRa(ns: string, iface: string, prefix: string): Promise<void> {
  const linkLocal = () =>
    ipJson<{ addr_info: { scope: string }[] }[]>(ns, '-6', 'addr', 'show', 'dev', iface).some((l) =>
      l.addr_info.some((a) => a.scope === 'link'),
    );
  for (let i = 0; !linkLocal(); i++) {
    if (i > 250) throw new Error(`${iface} in ${ns} has no link-local address`);
    await new Promise((res) => setTimeout(res, 20));
  }
  for (let i = 0; ; i++) {
    const r = spawnSync('ip', ['netns', 'exec', ns, 'python3', SEND_RA, iface, prefix], {
      encoding: 'utf8',
    });
    if (r.status === 0) return;
    if (i > 100) throw new Error(`no RA sent: ${r.stderr}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** fe80::/64 with the modified EUI-64 interface identifier of `mac` (the kernel's default addr_gen_mode). */
function eui64LinkLocal(mac: string): string {
  const b = mac.split(':').map((x) => Number.parseInt(x, 16));
  const id = [b[0]! ^ 2, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  const groups = [0, 2, 4, 6].map((i) => ((id[i]! << 8) | id[i + 1]!).toString(16));
  return `fe80::${groups.join(':')}`;
}

const title = 'router advertisements from a pod are not heard by its node (real agent, real RA)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let node: NodeHarness | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it("dual-stack, on a node whose default is accept_ra=2: the pod's RA changes nothing; the same RA on the same link with accept_ra=2 would", async () => {
    const h = new NodeHarness();
    node = h;
    // What an operator sets on a router that learns its own default route by SLAAC; new links inherit it.
    await h.start([], (host) => nsSysctl(host, 'net.ipv6.conf.default.accept_ra', '2'));
    const pod = h.podNs();
    const add = await h.add(pod, containerId());
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const hostEnd = (add.json as AddResult).interfaces[0]!.name;
    expect(nsExec(h.host.name, 'sysctl', ['-n', `net.ipv6.conf.${hostEnd}.accept_ra`]).trim()).toBe('0');

    const routes = () => ipJson<Route[]>(h.host.name, '-6', 'route', 'show');
    const defaultViaPod = () => routes().filter((r) => r.dst === 'default' && r.dev === hostEnd);
    await sendRa(pod.name, 'eth0', 'fd00:66::');
    // The control: the link as the kernel would leave it, and a second RA; once its default route
    // shows, the first (sent earlier on the same link) has been handled too.
    nsSysctl(h.host.name, `net.ipv6.conf.${hostEnd}.accept_ra`, '2');
    await sendRa(pod.name, 'eth0', 'fd00:77::');
    for (let i = 0; defaultViaPod().length === 0; i++) {
      if (i > 250) throw new Error(`the control RA installed nothing: ${JSON.stringify(routes())}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(defaultViaPod()).toEqual([expect.objectContaining({ protocol: 'ra' })]);
    expect(routes().map((r) => r.dst)).toContain('fd00:77::/64');
    expect(routes().map((r) => r.dst)).not.toContain('fd00:66::/64');
  });

  it("the other way: an RA on the node's side of the veth gives the pod no route and no address; the same RA would with the kernel's defaults", async () => {
    const h = new NodeHarness();
    node = h;
    await h.start();
    const pod = h.podNs();
    const add = await h.add(pod, containerId());
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const hostEnd = (add.json as AddResult).interfaces[0]!.name;
    for (const key of ['accept_ra', 'autoconf']) {
      expect(nsExec(pod.name, 'sysctl', ['-n', `net.ipv6.conf.eth0.${key}`]).trim(), key).toBe('0');
    }
    const routes = () => ipJson<Route[]>(pod.name, '-6', 'route', 'show');
    const addresses = () =>
      ipJson<{ addr_info: { local: string }[] }[]>(pod.name, '-6', 'addr', 'show', 'dev', 'eth0').flatMap(
        (l) => l.addr_info.map((a) => a.local),
      );
    // A daemon on the node advertising on every link (radvd or networkd told to, by mistake).
    await sendRa(h.host.name, hostEnd, 'fd00:66::');
    // The control: the pod's link as the kernel makes it, and a second RA; once its prefix shows, the
    // first (sent earlier on the same link) has been handled too.
    nsSysctl(pod.name, 'net.ipv6.conf.eth0.accept_ra', '1');
    nsSysctl(pod.name, 'net.ipv6.conf.eth0.autoconf', '1');
    await sendRa(h.host.name, hostEnd, 'fd00:77::');
    for (let i = 0; !addresses().some((a) => a.startsWith('fd00:77:')); i++) {
      if (i > 250) throw new Error(`the control RA made no address: ${JSON.stringify(addresses())}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(routes().map((r) => r.dst)).toContain('fd00:77::/64');
    expect(routes().map((r) => r.dst)).not.toContain('fd00:66::/64');
    expect(addresses().filter((a) => a.startsWith('fd00:66:'))).toEqual([]);
  });

  it('IPv4-only: the host end has no IPv6 at all, so the pod reaches nothing of the node over link-local', async () => {
    const h = new NodeHarness([V4_CIDR]);
    node = h;
    await h.start();
    const pod = h.podNs();
    const add = await h.add(pod, containerId());
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const { name: hostEnd, mac: hostMac } = (add.json as AddResult).interfaces[0]! as {
      name: string;
      mac: string;
    };
    expect(nsExec(h.host.name, 'sysctl', ['-n', `net.ipv6.conf.${hostEnd}.disable_ipv6`]).trim()).toBe('1');
    expect(ipJson<{ addr_info: unknown[] }[]>(h.host.name, '-6', 'addr', 'show', 'dev', hostEnd)).toEqual([]);
    // The link-local address the host end would have (EUI-64 of its MAC) does not answer.
    const ping = spawnSync(
      'ip',
      ['netns', 'exec', pod.name, 'ping', '-6', '-c', '1', '-W', '1', `${eui64LinkLocal(hostMac)}%eth0`],
      { encoding: 'utf8' },
    );
    expect(ping.stdout).toMatch(/ 0 received/);
  });
});
