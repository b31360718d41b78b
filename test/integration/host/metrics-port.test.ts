import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { METRICS_CONNECTION_LIMITS } from '../../../pkg/observe/connection-limits.ts';
import { type AgentProcess, removeAgentDir, startAgent } from '../../support/agent-process.ts';
import { builtSkipReason } from '../../support/cni-driver.ts';
import { ip, NetnsPool, netnsSkipReason, nsExec } from '../../support/netns.ts';

/**
 * The metrics and health port listens on the node's addresses without authentication, so any pod can
 * reach it. A client holding connections open gets its share and no more, while the node's own
 * clients (the kubelet's probes) are still answered; idle connections are dropped within seconds.
 * The "pod" is a namespace on a veth to the agent's namespace: its connections come from an address
 * that is not the node's.
 */
const skip = netnsSkipReason ?? builtSkipReason();
const PORT = 19743;

/** A Node.js program run in `ns`, its stdout piped to us. */
function nodeIn(ns: string, program: string): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** The "open N" lines a connection-holding program prints, as they come. */
function withOpenCounts(child: ChildProcess): { child: ChildProcess; counts: number[] } {
  const counts: number[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    for (const m of d.matchAll(/open (\d+)/g)) counts.push(Number(m[1]));
  });
  return { child, counts };
}

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
  return withOpenCounts(nodeIn(ns, program));
}

/** GET path from inside `ns`; the status code, or the error. */
function get(ns: string, url: string): Promise<string> {
  const program = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(3000) }).then((r) => console.log(r.status), (e) => console.log(String(e.cause?.code ?? e)));`;
  return new Promise((resolve) => {
    const child = nodeIn(ns, program);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('close', () => resolve(out.trim()));
  });
}

/**
 * In `ns`: `count` connections that each send `pipelined` GET /metrics in one write and never read;
 * prints how many are still open every second.
 */
function pipelineAndStall(ns: string, addr: string, count: number, pipelined: number) {
  const program = `
    const net = require('node:net');
    let open = 0;
    const req = 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'.repeat(${pipelined});
    for (let i = 0; i < ${count}; i++) {
      const s = net.connect(${PORT}, ${JSON.stringify(addr)});
      s.on('connect', () => { open++; s.write(req); s.pause(); });
      s.on('close', () => open--);
      s.on('error', () => {});
    }
    setInterval(() => console.log('open ' + open), 1000);
  `;
  return withOpenCounts(nodeIn(ns, program));
}

/**
 * In `ns`: one connection that sends `pipelined` GET /metrics in one write and reads until the agent
 * closes it; prints how many HTTP responses came back.
 */
function pipelineAndRead(ns: string, addr: string, pipelined: number): Promise<number> {
  const program = `
    const net = require('node:net');
    let text = '';
    const s = net.connect(${PORT}, ${JSON.stringify(addr)});
    s.setEncoding('latin1');
    s.on('connect', () => s.write('GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'.repeat(${pipelined})));
    s.on('data', (d) => { text += d; });
    s.on('error', () => {});
    s.on('close', () => console.log('responses ' + (text.match(/^HTTP\\/1\\.1 /gm) ?? []).length));
    setTimeout(() => process.exit(3), 15000);
  `;
  return new Promise((resolve, reject) => {
    const child = nodeIn(ns, program);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('close', () => {
      const m = /responses (\d+)/.exec(out);
      if (m === null) reject(new Error(`no count: ${out}`));
      else resolve(Number(m[1]));
    });
  });
}

const title = 'the metrics and health port bounds what pods can hold open (real agent)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  let agent: AgentProcess | undefined;
  /** The namespaces of the first test, which the second reuses with its agent. */
  let podName = '';
  let nodeName = '';

  afterAll(async () => {
    await agent?.kill();
    if (agent !== undefined) removeAgentDir(agent.dir);
    pool.cleanup();
  });

  it('a pod holding connections gets its share; the node itself is answered meanwhile; idle ones are dropped', async () => {
    const node = pool.add('mnode', { loUp: true }).name;
    const pod = pool.add('mpod', { loUp: true }).name;
    podName = pod;
    nodeName = node;
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

  it('requests pipelined by the thousand: at most one answer per connection, then closed; never read, dropped when idle', async () => {
    // Each pipelined request used to get its own rendering (~11 KB) queued for a client that need not
    // read, and the first answer cancelled the idle timeout: 16 such connections held ~700 MB.
    // At most one answer, whatever follows on the connection: a second request ends it, perhaps
    // before the first answer is out (50 answers without the limit).
    expect(await pipelineAndRead(podName, '10.77.0.1', 50)).toBeLessThanOrEqual(1);
    const stall = pipelineAndStall(podName, '10.77.0.1', METRICS_CONNECTION_LIMITS.perSource, 2000);
    try {
      // Counted on the agent's side: a client that does not read never sees its connection close.
      const established = (): number =>
        nsExec(nodeName, 'ss', ['-Htn', 'state', 'established', `( sport = :${PORT} )`])
          .split('\n')
          .filter((l) => l.trim() !== '').length;
      for (let i = 0; stall.counts.length === 0; i++) {
        expect(i, 'the stalling client reported').toBeLessThan(200);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(stall.counts[0]).toBe(METRICS_CONNECTION_LIMITS.perSource);
      for (let i = 0; established() > 0; i++) {
        expect(i, 'the connections dropped within 15 s').toBeLessThan(150);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await get(podName, `http://10.77.0.1:${PORT}/metrics`)).toBe('200');
    } finally {
      stall.child.kill('SIGKILL');
    }
  }, 30_000);
});
