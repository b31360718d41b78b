import { type ChildProcess, execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftError, NftRunner } from '../../../pkg/masq/nft.ts';
import { renderMasqRuleset } from '../../../pkg/masq/render.ts';
import { MasqSyncer } from '../../../pkg/masq/sync.ts';
import { createNetlinkEvents, withNetns } from '../../../pkg/netns/index.ts';
import {
  ip,
  NetnsPool,
  netnsSkipReason,
  nodeIn,
  nsExec,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';
import { sleep } from '../faults/support.ts';

/**
 * Topology (all in throwaway namespaces):
 *
 *   pod (10.244.0.5, fd00:10:244::5) --veth-- node --veth-- internet (203.0.113.2, 2001:db8:1::2)
 *                                               \--veth-- peer (192.168.50.2; pod 10.244.1.1 / fd00:10:244:1::1 on lo)
 *
 * `internet` has no route back to the pod CIDRs: only masquerade lets replies return. `peer` stands for
 * another node with its own pod CIDR and routes back to ours, so pod-to-pod keeps the pod address.
 */

const UDP_SERVER = `
const dgram = require('node:dgram');
const s = dgram.createSocket({ type: 'udp6', ipv6Only: false });
s.on('message', (m, r) => { process.stdout.write(r.address.replace(/^::ffff:/, '') + '\\n'); s.send(m, r.port, r.address); });
s.bind(7777, '::', () => process.stdout.write('ready\\n'));
`;
const UDP_CLIENT = `
const dgram = require('node:dgram');
const [addr] = process.argv.slice(1);
const s = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
const t = setTimeout(() => { process.stdout.write('timeout'); process.exit(2); }, 1500);
s.on('message', () => { clearTimeout(t); process.stdout.write('reply'); s.close(); });
s.send('hello', 7777, addr);
`;

interface Server {
  proc: ChildProcess;
  seen: string[];
}

function startServer(ns: string): Promise<Server> {
  const proc = nodeIn(ns, UDP_SERVER, 'inherit');
  const seen: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        if (l === 'ready') resolve({ proc, seen });
        else seen.push(l);
      }
    });
    proc.on('exit', (c) => reject(new Error(`udp server exited ${c}`)));
  });
}

const execFileAsync = promisify(execFile);

/** Sends one datagram from ns and returns whether the echo came back (async: the servers' output must flow). */
async function udpRoundTrip(ns: string, addr: string): Promise<boolean> {
  try {
    const { stdout } = await execFileAsync('ip', [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      UDP_CLIENT,
      addr,
    ]);
    return stdout === 'reply';
  } catch {
    return false;
  }
}

/** Waits until the server printed n sources (or 2 s), then returns them. */
async function seenAfter(server: Server, n: number): Promise<string[]> {
  for (let i = 0; i < 100 && server.seen.length < n; i++) await new Promise((r) => setTimeout(r, 20));
  return [...server.seen];
}

