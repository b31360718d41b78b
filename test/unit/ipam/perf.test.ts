import { afterEach, describe, expect, it } from 'vitest';
import { openIpam } from '../../../pkg/ipam/index.ts';
import { cleanupTempDirs, tempDir } from './helpers.ts';

/**
 * Measures what one durable allocate and release cost on this disk (fsyncs included) and prints it.
 * Timing is not asserted: it depends on the disk and on what else runs; the numbers are for reading.
 */

afterEach(cleanupTempDirs);

function stats(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!.toFixed(3);
  const mean = (s.reduce((a, b) => a + b, 0) / s.length).toFixed(3);
  return `median ${at(0.5)} ms, p90 ${at(0.9)} ms, p99 ${at(0.99)} ms, mean ${mean} ms (n=${s.length})`;
}

describe('IPAM cost per call (printed, not asserted)', () => {
  it('allocate and release, dual-stack, with 110 pods on the node', () => {
    const ipam = openIpam({ dir: tempDir('perf'), ranges: ['10.244.0.0/24', 'fd00:10:244::/64'] });
    for (let i = 0; i < 110; i++) ipam.allocate({ containerId: `base${i}`, ifname: 'eth0' });
    const alloc: number[] = [];
    const release: number[] = [];
    for (let round = 0; round < 100; round++) {
      const key = { containerId: `churn${round}`, ifname: 'eth0' };
      let t = performance.now();
      ipam.allocate(key, { podNamespace: 'default', podName: `p${round}`, netns: '/var/run/netns/cni-x' });
      alloc.push(performance.now() - t);
      t = performance.now();
      ipam.release(key);
      release.push(performance.now() - t);
    }
    const t = performance.now();
    openIpam({ dir: tempDir('perf'), ranges: ['10.244.0.0/24'] });
    const openEmpty = performance.now() - t;
    console.log(`ipam allocate: ${stats(alloc)}`);
    console.log(`ipam release:  ${stats(release)}`);
    console.log(`ipam open (empty dir): ${openEmpty.toFixed(3)} ms`);
    expect(ipam.list()).toHaveLength(110);
  }, 120_000);
});
