import { describe, expect, it } from 'vitest';
import { agentNetnsPath } from '../../../pkg/netns/host-proc.ts';

describe('agentNetnsPath', () => {
  it('reads /proc/PID/ns/net through the host /proc mount', () => {
    expect(agentNetnsPath('/proc/4242/ns/net', '/host/proc')).toBe('/host/proc/4242/ns/net');
    expect(agentNetnsPath('/proc/4242/ns/net', '/host/proc/')).toBe('/host/proc/4242/ns/net');
  });

  it('opens pinned namespaces it has, and everything without a host /proc, as given', () => {
    const inContainer = (p: string) => p.startsWith('/var/run/netns/') || p.startsWith('/run/netns/');
    expect(agentNetnsPath('/var/run/netns/cni-1234', '/host/proc', inContainer)).toBe(
      '/var/run/netns/cni-1234',
    );
    expect(agentNetnsPath('/run/netns/x', '/host/proc', inContainer)).toBe('/run/netns/x');
    expect(agentNetnsPath('/proc/4242/ns/net', '')).toBe('/proc/4242/ns/net');
    expect(agentNetnsPath('/run/containerd/netns/x', '', () => false)).toBe('/run/containerd/netns/x');
  });

  it("opens a path the container lacks through the host's root (/host/proc/1/root), when it is there", () => {
    const host = new Set(['/host/proc/1/root/run/containerd/io.containerd.grpc.v1.cri/netns/cni-1']);
    const exists = (p: string) => host.has(p);
    expect(
      agentNetnsPath('/run/containerd/io.containerd.grpc.v1.cri/netns/cni-1', '/host/proc', exists),
    ).toBe('/host/proc/1/root/run/containerd/io.containerd.grpc.v1.cri/netns/cni-1');
    // Nowhere (a DEL after the namespace went): the runtime's own path, for the error to name.
    expect(agentNetnsPath('/run/containerd/netns/gone', '/host/proc', exists)).toBe(
      '/run/containerd/netns/gone',
    );
    expect(agentNetnsPath('/procfoo/1/ns/net', '/host/proc', exists)).toBe('/procfoo/1/ns/net');
  });
});
