/**
 * The agent's CNI handler (createCniService().handle) for arbitrary requests: it never throws or
 * rejects, always answers ok or a known CNI code, and never touches the datapath (kernel, IPAM)
 * unless the CNI environment is valid. And whatever container id and interface name get through
 * that validation are safe as file names (lease owner, spool file) and interface names.
 */
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createCniService } from '../../../pkg/agent/cni-service.ts';
import { parseCniEnv } from '../../../pkg/cni/env.ts';
import { CniCode } from '../../../pkg/cni/errors.ts';
import { KeyedMutex } from '../../../pkg/datapath/keyed-mutex.ts';
import { hostVethName, isHostVethName } from '../../../pkg/datapath/names.ts';
import type { DatapathDeps } from '../../../pkg/datapath/types.ts';
import { keyProblem, ownerName } from '../../../pkg/ipam/key.ts';
import { createLogger } from '../../../pkg/observe/logger.ts';
import { spoolFileName } from '../../../pkg/shim/spool.ts';

const KNOWN = new Set<number>(Object.values(CniCode));

/** Every datapath port is a trap: any use is recorded (and fails, which the handler must absorb). */
function trappedDatapath(touched: string[]): DatapathDeps {
  const trap = (name: string): never =>
    new Proxy(
      {},
      {
        get: (_t, prop) => {
          if (prop === 'then') return undefined;
          return () => {
            touched.push(`${name}.${String(prop)}`);
            throw new Error(`${name}.${String(prop)} touched`);
          };
        },
      },
    ) as never;
  return { host: trap('host'), netns: trap('netns'), ipam: trap('ipam'), deleter: trap('deleter') };
}

const verb = fc.oneof(
  fc.constantFrom('ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'),
  fc.string({ maxLength: 8 }),
);
const nameLike = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.constantFrom(
    'eth0',
    '..',
    '.',
    'a/b',
    '../../etc/passwd',
    'x;rm -rf /',
    '$(id)',
    'a b',
    'e\u0000',
    'abc',
    'A'.repeat(300),
  ),
  fc.string({ unit: fc.constantFrom(...'abcdef0123456789._-/$;`'), minLength: 1, maxLength: 70 }),
);
const randomEnv = fc.record(
  {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: nameLike,
    CNI_NETNS: fc.oneof(
      fc.constantFrom('/var/run/netns/x', '', 'rel/path', '/proc/self/ns/net'),
      fc.string(),
    ),
    CNI_IFNAME: nameLike,
    CNI_ARGS: fc.oneof(fc.constant('IgnoreUnknown=1;K8S_POD_NAME=a'), fc.string({ maxLength: 40 })),
    CNI_PATH: fc.constantFrom('/opt/cni/bin', ''),
  },
  { requiredKeys: [] },
);
/** Well-formed calls of every verb, so the datapath path is exercised too. */
const validEnv = fc.record({
  CNI_COMMAND: fc.constantFrom('ADD', 'DEL', 'CHECK', 'GC', 'STATUS'),
  CNI_CONTAINERID: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 1, maxLength: 64 }),
  CNI_NETNS: fc.constant('/var/run/netns/x'),
  CNI_IFNAME: fc.constantFrom('eth0', 'net1'),
  CNI_PATH: fc.constant('/opt/cni/bin'),
});
const envArb = fc.oneof(randomEnv, validEnv);
const validConf = fc
  .record({
    cniVersion: fc.constant('1.1.0'),
    name: fc.constant('trellis'),
    type: fc.constant('trellis'),
    'cni.dev/valid-attachments': fc.constant([]),
  })
  .map((o) => JSON.stringify(o));
const stdinArb = fc.oneof(
  validConf,
  fc.string({ maxLength: 100 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        cniVersion: fc.constantFrom('1.0.0', '1.1.0', '0.4.0', '0.3.1', 9),
        name: fc.constantFrom('trellis', '', 'a/b'),
        type: fc.constant('trellis'),
        prevResult: fc.jsonValue({ maxDepth: 2 }),
        'cni.dev/valid-attachments': fc.jsonValue({ maxDepth: 2 }),
      },
      { requiredKeys: ['cniVersion', 'name', 'type'] },
    )
    .map((o) => JSON.stringify(o)),
);

describe('the agent CNI handler under arbitrary requests', () => {
  it('never rejects, answers a known code, and leaves the datapath alone unless the environment is valid', async () => {
    let reachedDatapath = 0;
    await fc.assert(
      fc.asyncProperty(envArb, stdinArb, async (env, stdin) => {
        const touched: string[] = [];
        const { handle } = createCniService({
          datapath: trappedDatapath(touched),
          mutex: new KeyedMutex(),
          log: createLogger({ level: 'silent', destination: new PassThrough() }),
          readiness: { notReadyReason: () => undefined },
          defaultMtu: () => 1500,
        });
        const response = await handle({ v: 1, env, stdin });
        if (!response.ok) expect(KNOWN.has(response.error.code), JSON.stringify(response)).toBe(true);
        let envValid = true;
        try {
          parseCniEnv(env);
        } catch {
          envValid = false;
        }
        if (!envValid) expect(touched).toEqual([]);
        if (touched.length > 0) reachedDatapath++;
      }),
      { numRuns: 1500 },
    );
    // The generators do produce valid calls (whose datapath failure must become a CNI error too).
    expect(reachedDatapath).toBeGreaterThan(0);
  });

  it('any container id and ifname the agent accepts stays inside its directories and is a valid link name', () => {
    fc.assert(
      fc.property(nameLike, nameLike, (containerId, ifname) => {
        let accepted = true;
        try {
          parseCniEnv({
            CNI_COMMAND: 'ADD',
            CNI_CONTAINERID: containerId,
            CNI_IFNAME: ifname,
            CNI_NETNS: '/x',
          });
        } catch {
          accepted = false;
        }
        if (accepted && keyProblem({ containerId, ifname }) === undefined) {
          const owner = `${ownerName({ containerId, ifname })}.json`;
          expect(owner).not.toContain('/');
          expect(owner).not.toContain('\0');
          expect(Buffer.byteLength(owner)).toBeLessThanOrEqual(255);
        }
        if (accepted) {
          const spool = spoolFileName(containerId, ifname);
          expect(spool).not.toContain('/');
          expect(['.', '..']).not.toContain(spool);
          expect(Buffer.byteLength(spool)).toBeLessThanOrEqual(255);
        }
        expect(isHostVethName(hostVethName(containerId, ifname))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });
});
