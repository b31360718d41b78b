import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { METRICS_CONNECTION_LIMITS } from '../../../pkg/observe/connection-limits.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * The metrics and health port listens on the node's addresses without authentication, so any pod can
 * reach it. A client holding connections open gets its share and no more, while the node's own
 * clients (the kubelet's probes) are still answered; idle connections are dropped within seconds.
 * The "pod" is a namespace on a veth to the agent's namespace: its connections come from an address
 * that is not the node's.
 */
const skip = netnsSkipReason ?? builtSkipReason();
const PORT = 19743;

/**
 * In `ns`: opens `count` connections to addr:port and sends nothing; prints how many are still open
 * after `holdMs`, then keeps them until killed.
 */
function holdConnections(ns: string, addr: string, count: number, holdMs: number) {
  const program = `
    const net = require('node:net');
    let open = 0;
    for (let i = 0; i < ${count}; i++) {
      const s = net.connect(${PORT}, ${JSON.stringify(addr)});
      s.on('connect', () => open++);
      s.on('close', () => open--);
      s.on('error', () => {});
    }
    setTimeout(() => console.log('open ' + open), ${holdMs});
    setTimeout(() => console.log('open ' + open), ${holdMs} + 7000);
  `;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const counts: number[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    for (const m of d.matchAll(/open (\d+)/g)) counts.push(Number(m[1]));
  });
  return { child, counts };
}

/** GET path from inside `ns`; the status code, or the error. */
function get(ns: string, url: string): Promise<string> {
  const program = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(3000) }).then((r) => console.log(r.status), (e) => console.log(String(e.cause?.code ?? e)));`;
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('close', () => resolve(out.trim()));
  });
}

const title = 'the metrics and health port bounds what pods can hold open (real agent)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  let agent: AgentProcess | undefined;

  afterAll(async () => {
    await agent?.kill();
    if (agent !== undefined) removeAgentDir(agent.dir);
    pool.cleanup();
  });

  it('a pod holding connections gets its share; the node itself is answered meanwhile; idle ones are dropped', async () => {
    const node = pool.add('mnode', { loUp: true }).name;
    const pod = pool.add('mpod', { loUp: true }).name;
    ip(node, 'link', 'add', 'trlm0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod);
    ip(node, 'addr', 'add', '10.77.0.1/24', 'dev', 'trlm0');
    ip(pod, 'addr', 'add', '10.77.0.2/24', 'dev', 'eth0');
    ip(node, 'link', 'set', 'trlm0', 'up');
    ip(pod, 'link', 'set', 'eth0', 'up');
    agent = startAgent({ ns: node, podCIDRs: ['10.244.1.0/24'], extraArgs: ['--metrics-addr', `:${PORT}`] });
    await agent.ready();
    const { perSource } = METRICS_CONNECTION_LIMITS;

    const flood = holdConnections(pod, '10.77.0.1', perSource * 3, 1500);
    try {
      for (let i = 0; flood.counts.length === 0; i++) {
        expect(i, 'the flood reported').toBeLessThan(200);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(flood.counts[0]).toBe(perSource);
      // The node's own client (the kubelet probes the node's address from the node) is answered.
      expect(await get(node, `http://10.77.0.1:${PORT}/healthz`)).toBe('200');
      // And the pod's share is used up: another request from it is turned away.
      expect(await get(pod, `http://10.77.0.1:${PORT}/healthz`)).not.toBe('200');
      // Connections that never send a request are dropped (headersTimeout 5 s, checked every second).
      for (let i = 0; flood.counts.length < 2; i++) {
        expect(i, 'the second report').toBeLessThan(600);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(flood.counts[1]).toBe(0);
      expect(await get(pod, `http://10.77.0.1:${PORT}/healthz`)).toBe('200');
    } finally {
      flood.child.kill('SIGKILL');
    }
  }, 30_000);
});
