import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, nsExec, nsSysctl } from '../../support/netns.ts';
import { raSkipReason, SEND_RA } from '../../support/ra/index.ts';

/**
 * A node that takes its IPv6 default route from a router's advertisements (SLAAC; EC2 does this
 * too) keeps it when the agent turns IPv6 forwarding on. The kernel ignores RAs on an interface with
 * accept_ra=1 once forwarding is on, and deletes the default routes it learned from them the moment
 * forwarding goes on; the agent sets accept_ra=2 there first. A real advertisement, sent by a
 * script in the "router" namespace, installs the route.
 */
const skip = netnsSkipReason ?? builtSkipReason() ?? raSkipReason();

type Route = { dst: string; gateway?: string; dev?: string; protocol?: string };

const title =
  'IPv6 forwarding keeps the routes a node learns from router advertisements (real agent, real RA)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  let agent: AgentProcess | undefined;

  afterEach(async () => {
    await agent?.kill();
    if (agent !== undefined) removeAgentDir(agent.dir);
    agent = undefined;
  });
  afterAll(() => pool.cleanup());

  /** A host namespace whose eth0 hears a router's RAs (accept_ra=1, forwarding off): it takes a default route. */
  async function hostWithRaDefaultRoute(): Promise<{ host: string; router: string }> {
    const host = pool.add('rahost', { loUp: true }).name;
    const router = pool.add('rartr', { loUp: true }).name;
    ip(host, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'r0', 'netns', router);
    nsSysctl(host, 'net.ipv6.conf.all.forwarding', '0');
    nsSysctl(host, 'net.ipv6.conf.eth0.accept_ra', '1');
    nsSysctl(host, 'net.ipv6.conf.eth0.accept_dad', '0');
    nsSysctl(router, 'net.ipv6.conf.r0.accept_dad', '0');
    ip(host, 'link', 'set', 'eth0', 'up');
    ip(router, 'link', 'set', 'r0', 'up');
    // The router's link-local address takes a moment after link up: retry until the RA goes out.
    for (let i = 0; ; i++) {
      const r = spawnSync('ip', ['netns', 'exec', router, 'python3', SEND_RA, 'r0', 'fd00:99::'], {
        encoding: 'utf8',
      });
      if (r.status === 0) break;
      if (i > 100) throw new Error(`no RA sent: ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    for (let i = 0; defaultRoutes(host).length === 0; i++) {
      if (i > 100) throw new Error('the RA installed no default route');
      await new Promise((res) => setTimeout(res, 20));
    }
    return { host, router };
  }

  const defaultRoutes = (ns: string): Route[] =>
    ipJson<Route[]>(ns, '-6', 'route', 'show', 'default').filter((r) => r.protocol === 'ra');
  const sysctl = (ns: string, key: string): string => nsExec(ns, 'sysctl', ['-n', key]).trim();

  it('a dual-stack agent starting on it: accept_ra=2 on eth0, forwarding on, the default route kept and renewed', async () => {
    const { host, router } = await hostWithRaDefaultRoute();
    expect(defaultRoutes(host)).toHaveLength(1);
    agent = startAgent({ ns: host, podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    await agent.ready();
    expect(sysctl(host, 'net.ipv6.conf.all.forwarding')).toBe('1');
    expect(sysctl(host, 'net.ipv6.conf.eth0.accept_ra')).toBe('2');
    expect(defaultRoutes(host)).toEqual([expect.objectContaining({ dev: 'eth0', protocol: 'ra' })]);
    expect(
      agent.logs.filter((l) => l.link === 'eth0' && l.sysctl === 'net/ipv6/conf/eth0/accept_ra'),
    ).toHaveLength(1);
    // Forwarding on, the node still hears its router: a new advertisement is taken (the route renewed).
    execFileSync('ip', ['netns', 'exec', router, 'python3', SEND_RA, 'r0', 'fd00:99::']);
    expect(defaultRoutes(host)).toHaveLength(1);
  });

  it('without the guard (what the kernel does): forwarding on at accept_ra=1 drops the default route at once', async () => {
    const { host } = await hostWithRaDefaultRoute();
    nsSysctl(host, 'net.ipv6.conf.all.forwarding', '1');
    expect(defaultRoutes(host)).toEqual([]);
  });

  it('a node already forwarding IPv6 keeps the per-interface forwarding=0 its operator set (no write of all/forwarding)', async () => {
    // Any write of net.ipv6.conf.all.forwarding, even of the 1 it holds, makes the kernel set every
    // interface's own forwarding to 1 (addrconf_fixup_forwarding), undoing an interface kept a host.
    const host = pool.add('fwdkeep', { loUp: true }).name;
    ip(host, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
    nsSysctl(host, 'net.ipv6.conf.all.forwarding', '1');
    nsSysctl(host, 'net.ipv6.conf.eth0.forwarding', '0');
    agent = startAgent({ ns: host, podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    await agent.ready();
    expect(sysctl(host, 'net.ipv6.conf.all.forwarding')).toBe('1');
    expect(sysctl(host, 'net.ipv6.conf.eth0.forwarding')).toBe('0');
  });
});
