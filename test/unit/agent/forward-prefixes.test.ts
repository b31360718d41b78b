import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ForwardPrefixes } from '../../../pkg/agent/forward-prefixes.ts';

function setup() {
  const lines: { level: number; msg: string; why?: string[]; oneByOne?: string[] }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const state = {
    accepted: undefined as string[] | undefined,
    nodeIPs: ['10.100.0.11', '10.100.0.12'],
    connected: ['10.100.0.0/24'] as readonly string[] | Error,
  };
  const prefixes = new ForwardPrefixes({
    own: () => ['10.244.1.0/24'],
    accepted: () => state.accepted,
    nodeIPs: () => state.nodeIPs,
    connected: async () => {
      if (state.connected instanceof Error) throw state.connected;
      return state.connected;
    },
    log,
  });
  return { prefixes, state, lines };
}

describe('ForwardPrefixes', () => {
  it('nothing before the first full pass: a check then would take the wider accepts of the last run away', async () => {
    const { prefixes } = setup();
    expect(await prefixes.current()).toBeUndefined();
    expect(await prefixes.changed()).toBeUndefined();
  });

  it('the cover after a pass; changed() only when it moved', async () => {
    const { prefixes, state } = setup();
    state.accepted = ['10.244.1.0/24', '10.244.2.0/24'];
    expect(await prefixes.changed()).toEqual(['10.244.0.0/22']);
    expect(await prefixes.changed()).toBeUndefined();
    state.accepted.push('10.244.7.0/24');
    expect(await prefixes.changed()).toEqual(['10.244.0.0/21']);
  });

  it('a peer outside the cover, or an InternalIP moving into it, asks for a check; one inside does not', async () => {
    const { prefixes, state } = setup();
    expect(prefixes.peerChanged(['10.244.9.0/24'], [])).toBe(false); // nothing computed yet
    state.accepted = ['10.244.1.0/24', '10.244.2.0/24'];
    await prefixes.current();
    expect(prefixes.peerChanged(['10.244.3.0/24'], ['10.100.0.13'])).toBe(false);
    expect(prefixes.peerChanged(['10.244.9.0/24'], ['10.100.0.13'])).toBe(true);
    expect(prefixes.peerChanged(['10.244.3.0/24'], ['10.244.3.1'])).toBe(true);
  });

  it('a cover that would reach beyond the pods gives way to the pod CIDRs one by one, said once at info', async () => {
    const { prefixes, state, lines } = setup();
    state.accepted = ['10.244.1.0/24', '10.100.9.0/24'];
    expect(await prefixes.current()).toEqual(['10.100.9.0/24', '10.244.1.0/24']);
    expect(await prefixes.current()).toEqual(['10.100.9.0/24', '10.244.1.0/24']);
    expect(lines.filter((l) => l.level === 40)).toEqual([]);
    expect(lines.filter((l) => l.level === 30)).toMatchObject([
      {
        msg: "the host firewall's forward accepts match the cluster's pod network",
        oneByOne: ['10.0.0.0/8 holds the InternalIP 10.100.0.11 of a node'],
      },
    ]);
  });

  it("falls back to this node's pod CIDRs when one by one they are too many, says why once at warn, and when the cover is used again", async () => {
    const { prefixes, state, lines } = setup();
    // Ten scattered /24s joined with 10.100.0.0/24's node addresses in one 10.0.0.0/8.
    state.accepted = ['10.244.1.0/24', ...Array.from({ length: 9 }, (_, i) => `10.${100 + 2 * i}.9.0/24`)];
    expect(await prefixes.current()).toEqual(['10.244.1.0/24']);
    expect(await prefixes.current()).toEqual(['10.244.1.0/24']);
    const warned = lines.filter((l) => l.level === 40);
    expect(warned).toHaveLength(1);
    expect(warned[0]!.why).toEqual(['10.0.0.0/8 holds the InternalIP 10.100.0.11 of a node']);
    state.accepted = ['10.244.1.0/24', '10.244.2.0/24'];
    expect(await prefixes.current()).toEqual(['10.244.0.0/22']);
    expect(lines.filter((l) => l.level === 30).map((l) => l.msg)).toEqual([
      "the host firewall's forward accepts match the cluster's pod network",
    ]);
  });

  it('the links unreadable: the last answer, or with none none (the agent then checks its own pod CIDRs, deleting nothing)', async () => {
    const { prefixes, state } = setup();
    state.accepted = ['10.244.1.0/24', '10.244.2.0/24'];
    state.connected = new Error('RTM_GETADDR: EINTR');
    expect(await prefixes.current()).toBeUndefined();
    state.connected = ['10.100.0.0/24'];
    expect(await prefixes.current()).toEqual(['10.244.0.0/22']);
    state.connected = new Error('RTM_GETADDR: EINTR');
    expect(await prefixes.current()).toEqual(['10.244.0.0/22']);
    expect(await prefixes.changed()).toBeUndefined();
  });
});
