/**
 * A synthetic cluster for the control-plane benchmarks: the node under test plus N-1 peers whose
 * InternalIPs sit on the node's connected /16 (so every peer is a direct route), each with one IPv4
 * pod CIDR. Node i: InternalIP 10.10.(1 + i>>8).(i&255), pod CIDR 10.(128 + i>>8).(i&255).0/24.
 */
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { type AgentProcess, startAgent } from '../../test/support/agent-process.ts';
import type { JsonObject } from '../../test/support/apiserver/patch.ts';
import type { TestApiServer } from '../../test/support/apiserver/server.ts';
import { fakeCniBinDir } from '../../test/support/cni-driver.ts';
import { ip } from '../../test/support/netns.ts';
import { forwardSignalsTo, tempDir } from '../../test/support/signal-undo.ts';
import { NODE } from './runner-client.ts';

export const SELF = 'bench-self';
export const SELF_IP = '10.10.0.1';
export const SELF_CIDR = '10.127.0.0/24';
export const NODE_SUBNET_PREFIX = 16;

export function peerIp(i: number): string {
  return `10.10.${1 + (i >> 8)}.${i & 255}`;
}

export function peerCidr(i: number): string {
  return `10.${128 + (i >> 8)}.${i & 255}.0/24`;
}

export function nodeObject(name: string, internalIp: string, podCidr: string): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' } },
    spec: { podCIDR: podCidr, podCIDRs: [podCidr] },
    status: {
      addresses: [
        { type: 'InternalIP', address: internalIp },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
    },
  };
}

/** Adds the node under test and `total - 1` peers to the test API server's store. */
export function populate(srv: TestApiServer, total: number): void {
  srv.store.addNode(nodeObject(SELF, SELF_IP, SELF_CIDR));
  for (let i = 1; i < total; i++) srv.store.addNode(nodeObject(`bench-peer-${i}`, peerIp(i), peerCidr(i)));
}

/**
 * Gives the node namespace its "fabric": a veth whose far end sits in `peerNs`, holding SELF_IP/16,
 * both ends up (so routes via any 10.10.x.y are direct and valid).
 */
export function wireNodeNamespace(nodeNs: string, peerNs: string, addr = SELF_IP): void {
  const dev = 'eth0';
  execFileSync('ip', [
    '-n',
    nodeNs,
    'link',
    'add',
    dev,
    'type',
    'veth',
    'peer',
    'name',
    'fab0',
    'netns',
    peerNs,
  ]);
  ip(nodeNs, 'addr', 'add', `${addr}/${NODE_SUBNET_PREFIX}`, 'dev', dev);
  ip(nodeNs, 'link', 'set', dev, 'up');
  ip(peerNs, 'link', 'set', 'fab0', 'up');
  ip(peerNs, 'addr', 'add', `10.10.255.254/${NODE_SUBNET_PREFIX}`, 'dev', 'fab0');
}

/**
 * The outer half of a bench that runs inside a node namespace: re-executes this script there with
 * `--inner` and `extra`, passes a signal on to it (it undoes what it made; this half's `finally` then
 * undoes the rest), and resolves with its exit code.
 */
export function runInsideNamespace(ns: string, script: string, extra: readonly string[]): Promise<number> {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, NODE, script, ...process.argv.slice(2), '--inner', ...extra],
    { stdio: 'inherit' },
  );
  forwardSignalsTo(child);
  return new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 1)));
}

/** A real agent in Kubernetes mode as SELF in `ns`, against the test API server, with a fake CNI bin dir. */
export function startClusterAgent(
  ns: string,
  srv: TestApiServer,
  extraArgs: readonly string[],
): AgentProcess {
  const dir = tempDir('trl-agent-');
  fakeCniBinDir(join(dir, 'bin'));
  return startAgent({
    ns,
    dir,
    kubernetes: {
      nodeName: SELF,
      kubeconfig: srv.kubeconfigPath,
      cniConfDir: join(dir, 'net.d'),
      cniBinDir: join(dir, 'bin'),
    },
    extraArgs: [...extraArgs],
  });
}
