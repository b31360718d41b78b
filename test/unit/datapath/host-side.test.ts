import { describe, expect, it } from 'vitest';
import { hostSideDrift, hostSideSteps, repairHostSides } from '../../../pkg/datapath/host-side.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import type { AddressInfo, LinkInfo, RouteInfo, SetUpStep } from '../../../pkg/datapath/ports.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';

const lease = (id: string, n: number): Lease => ({
  containerId: id,
  ifname: 'eth0',
  addresses: [
    { family: 4, address: `10.244.1.${n}`, range: '10.244.1.0/24' },
    { family: 6, address: `fd00:10:244:1::${n}`, range: 'fd00:10:244:1::/64' },
  ],
  createdAt: '2026-12-02T00:00:00Z',
});
const link = (id: string, index: number, up = true): LinkInfo => ({
  index,
  name: hostVethName(id, 'eth0'),
  kind: 'veth',
  mac: '02:00:00:00:00:01',
  mtu: 1500,
  up,
});
/** What ADD leaves for the pod on host end `index`. */
function complete(l: Lease, index: number): { routes: RouteInfo[]; addresses: AddressInfo[] } {
  const steps = hostSideSteps(index, l.addresses);
  return {
    routes: steps.flatMap((s) => (s.kind === 'route' ? [s.route] : [])),
    addresses: steps.flatMap((s) =>
      s.kind === 'address'
        ? [
            {
              family: s.address.family,
              ifindex: index,
              address: s.address.address,
              prefixLen: 64,
              scope: 'link' as const,
            },
          ]
        : [],
    ),
  };
}

describe('hostSideDrift', () => {
  const a = lease('aaa', 2);
  const b = lease('bbb', 3);
  const ka = complete(a, 7);
  const kb = complete(b, 8);

  it('nothing when every host end holds what ADD gave it', () => {
    const drift = hostSideDrift(
      [a, b],
      [link('aaa', 7), link('bbb', 8)],
      [...ka.routes, ...kb.routes],
      [...ka.addresses, ...kb.addresses],
      new Set(),
    );
    expect(drift).toEqual([]);
  });

  it('names what one pod lost: its routes (a flush), the IPv6 gateway and up (down and up again)', () => {
    const drift = hostSideDrift(
      [a, b],
      [link('aaa', 7, false), link('bbb', 8)],
      [...kb.routes],
      [ka.addresses[0]!, ...kb.addresses],
      new Set(),
    );
    expect(drift.map((d) => [d.lease.containerId, d.missing])).toEqual([
      ['aaa', ['up', 'route 10.244.1.2/32', 'address fe80::1', 'route fd00:10:244:1::2/128']],
    ]);
  });

  it('leaves alone a lease without its host end (its pod is gone) and one with a CNI call in flight', () => {
    expect(hostSideDrift([a], [], [], [], new Set())).toEqual([]);
    expect(hostSideDrift([a], [link('aaa', 7)], [], [], new Set(['aaa\0eth0']))).toEqual([]);
  });
});