function veth(a: TestNetns, aName: string, b: TestNetns, bName: string): void {
  ip(a.name, 'link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name);
  ip(a.name, 'link', 'set', aName, 'up');
  ip(b.name, 'link', 'set', bName, 'up');
}

function ruleCounter(nft: NftRunner): Promise<number[]> {
  return nft.listTable().then((items) =>
    (items ?? []).flatMap((i) => {
      const rule = (i as { rule?: { expr: Record<string, { packets?: number }>[] } }).rule;
      const counter = rule?.expr.find((e) => e.counter !== undefined)?.counter;
      return counter?.packets === undefined ? [] : [counter.packets];
    }),
  );
}

describe.skipIf(netnsSkipReason !== undefined)('masquerade with nftables (namespaces)', () => {
  const pool = new NetnsPool();
  let node: TestNetns;
  let pod: TestNetns;
  let internet: TestNetns;
  let peer: TestNetns;
  let nft: NftRunner;
  const servers: Server[] = [];

  beforeAll(async () => {
    node = pool.add('mq-node');
    pod = pool.add('mq-pod');
    internet = pool.add('mq-inet');
    peer = pool.add('mq-peer');
    veth(node, 'vpod', pod, 'eth0');
    veth(node, 'vinet', internet, 'eth0');
    veth(node, 'vpeer', peer, 'eth0');
    for (const [ns, dev] of [
      [node, 'vpod'],
      [node, 'vinet'],
      [node, 'vpeer'],
      [pod, 'eth0'],
      [internet, 'eth0'],
      [peer, 'eth0'],
    ] as const) {
      nsSysctl(ns.name, `net.ipv6.conf.${dev}.accept_dad`, '0');
    }
    nsSysctl(node.name, 'net.ipv4.ip_forward', '1');
    nsSysctl(node.name, 'net.ipv6.conf.all.forwarding', '1');
    ip(node.name, 'addr', 'add', '10.244.0.1/24', 'dev', 'vpod');
    ip(node.name, 'addr', 'add', 'fd00:10:244::1/64', 'dev', 'vpod', 'nodad');
    ip(node.name, 'addr', 'add', '203.0.113.1/24', 'dev', 'vinet');
    ip(node.name, 'addr', 'add', '2001:db8:1::1/64', 'dev', 'vinet', 'nodad');
    ip(node.name, 'addr', 'add', '192.168.50.1/24', 'dev', 'vpeer');
    ip(node.name, 'addr', 'add', 'fd00:50::1/64', 'dev', 'vpeer', 'nodad');
    ip(node.name, 'route', 'add', '10.244.1.0/24', 'via', '192.168.50.2');
    ip(node.name, 'route', 'add', 'fd00:10:244:1::/64', 'via', 'fd00:50::2');
    ip(pod.name, 'addr', 'add', '10.244.0.5/24', 'dev', 'eth0');
    ip(pod.name, 'addr', 'add', 'fd00:10:244::5/64', 'dev', 'eth0', 'nodad');
    ip(pod.name, 'route', 'add', 'default', 'via', '10.244.0.1');
    ip(pod.name, '-6', 'route', 'add', 'default', 'via', 'fd00:10:244::1');
    ip(internet.name, 'addr', 'add', '203.0.113.2/24', 'dev', 'eth0');
    ip(internet.name, 'addr', 'add', '2001:db8:1::2/64', 'dev', 'eth0', 'nodad');
    ip(peer.name, 'addr', 'add', '192.168.50.2/24', 'dev', 'eth0');
    ip(peer.name, 'addr', 'add', 'fd00:50::2/64', 'dev', 'eth0', 'nodad');
    ip(peer.name, 'addr', 'add', '10.244.1.1/32', 'dev', 'lo');
    ip(peer.name, 'addr', 'add', 'fd00:10:244:1::1/128', 'dev', 'lo');
    ip(peer.name, 'route', 'add', '10.244.0.0/24', 'via', '192.168.50.1');
    ip(peer.name, 'route', 'add', 'fd00:10:244::/64', 'via', 'fd00:50::1');
    servers.push(await startServer(internet.name), await startServer(peer.name));
    nft = new NftRunner({ argvPrefix: ['ip', 'netns', 'exec', node.name] });
  });

  afterAll(() => {
    for (const s of servers) s.proc.kill('SIGKILL');
    pool.cleanup();
  });

  const opts = {
    podCIDRs: { v4: ['10.244.0.0/24'], v6: ['fd00:10:244::/64'] },
    clusterCIDRs: ['10.244.0.0/24', '10.244.1.0/24', 'fd00:10:244::/64', 'fd00:10:244:1::/64'],
    noMasqueradeCIDRs: [],
  };

  it('without the table, the internet never answers the pod (no route back)', async () => {
    expect(await udpRoundTrip(pod.name, '203.0.113.2')).toBe(false);
    expect((await seenAfter(servers[0]!, 1)).at(-1)).toBe('10.244.0.5');
  });

  it('masquerades pod -> internet to the node address, IPv4 and IPv6', async () => {
    await nft.apply(renderMasqRuleset(opts));
    servers[0]!.seen.length = 0;
    expect(await udpRoundTrip(pod.name, '203.0.113.2')).toBe(true);
    expect(await udpRoundTrip(pod.name, '2001:db8:1::2')).toBe(true);
    expect(await seenAfter(servers[0]!, 2)).toEqual(['203.0.113.1', '2001:db8:1::1']);
    const counters = await ruleCounter(nft);
    expect(counters).toHaveLength(2); // one masquerade rule per family
    expect(counters.every((n) => n >= 1)).toBe(true);
  });

  it('keeps the pod address for pod -> another node pod CIDR', async () => {
    const before = await ruleCounter(nft);
    expect(before).toHaveLength(2);
    expect(await udpRoundTrip(pod.name, '10.244.1.1')).toBe(true);
    expect(await udpRoundTrip(pod.name, 'fd00:10:244:1::1')).toBe(true);
    expect(await seenAfter(servers[1]!, 2)).toEqual(['10.244.0.5', 'fd00:10:244::5']);
    expect(await ruleCounter(nft)).toEqual(before);
  });

  it("an operator's own SNAT for some egress wins over the masquerade, also when trellis's table is made after it", async () => {
    ip(node.name, 'addr', 'add', '203.0.113.9/24', 'dev', 'vinet');
    nsExec(node.name, 'nft', ['-f', '-'], {
      input:
        'table ip operator {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.244.0.5 ip daddr 203.0.113.2 snat to 203.0.113.9\n\t}\n}\n',
    });
    try {
      // Made again after the operator's chain: at equal priority it would now run first.
      await nft.apply(renderMasqRuleset(opts));
      servers[0]!.seen.length = 0;
      expect(await udpRoundTrip(pod.name, '203.0.113.2')).toBe(true);
      expect(await seenAfter(servers[0]!, 1)).toEqual(['203.0.113.9']);
    } finally {
      nsExec(node.name, 'nft', ['delete', 'table', 'ip', 'operator']);
      ip(node.name, 'addr', 'del', '203.0.113.9/24', 'dev', 'vinet');
    }
  });

  it('replaces the table atomically on re-apply (one transaction each); noMasqueradeCIDRs take effect', async () => {
    // Every nf_tables transaction ends with one generation message: a re-apply in two steps (delete,
    // then add) would leave pods unmasqueraded in between, and count two.
    let generations = 0;
    const sub = withNetns(node.path, () =>
      createNetlinkEvents().subscribeNftablesEvents!(
        (e) => {
          if (e.type === 'generation') generations++;
        },
        { family: 1, name: 'trellis' },
      ),
    );
    try {
      for (const o of [opts, { ...opts, noMasqueradeCIDRs: ['203.0.113.0/24'] }]) {
        const before = generations;
        await nft.apply(renderMasqRuleset(o));
        for (let i = 0; generations === before && i < 200; i++) await sleep(10);
        await sleep(200); // a second transaction's generation would be here by now
        expect(generations - before).toBe(1);
      }
    } finally {
      sub.close();
    }
    const tables = nsExec(node.name, 'nft', ['list', 'tables']);
    expect(tables.trim().split('\n')).toEqual(['table inet trellis']);
    servers[0]!.seen.length = 0;
    expect(await udpRoundTrip(pod.name, '203.0.113.2')).toBe(false); // kept its source: no route back
    expect(await udpRoundTrip(pod.name, '2001:db8:1::2')).toBe(true); // IPv6 still masqueraded
    expect(await seenAfter(servers[0]!, 2)).toEqual(['10.244.0.5', '2001:db8:1::1']);
  });

  it('rejects a broken ruleset with nft stderr and leaves the previous table in place', async () => {
    const before = nsExec(node.name, 'nft', ['list', 'table', 'inet', 'trellis']);
    const err = await nft
      .apply('table inet trellis {}\ndelete table inet trellis\ntable inet trellis { chain c { bogus } }\n')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).stderr).toMatch(/Error/);
    expect(nsExec(node.name, 'nft', ['list', 'table', 'inet', 'trellis'])).toBe(before);
  });

  it('MasqSyncer applies only when the rendered text changes', async () => {
    const syncer = new MasqSyncer(nft);
    expect(await syncer.sync(opts)).toBe('applied');
    const handleBefore = nsExec(node.name, 'nft', ['-a', 'list', 'table', 'inet', 'trellis']);
    expect(await syncer.sync({ ...opts, clusterCIDRs: [...opts.clusterCIDRs].reverse() })).toBe('unchanged');
    expect(nsExec(node.name, 'nft', ['-a', 'list', 'table', 'inet', 'trellis'])).toBe(handleBefore);
    expect(await syncer.sync({ ...opts, noMasqueradeCIDRs: ['198.51.100.0/24'] })).toBe('applied');
    expect(nsExec(node.name, 'nft', ['list', 'set', 'inet', 'trellis', 'nomasq_v4'])).toContain(
      '198.51.100.0/24',
    );
  });

  it('a resync over an unchanged table leaves it (and its counters) alone; one that differs is applied again', async () => {
    const syncer = new MasqSyncer(nft);
    expect(await syncer.sync(opts)).toBe('applied');
    // Rule handles change when the table is applied again (deleted and created), and its counters
    // with them: the same handles mean the same rules, counters and all.
    const handles = () => nsExec(node.name, 'nft', ['-a', 'list', 'table', 'inet', 'trellis']);
    const before = handles();
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('unchanged');
    expect(handles()).toBe(before);
    // Someone's change the watch missed (its notifications lost): the resync finds it.
    nsExec(node.name, 'nft', ['add', 'element', 'inet', 'trellis', 'nomasq_v4', '{ 203.0.113.0/24 }']);
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('applied');
    expect(nsExec(node.name, 'nft', ['list', 'set', 'inet', 'trellis', 'nomasq_v4'])).not.toContain(
      '203.0.113.0/24',
    );
    syncer.resync();
    expect(await syncer.sync(opts)).toBe('unchanged');
  });

  it('deleteTable removes it and is idempotent; the root namespace was never touched', async () => {
    const rootBefore = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });
    await nft.deleteTable();
    await nft.deleteTable();
    expect(await nft.listTable()).toBeUndefined();
    expect(nsExec(node.name, 'nft', ['list', 'tables']).trim()).toBe('');
    expect(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })).toBe(rootBefore);
    expect(rootBefore).not.toMatch(/trellis/);
  });
});
