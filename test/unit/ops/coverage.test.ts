import { describe, expect, it } from 'vitest';
import { type CoverageNode, coverage } from '../../../pkg/ops/coverage.ts';
import {
  AGENT_ANNOTATION,
  type AgentReport,
  encodeReport,
  STALE_AFTER_MS,
} from '../../../pkg/ops/node-report.ts';

const NOW = Date.parse('2026-11-29T06:00:00Z');

function node(name: string, podCIDRs: string[], report?: Partial<AgentReport> | string): CoverageNode {
  const annotations: Record<string, string> = { 'other.io/x': 'y' };
  if (typeof report === 'string') annotations[AGENT_ANNOTATION] = report;
  else if (report !== undefined) {
    annotations[AGENT_ANNOTATION] = encodeReport({
      version: '0.1.0',
      ready: true,
      heartbeat: '2026-11-29T05:55:00Z',
      peersMissing: 0,
      missing: [],
      ...report,
    });
  }
  return { name, podCIDRs, annotations };
}

describe('coverage', () => {
  it('a cluster where every node has a fresh ready report, a pod CIDR and no missing peers is covered', () => {
    const r = coverage(
      [node('b', ['10.244.2.0/24'], {}), node('a', ['10.244.1.0/24', 'fd00:1::/64'], {})],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.ok).toBe(true);
    expect(r.gaps).toBe(0);
    expect(r.nodes.map((n) => [n.node, n.agent, n.version])).toEqual([
      ['a', 'ready', '0.1.0'],
      ['b', 'ready', '0.1.0'],
    ]);
  });

  it('lists each kind of gap with a fix', () => {
    const r = coverage(
      [
        node('ok', ['10.244.1.0/24'], { missing: ['far/v4', 'nocidr'], peersMissing: 2 }),
        node('far', ['10.244.2.0/24'], {}),
        node('nocidr', [], { ready: false, reason: 'Node nocidr has no spec.podCIDRs yet' }),
        node('noagent', ['10.244.4.0/24']),
        node('stale', ['10.244.5.0/24'], { heartbeat: '2026-11-29T05:00:00Z' }),
        node('garbled', ['10.244.6.0/24'], '{not json'),
      ],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.ok).toBe(false);
    const by = Object.fromEntries(r.nodes.map((n) => [n.node, n]));
    expect(by.ok!.problems).toEqual([]);
    expect(by.far!.missingOn).toEqual(['ok/v4']);
    expect(by.far!.problems[0]!.problem).toMatch(/not routed from 1 node\(s\): ok\/v4/);
    expect(by.nocidr!.agent).toBe('not-ready');
    // Its peers report it unrouted; with no pod CIDR that says nothing more than its own finding.
    expect(by.nocidr!.missingOn).toEqual(['ok']);
    expect(by.nocidr!.problems.map((p) => p.problem)).toEqual([
      'the node has no pod CIDR (spec.podCIDRs is empty)',
      'the agent is not ready: Node nocidr has no spec.podCIDRs yet',
    ]);
    expect(by.nocidr!.problems[0]!.fix).toMatch(/--allocate-node-cidrs/);
    expect(by.noagent!.agent).toBe('absent');
    expect(by.noagent!.problems[0]!.fix).toMatch(/spec\.nodeName=noagent/);
    expect(by.stale!.agent).toBe('stale');
    expect(by.stale!.problems[0]!.problem).toMatch(/60 min old \(limit 30 min\)/);
    expect(by.garbled!.agent).toBe('invalid');
    expect(r.gaps).toBe(5);
  });

  it('a stale reporter vouches for nothing: its missing list is ignored', () => {
    const r = coverage(
      [
        node('old', ['10.244.1.0/24'], {
          heartbeat: '2026-11-28T00:00:00Z',
          missing: ['b'],
          peersMissing: 1,
        }),
        node('b', ['10.244.2.0/24'], {}),
      ],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.nodes.find((n) => n.node === 'b')!.missingOn).toEqual([]);
  });

  it('says so when a reporter lists fewer names than it counts', () => {
    const r = coverage(
      [
        node('a', ['10.244.1.0/24'], { missing: ['b/v4'], peersMissing: 30 }),
        node('b', ['10.244.2.0/24'], {}),
      ],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.nodes[0]!.problems[0]!.problem).toMatch(
      /reports 30 peers without routes; only the first 1 are named/,
    );
  });

  it('a node whose last pass failed is a gap, and its last good missing list still counts', () => {
    const r = coverage(
      [
        node('a', ['10.244.1.0/24'], {
          missing: ['b/v4'],
          peersMissing: 1,
          lastPass: 'failed: listing routes: EBUSY',
        }),
        node('b', ['10.244.2.0/24'], {}),
      ],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.ok).toBe(false);
    expect(r.nodes[0]!.agent).toBe('ready');
    expect(r.nodes[0]!.problems.map((p) => p.problem)).toEqual([
      "the agent's last reconcile pass did not succeed (failed: listing routes: EBUSY): the peers it reports unrouted are those of its last good pass",
    ]);
    expect(r.nodes[1]!.missingOn).toEqual(['a/v4']);
  });

  it('a node whose reconcile loop is stuck is a gap, said as such', () => {
    const r = coverage(
      [
        node('a', ['10.244.1.0/24'], { lastPass: 'stuck: a full pass under way since 2026-12-06T10:00:00Z' }),
        node('b', ['10.244.2.0/24'], {}),
      ],
      NOW,
      STALE_AFTER_MS,
    );
    expect(r.ok).toBe(false);
    expect(r.nodes[0]!.problems.map((p) => p.problem)).toEqual([
      "the agent's reconcile loop is stuck (a full pass under way since 2026-12-06T10:00:00Z): no Node change is applied on this node until it ends",
    ]);
  });
});
