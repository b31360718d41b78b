import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createCniService } from '../../../pkg/agent/cni-service.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';

/** A datapath whose every call fails with `error`. */
function failingDatapath(error: Error): DatapathDeps {
  const failing = new Proxy(
    {},
    {
      get: (_t, prop) =>
        prop === 'then'
          ? undefined
          : () => {
              throw error;
            },
    },
  ) as never;
  return { host: failing, netns: failing, ipam: failing, deleter: failing };
}

async function logOf(error: Error): Promise<Record<string, unknown>> {
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (d: Buffer) => {
    for (const l of d.toString('utf8').trim().split('\n'))
      lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  const { handle } = createCniService({
    datapath: failingDatapath(error),
    mutex: new KeyedMutex(),
    log: createLogger({ level: 'info', destination: out }),
    readiness: { notReadyReason: () => undefined },
    defaultMtu: () => 1500,
  });
  const response = await handle({
    v: 1,
    env: {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c1',
      CNI_NETNS: '/var/run/netns/p1',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
    },
    stdin: JSON.stringify({ cniVersion: '1.0.0', name: 'trellis', type: 'trellis' }),
  });
  expect(response.ok).toBe(false);
  for (let i = 0; i < 20 && lines.length === 0; i++) await new Promise((r) => setImmediate(r));
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('the CNI call log line', () => {
  it('carries the details of a failed call, such as an undo that failed and what it left', async () => {
    const details = 'undo failed: release lease: IPAM state directory /var/lib/trellis/ipam: EROFS';
    const line = await logOf(new CniError(CniCode.NETLINK_FAILED, 'RTM_NEWLINK trl0123: ENOMEM', details));
    expect(line).toMatchObject({
      level: 'warn',
      msg: 'CNI ADD failed',
      pod: 'shop/web-1',
      code: CniCode.NETLINK_FAILED,
      error: 'RTM_NEWLINK trl0123: ENOMEM',
      details,
    });
    expect(line).not.toHaveProperty('stack');
  });

  it('an internal error carries its stack instead, at error level', async () => {
    const line = await logOf(new Error('boom'));
    expect(line).toMatchObject({ level: 'error', code: CniCode.INTERNAL });
    expect(String(line.stack)).toContain('boom');
    expect(line).not.toHaveProperty('details');
  });
});
