/**
 * Bad input through the REAL CNI binary (dist/bin/trellis) against a running agent: every case must
 * fail with the exact CNI code and a message that names what was wrong, leave nothing behind (leases
 * and reservations on disk, spool files, host veths, protocol-126 routes), and the agent must write
 * exactly one log line with that code for each call that reached it (none for calls the shim
 * rejects on its own).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  builtSkipReason,
  type CniCall,
  type PluginRun,
  runPlugin,
  SHIM_BINARY,
} from '../../support/cni-driver.ts';
import { netnsSkipReason } from '../../support/netns.ts';
import { type AddResult, containerId, NodeHarness, podAddr, V6_CIDR } from '../datapath/harness.ts';
import {
  addLivePod,
  callLines,
  holdings,
  type LivePod,
  livePodLosses,
  rawExchange,
  requestLine,
  waitFor,
} from './support.ts';

const skip = netnsSkipReason ?? builtSkipReason();

/** A /29 has 5 usable pod addresses here (network, broadcast and the range's first host are not handed out). */
const TINY_V4 = '10.244.9.0/29';
const TINY_CAPACITY = 5;

interface Case {
  name: string;
  /** The CNI call; netns may name a fixture via {FIXTURE}. */
  call: CniCall;
  /** The raw stdin; a function gets the harness's good config to derive from. */
  stdin: (good: Record<string, unknown>) => string;
  code: number;
  /** What the message must name. */
  msg: RegExp;
  /** Where the call is rejected: the shim on its own, or the agent (which then logs it). */
  by: 'shim' | 'agent';
}

const json = (o: unknown): string => JSON.stringify(o);
const without = (o: Record<string, unknown>, key: string): Record<string, unknown> => {
  const copy = { ...o };
  delete copy[key];
  return copy;
};

