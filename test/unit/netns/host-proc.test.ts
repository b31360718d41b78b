import { describe, expect, it } from 'vitest';
import { agentNetnsPath } from '../../../pkg/netns/host-proc.ts';

describe('agentNetnsPath', () => {
  it('reads /proc/PID/ns/net through the host /proc mount', () => {
    expect(agentNetnsPath('/proc/4242/ns/net', '/host/proc')).toBe('/host/proc/4242/ns/net');
    expect(agentNetnsPath('/proc/4242/ns/net', '/host/proc/')).toBe('/host/proc/4242/ns/net');
  });

  it('opens pinned namespaces, and everything without a mount, as given', () => {
    expect(agentNetnsPath('/var/run/netns/cni-1234', '/host/proc')).toBe('/var/run/netns/cni-1234');
    expect(agentNetnsPath('/run/netns/x', '/host/proc')).toBe('/run/netns/x');
    expect(agentNetnsPath('/procfoo/1/ns/net', '/host/proc')).toBe('/procfoo/1/ns/net');
    expect(agentNetnsPath('/proc/4242/ns/net', '')).toBe('/proc/4242/ns/net');
  });
});