describe('repairHostSides', () => {
  const a = lease('aaa', 2);
  const b = lease('bbb', 3);
  /** A host whose pod ends lost everything but up; every setUp is recorded. */
  function host() {
    const applied: SetUpStep[][] = [];
    return {
      applied,
      port: {
        listLinks: async () => [link('aaa', 7), link('bbb', 8)],
        listAddresses: async () => [] as AddressInfo[],
        listRoutes: async () => [] as RouteInfo[],
        setUp: async (steps: readonly SetUpStep[]) => {
          applied.push([...steps]);
          return steps.map(() => 'done' as const);
        },
      },
    };
  }

  it('leaves alone a pod whose ADD was in flight when the listings started and ended during them', async () => {
    const h = host();
    const busy = new Set(['aaa\0eth0']);
    const listLinks = h.port.listLinks;
    h.port.listLinks = async () => {
      busy.delete('aaa\0eth0'); // the ADD finished: its routes are in, the listings do not show them
      return listLinks();
    };
    const out = await repairHostSides(h.port, [a, b], busy);
    expect(out.repaired.map((d) => d.lease.containerId)).toEqual(['bbb']);
  });

  it('repairs only what is still leased when its turn comes under the lock: a DEL that finished during the listings is left alone', async () => {
    const h = host();
    const asked: string[] = [];
    const out = await repairHostSides(h.port, [a, b], new Set(), async (l, put) => {
      asked.push(l.containerId);
      if (l.containerId === 'aaa') return false; // released meanwhile
      await put();
      return true;
    });
    expect(asked).toEqual(['aaa', 'bbb']);
    expect(out.repaired.map((d) => d.lease.containerId)).toEqual(['bbb']);
    expect(out.failed).toEqual([]);
    expect(h.applied).toHaveLength(1);
  });

  it('asks one lookup per pod address, not a dump, when every lookup vouches for its route', async () => {
    const ka = complete(a, 7);
    const kb = complete(b, 8);
    const asked: string[] = [];
    let dumps = 0;
    const out = await repairHostSides(
      {
        listLinks: async () => [link('aaa', 7), link('bbb', 8)],
        listAddresses: async () => [...ka.addresses, ...kb.addresses],
        listRoutes: async () => {
          dumps++;
          return [...ka.routes, ...kb.routes];
        },
        answersFor: async (r: RouteInfo) => {
          asked.push(`${r.ifindex} ${r.dst} ${r.protocol}`);
          return true;
        },
        setUp: async () => [],
      },
      [a, b],
      new Set(['bbb\0eth0']), // a call in flight is looked up too: it may have ended before the drift is judged
    );
    expect(out.repaired).toEqual([]);
    expect(dumps).toBe(0);
    expect(asked).toEqual([
      '7 10.244.1.2/32 126',
      '7 fd00:10:244:1::2/128 126',
      '8 10.244.1.3/32 126',
      '8 fd00:10:244:1::3/128 126',
    ]);
  });

  it('dumps both families when one lookup cannot vouch for its route, and the dump names what is missing', async () => {
    const ka = complete(a, 7);
    const kb = complete(b, 8);
    const families: (number | undefined)[] = [];
    const out = await repairHostSides(
      {
        listLinks: async () => [link('aaa', 7), link('bbb', 8)],
        listAddresses: async () => [...ka.addresses, ...kb.addresses],
        // bbb's IPv6 route deleted by hand: the lookup finds another entry answering.
        listRoutes: async (f?: { family?: number }) => {
          families.push(f?.family);
          return [...ka.routes, ...kb.routes].filter(
            (r) => r.family === f?.family && r.dst !== 'fd00:10:244:1::3/128',
          );
        },
        answersFor: async (r: RouteInfo) => r.dst !== 'fd00:10:244:1::3/128',
        setUp: async (steps: readonly SetUpStep[]) => steps.map(() => 'kept' as const),
      },
      [a, b],
      new Set(),
    );
    expect(families).toEqual([4, 6]);
    expect(out.repaired.map((d) => [d.lease.containerId, d.missing])).toEqual([
      ['bbb', ['route fd00:10:244:1::3/128']],
    ]);
  });

  it('names a gateway address the put found gone though the listings had it (the veth set down after them)', async () => {
    const ka = complete(a, 7);
    const put: SetUpStep[][] = [];
    const out = await repairHostSides(
      {
        listLinks: async () => [link('aaa', 7)],
        listAddresses: async () => ka.addresses, // read before the veth went down
        listRoutes: async () => [] as RouteInfo[],
        // The kernel added the IPv6 gateway (gone by then) and kept the IPv4 one.
        setUp: async (steps: readonly SetUpStep[]) => {
          put.push([...steps]);
          return steps.map((s) => (s.kind === 'address' && s.address.family === 4 ? 'kept' : 'done'));
        },
      },
      [a],
      new Set(),
    );
    expect(put).toHaveLength(1);
    expect(out.repaired.map((d) => d.missing)).toEqual([
      ['route 10.244.1.2/32', 'route fd00:10:244:1::2/128', 'address fe80::1'],
    ]);
  });
});