describe.skipIf(skip !== undefined)(
  `bad input through the real CNI binary${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    const node = new NodeHarness([TINY_V4, V6_CIDR]);
    let fixtures = '';
    let pod = '';
    /** Up through every bad call: holdings() before and after each includes it, so any loss shows. */
    let live!: LivePod;
    const marker = join(tmpdir(), `trl-rel-marker-${process.pid}`);

    beforeAll(async () => {
      await node.start();
      fixtures = mkdtempSync(join(tmpdir(), 'trl-rel-fixtures-'));
      writeFileSync(join(fixtures, 'regular'), 'not a namespace\n');
      mkdirSync(join(fixtures, 'adir'));
      execFileSync('mkfifo', [join(fixtures, 'fifo')]);
      pod = node.podNs().path;
      live = await addLivePod(node);
    });
    afterAll(async () => {
      await node.stop();
      rmSync(fixtures, { recursive: true, force: true });
      rmSync(marker, { force: true });
    });

    const id = containerId();
    const add = (over: Partial<CniCall> = {}): CniCall => ({
      command: 'ADD',
      containerId: id,
      netns: '{POD}',
      ifname: 'eth0',
      args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad',
      ...over,
    });
    const good = (g: Record<string, unknown>): string => json(g);
    const v11 = (g: Record<string, unknown>): Record<string, unknown> => ({ ...g, cniVersion: '1.1.0' });

    const cases: Case[] = [
      // stdin: not a JSON object
      { name: 'empty stdin', call: add(), stdin: () => '', code: 6, msg: /not valid JSON/, by: 'shim' },
      {
        name: 'truncated JSON',
        call: add(),
        stdin: (g) => json(g).slice(0, 25),
        code: 6,
        msg: /not valid JSON/,
        by: 'shim',
      },
      {
        name: 'JSON cut inside a string',
        call: add(),
        stdin: () => '{"cniVersion":"1.0',
        code: 6,
        msg: /not valid JSON/,
        by: 'shim',
      },
      {
        name: 'trailing garbage',
        call: add(),
        stdin: (g) => `${json(g)}}`,
        code: 6,
        msg: /not valid JSON/,
        by: 'shim',
      },
      {
        name: 'binary bytes',
        call: add(),
        stdin: () => '\u0000\u0001\u00ff\u00fe',
        code: 6,
        msg: /not valid JSON/,
        by: 'shim',
      },
      {
        name: 'a JSON array',
        call: add(),
        stdin: () => '[]',
        code: 6,
        msg: /expected a JSON object, got/,
        by: 'shim',
      },
      {
        name: 'a JSON string',
        call: add(),
        stdin: () => '"trellis"',
        code: 6,
        msg: /expected a JSON object/,
        by: 'shim',
      },
      {
        name: 'JSON null',
        call: add(),
        stdin: () => 'null',
        code: 6,
        msg: /expected a JSON object/,
        by: 'shim',
      },
      {
        name: 'stdin over 1 MiB',
        call: add(),
        stdin: (g) => json({ ...g, padding: 'x'.repeat(1024 * 1024 + 10) }),
        code: 106,
        msg: /too large.*limit 1048576/,
        by: 'shim',
      },
      // required fields and types (validated by the agent)
      {
        name: 'missing cniVersion',
        call: add(),
        stdin: (g) => json(without(g, 'cniVersion')),
        code: 1,
        msg: /no cniVersion/,
        by: 'agent',
      },
      {
        name: 'cniVersion a number',
        call: add(),
        stdin: (g) => json({ ...g, cniVersion: 1 }),
        code: 7,
        msg: /cniVersion must be a string/,
        by: 'agent',
      },
      {
        name: 'unsupported cniVersion 0.1.0',
        call: add(),
        stdin: (g) => json({ ...g, cniVersion: '0.1.0' }),
        code: 1,
        msg: /"0\.1\.0"/,
        by: 'agent',
      },
      {
        name: 'future cniVersion 9.9.9',
        call: add(),
        stdin: (g) => json({ ...g, cniVersion: '9.9.9' }),
        code: 1,
        msg: /"9\.9\.9"/,
        by: 'agent',
      },
      {
        name: 'cniVersion not a version',
        call: add(),
        stdin: (g) => json({ ...g, cniVersion: 'latest' }),
        code: 1,
        msg: /"latest"/,
        by: 'agent',
      },
      {
        name: 'missing name',
        call: add(),
        stdin: (g) => json(without(g, 'name')),
        code: 7,
        msg: /name is required/,
        by: 'agent',
      },
      {
        name: 'name a number',
        call: add(),
        stdin: (g) => json({ ...g, name: 42 }),
        code: 7,
        msg: /name must be a string/,
        by: 'agent',
      },
      {
        name: 'name with a slash',
        call: add(),
        stdin: (g) => json({ ...g, name: '../net' }),
        code: 7,
        msg: /name "\.\.\/net"/,
        by: 'agent',
      },
      {
        name: 'missing type',
        call: add(),
        stdin: (g) => json(without(g, 'type')),
        code: 7,
        msg: /type is required/,
        by: 'agent',
      },
      {
        name: 'mtu a string',
        call: add(),
        stdin: (g) => json({ ...g, mtu: '1500' }),
        code: 7,
        msg: /mtu must be an integer/,
        by: 'agent',
      },
      {
        name: 'mtu below 68',
        call: add(),
        stdin: (g) => json({ ...g, mtu: 10 }),
        code: 7,
        msg: /mtu must be an integer from 68/,
        by: 'agent',
      },
      {
        // The node gives pods IPv6 (the harness is dual-stack): the kernel turns IPv6 off below 1280.
        name: 'mtu below IPv6 minimum on a node with IPv6 pods',
        call: add(),
        stdin: (g) => json({ ...g, mtu: 1279 }),
        code: 7,
        msg: /mtu 1279 is below 1280, the smallest MTU IPv6 runs on/,
        by: 'agent',
      },
      {
        name: 'dns not an object',
        call: add(),
        stdin: (g) => json({ ...g, dns: 'x' }),
        code: 7,
        msg: /dns/,
        by: 'agent',
      },
      {
        name: 'socket a relative path',
        call: add(),
        stdin: (g) => json({ ...g, socket: 'cni.sock' }),
        code: 7,
        msg: /"socket" must be an absolute path/,
        by: 'shim',
      },
      {
        name: 'timeoutMs 0',
        call: add(),
        stdin: (g) => json({ ...g, timeoutMs: 0 }),
        code: 7,
        msg: /"timeoutMs" must be an integer/,
        by: 'shim',
      },
      // environment
      {
        name: 'no CNI_COMMAND',
        call: add({ env: { CNI_COMMAND: undefined } }),
        stdin: good,
        code: 4,
        msg: /CNI_COMMAND is required/,
        by: 'shim',
      },
      {
        name: 'unknown verb',
        call: add({ command: 'FROB' as CniCall['command'] }),
        stdin: good,
        code: 4,
        msg: /unknown CNI_COMMAND "FROB"/,
        by: 'shim',
      },
      {
        name: 'lower-case verb',
        call: add({ command: 'add' as CniCall['command'] }),
        stdin: good,
        code: 4,
        msg: /unknown CNI_COMMAND "add"/,
        by: 'shim',
      },
      {
        name: 'ADD without CNI_CONTAINERID',
        call: add({ containerId: undefined }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID is required for ADD/,
        by: 'agent',
      },
      {
        name: 'ADD without CNI_NETNS',
        call: add({ netns: undefined }),
        stdin: good,
        code: 4,
        msg: /CNI_NETNS is required for ADD/,
        by: 'agent',
      },
      {
        name: 'ADD without CNI_IFNAME',
        call: add({ ifname: undefined }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME is required for ADD/,
        by: 'agent',
      },
      {
        name: 'DEL without CNI_IFNAME',
        call: add({ command: 'DEL', ifname: undefined }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME is required for DEL/,
        by: 'agent',
      },
      {
        name: 'CNI_IFNAME 16 bytes',
        call: add({ ifname: 'eth0123456789abc' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "eth0123456789abc" is 16 bytes long/,
        by: 'agent',
      },
      {
        name: "CNI_IFNAME with '/'",
        call: add({ ifname: 'a/../b' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "a\/\.\.\/b" contains '\/'/,
        by: 'agent',
      },
      {
        name: 'CNI_IFNAME ".."',
        call: add({ ifname: '..' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "\.\." must not be/,
        by: 'agent',
      },
      {
        name: 'CNI_IFNAME with a space',
        call: add({ ifname: 'eth 0' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "eth 0" contains whitespace/,
        by: 'agent',
      },
      // Valid for the kernel and the spec, refused by the agent before it can become a file name.
      {
        name: 'CNI_IFNAME with shell metacharacters',
        call: add({ ifname: 'e$(id)`x`' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "e\$\(id\)`x`": trellis takes 1-15 letters/,
        by: 'agent',
      },
      // Linux and the spec take it; trellis keeps its lease file names in the alphabet that earlier
      // releases load back (a rollback must not quarantine a running pod's lease and sweep its veth).
      {
        name: "CNI_IFNAME with '@'",
        call: add({ ifname: 'e@1' }),
        stdin: good,
        code: 4,
        msg: /CNI_IFNAME "e@1": trellis takes 1-15 letters, digits, '_', '\.', '-', starting with a letter or digit/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID of 193 characters',
        call: add({ containerId: `c${'0'.repeat(192)}` }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID is 193 characters long; trellis takes at most 192/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID path traversal',
        call: add({ containerId: '../../../../etc/passwd' }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd"/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID with a slash',
        call: add({ containerId: 'abc/def' }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "abc\/def"/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID command substitution',
        call: add({ containerId: `a$(touch ${marker})` }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "a\$\(touch/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID with ; and spaces',
        call: add({ containerId: 'a;rm -rf /' }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "a;rm -rf \/"/,
        by: 'agent',
      },
      {
        name: 'CNI_CONTAINERID with a newline',
        call: add({ containerId: 'abc\ndef' }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "abc\\ndef"/,
        by: 'agent',
      },
      {
        name: 'DEL with a traversal CNI_CONTAINERID',
        call: add({ command: 'DEL', containerId: '../spool/x' }),
        stdin: good,
        code: 4,
        msg: /CNI_CONTAINERID "\.\.\/spool\/x"/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS relative',
        call: add({ netns: 'var/run/netns/x' }),
        stdin: good,
        code: 4,
        msg: /CNI_NETNS "var\/run\/netns\/x" is not an absolute path/,
        by: 'agent',
      },
      {
        name: 'CNI_ARGS without "="',
        call: add({ args: 'K8S_POD_NAME' }),
        stdin: good,
        code: 4,
        msg: /CNI_ARGS/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS does not exist',
        call: add({ netns: '/var/run/netns/trl-no-such-ns' }),
        stdin: good,
        code: 102,
        msg: /\/var\/run\/netns\/trl-no-such-ns does not exist or is not a network namespace/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS a regular file',
        call: add({ netns: '{FIXTURES}/regular' }),
        stdin: good,
        code: 102,
        msg: /regular does not exist or is not a network namespace/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS a directory',
        call: add({ netns: '{FIXTURES}/adir' }),
        stdin: good,
        code: 102,
        msg: /adir does not exist or is not a network namespace/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS a FIFO (must not block)',
        call: add({ netns: '{FIXTURES}/fifo' }),
        stdin: good,
        code: 102,
        msg: /fifo does not exist or is not a network namespace/,
        by: 'agent',
      },
      {
        name: 'CNI_NETNS a UTS namespace',
        call: add({ netns: '/proc/self/ns/uts' }),
        stdin: good,
        code: 102,
        msg: /\/proc\/self\/ns\/uts does not exist or is not a network namespace/,
        by: 'agent',
      },
      {
        name: "CNI_NETNS the agent's own namespace",
        call: add({ netns: '/proc/self/ns/net' }),
        stdin: good,
        code: 4,
        msg: /CNI_NETNS \/proc\/self\/ns\/net: it is the host's own network namespace/,
        by: 'agent',
      },
      // verbs and their versions
      {
        name: 'CHECK without prevResult',
        call: add({ command: 'CHECK' }),
        stdin: good,
        code: 7,
        msg: /prevResult is required for CHECK/,
        by: 'agent',
      },
      {
        name: 'CHECK with prevResult.ips not a list',
        call: add({ command: 'CHECK' }),
        stdin: (g) => json({ ...g, prevResult: { cniVersion: '1.0.0', ips: 'x' } }),
        code: 7,
        msg: /prevResult\.ips/,
        by: 'agent',
      },
      {
        name: 'CHECK with a prevResult address that is not an IP',
        call: add({ command: 'CHECK' }),
        stdin: (g) =>
          json({ ...g, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.1.2.300/32' }] } }),
        code: 7,
        msg: /prevResult\.ips\[0\]\.address/,
        by: 'agent',
      },
      {
        name: 'CHECK with cniVersion 0.3.1',
        call: add({ command: 'CHECK' }),
        stdin: (g) => json({ ...g, cniVersion: '0.3.1' }),
        code: 1,
        msg: /does not allow CHECK \(needs 0\.4\.0/,
        by: 'agent',
      },
      {
        name: 'GC with a malformed attachment list',
        call: { command: 'GC' },
        stdin: (g) => json({ ...v11(g), 'cni.dev/valid-attachments': [{ containerID: 7 }, 'x'] }),
        code: 7,
        msg: /cni\.dev\/valid-attachments/,
        by: 'agent',
      },
      {
        name: 'GC with the list not an array',
        call: { command: 'GC' },
        stdin: (g) => json({ ...v11(g), 'cni.dev/valid-attachments': { a: 1 } }),
        code: 7,
        msg: /cni\.dev\/valid-attachments/,
        by: 'agent',
      },
      {
        name: 'GC with cniVersion 1.0.0',
        call: { command: 'GC' },
        stdin: (g) => json({ ...g, 'cni.dev/valid-attachments': [] }),
        code: 1,
        msg: /does not allow GC \(needs 1\.1\.0/,
        by: 'agent',
      },
      {
        name: 'GC without CNI_PATH',
        call: { command: 'GC', env: { CNI_PATH: undefined } },
        stdin: (g) => json(v11(g)),
        code: 4,
        msg: /CNI_PATH is required for GC/,
        by: 'agent',
      },
      {
        name: 'STATUS with cniVersion 1.0.0',
        call: { command: 'STATUS' },
        stdin: good,
        code: 1,
        msg: /does not allow STATUS/,
        by: 'agent',
      },
    ];

    const resolve = (c: CniCall): CniCall => ({
      ...c,
      netns: c.netns?.replace('{POD}', pod).replace('{FIXTURES}', fixtures),
    });
    const run = (c: CniCall, stdin: string): Promise<PluginRun> =>
      runPlugin(SHIM_BINARY, { hostNetns: node.host.name, ...resolve(c) }, stdin);

    /**
     * Sends a VERSION straight to the agent and waits for its log line: every line the agent wrote
     * before it has then been read too (a call's line is written after its answer).
     */
    async function sentinel(): Promise<number> {
      const from = callLines(node).length;
      const sent = await rawExchange(node.agent.socket, requestLine({ CNI_COMMAND: 'VERSION' }, '{}'));
      expect(sent.answer).toContain('"ok":true');
      const seen = () =>
        callLines(node)
          .slice(from)
          .findIndex((l) => l.verb === 'VERSION');
      expect(await waitFor(() => seen() >= 0, 3000), 'the sentinel VERSION line never arrived').toBe(true);
      return from + seen();
    }

    /** The agent's call lines for what fn does, between two sentinels (none of an earlier call's). */
    async function linesDuring(fn: () => Promise<void>): Promise<Record<string, unknown>[]> {
      const from = (await sentinel()) + 1;
      await fn();
      const to = await sentinel();
      return callLines(node).slice(from, to);
    }

    it(`has at least 40 cases (${cases.length})`, () => {
      expect(cases.length).toBeGreaterThanOrEqual(40);
    });

    it.each(cases)('$name -> code $code', async (c) => {
      const before = holdings(node);
      let out!: PluginRun;
      const lines = await linesDuring(async () => {
        out = await run(c.call, c.stdin(node.conf()));
      });
      expect(out.code, out.stdout + out.stderr).toBe(1);
      const err = out.json as { code: number; msg: string; cniVersion: string };
      expect(err.code, out.stdout).toBe(c.code);
      expect(err.msg).toMatch(c.msg);
      expect(typeof err.cniVersion).toBe('string');
      // Only the CNI error object on stdout.
      expect(out.stdout.trim().split('\n')).toHaveLength(1);
      expect(holdings(node)).toEqual(before);
      if (c.by === 'agent') {
        expect(lines, JSON.stringify(lines)).toHaveLength(1);
        expect(lines[0]).toMatchObject({ code: c.code, outcome: 'error', level: 'warn' });
      } else {
        expect(lines, JSON.stringify(lines)).toHaveLength(0);
      }
      expect(existsSync(marker)).toBe(false);
    });

    it('DEL for a container the agent never saw succeeds and leaves nothing', async () => {
      const before = holdings(node);
      const lines = await linesDuring(async () => {
        const out = await run(add({ command: 'DEL', containerId: containerId() }), json(node.conf()));
        expect(out.code, out.stdout).toBe(0);
        expect(out.stdout).toBe('');
        const noNetns = await run(
          add({ command: 'DEL', containerId: containerId(), netns: '' }),
          json(node.conf()),
        );
        expect(noNetns.code, noNetns.stdout).toBe(0);
      });
      expect(lines.map((l) => [l.verb, l.outcome])).toEqual([
        ['DEL', 'ok'],
        ['DEL', 'ok'],
      ]);
      expect(holdings(node)).toEqual(before);
    });

    it('the live pod came through every case whole', async () => {
      expect(livePodLosses(node, live)).toEqual([]);
      // Gone before the pool-filling case below, which counts this node's leases and addresses.
      expect((await node.del(live.id, live.netns)).code).toBe(0);
    });

    it('ADD twice answers the same result and holds one lease; the exhausted pool fails with 101 and leaks nothing', async () => {
      const first = await node.add(node.podNs(), id);
      // The pod namespace of the first ADD is a fresh one; the repeat must name the same.
      const ns = (first.json as AddResult).interfaces[1]!.sandbox!;
      expect(first.code, first.stdout).toBe(0);
      const again = await run(add({ netns: ns }), json(node.conf()));
      expect(again.code, again.stdout).toBe(0);
      expect((again.json as AddResult).ips).toEqual((first.json as AddResult).ips);
      expect((again.json as AddResult).interfaces).toEqual((first.json as AddResult).interfaces);
      expect(holdings(node).leases).toHaveLength(1);

      // Fill the /29: every earlier failed case would show here as a missing address.
      const pods: { id: string; ns: string; v4: string }[] = [
        { id, ns, v4: podAddr(first.json as AddResult, 4) },
      ];
      for (let i = 1; i < TINY_CAPACITY; i++) {
        const p = node.podNs();
        const cid = containerId();
        const r = await node.add(p, cid);
        expect(r.code, r.stdout).toBe(0);
        pods.push({ id: cid, ns: p.path, v4: podAddr(r.json as AddResult, 4) });
      }
      expect(new Set(pods.map((p) => p.v4)).size).toBe(TINY_CAPACITY);
      const full = holdings(node);
      const lines = await linesDuring(async () => {
        const r = await node.add(node.podNs(), containerId());
        expect(r.code).toBe(1);
        expect(r.json).toMatchObject({ code: 101 });
        expect((r.json as { msg: string }).msg).toMatch(/IPv4 range 10\.244\.9\.0\/29 is exhausted/);
      });
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ verb: 'ADD', code: 101 });
      // No v6 address was kept for the failed ADD either (all families or nothing).
      expect(holdings(node)).toEqual(full);

      // Free one: the next ADD gets exactly that address.
      const freed = pods[2]!;
      expect((await node.del(freed.id, freed.ns)).code).toBe(0);
      const next = await node.add(node.podNs(), containerId());
      expect(next.code, next.stdout).toBe(0);
      expect(podAddr(next.json as AddResult, 4)).toBe(freed.v4);
    });
  },
);
