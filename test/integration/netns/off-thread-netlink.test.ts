import { afterEach, describe, expect, it } from 'vitest';
import { NLM_F, RTM } from '../../../pkg/netlink/constants.ts';
import {
  deleteLinkVia,
  ExistsError,
  type ExtendedNetlinkHandle,
  getLinkVia,
  LinkNotFoundError,
  NetlinkError,
  setUpVia,
} from '../../../pkg/netlink/index.ts';
import { getLinkByNameBody } from '../../../pkg/netlink/messages.ts';
import type { Exchange } from '../../../pkg/netlink/off-thread-requests.ts';
import { encodeMessage } from '../../../pkg/netlink/wire.ts';
import {
  createNetnsPort,
  openHostNetlink,
  openOffThreadNetlink,
  withNetns,
} from '../../../pkg/netns/index.ts';
import { ip, ipJson, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';

const links = (ns: string) => ipJson<{ ifname: string; ifindex: number }[]>(ns, 'link', 'show');

describe.skipIf(netnsSkipReason !== undefined)('off-thread link deletion (root, real namespaces)', () => {
  const pool = new NetnsPool();
  afterEach(() => pool.cleanup());
  const port = createNetnsPort();

  /** Namespaces A and B, a host handle opened in A and an fd of B (where veth peers go), closed after fn. */
  async function hostHandleInA(
    fn: (t: { a: TestNetns; b: TestNetns; handle: ExtendedNetlinkHandle; bFd: number }) => Promise<void>,
  ): Promise<void> {
    const a = pool.add('a');
    const b = pool.add('b');
    const handle = withNetns(a.path, () => openHostNetlink());
    const bFd = port.openNetnsFd(b.path);
    try {
      await fn({ a, b, handle, bFd });
    } finally {
      port.closeFd(bFd);
      handle.close();
    }
  }

  /**
   * Namespace A holding `pairs` veth pairs (va<i> with vb<i>) and an off-thread socket opened in it
   * (its sends then happen on another thread, which is in the test's namespace), closed after fn.
   */
  async function offThreadSocketInA(
    pairs: number,
    fn: (a: TestNetns, sock: ReturnType<typeof openOffThreadNetlink>) => Promise<void>,
  ): Promise<void> {
    const a = pool.add('a');
    for (let i = 0; i < pairs; i++)
      ip(a.name, 'link', 'add', `va${i}`, 'type', 'veth', 'peer', 'name', `vb${i}`);
    const sock = withNetns(a.path, () => openOffThreadNetlink());
    try {
      await fn(a, sock);
    } finally {
      sock.close();
    }
  }

  it('deletes a veth pair in the namespace the socket was opened in, with typed errors', async () => {
    await offThreadSocketInA(1, async (a, sock) => {
      const index = links(a.name).find((l) => l.ifname === 'va0')!.ifindex;
      await deleteLinkVia(sock.exchange, index);
      expect(links(a.name).map((l) => l.ifname)).toEqual(['lo']);
      await expect(deleteLinkVia(sock.exchange, index)).rejects.toBeInstanceOf(LinkNotFoundError);
    });
  });

  it("openHostNetlink's deleteLink leaves the JS thread free: another request completes while the kernel deletes", async () => {
    await hostHandleInA(async ({ a, handle, bFd }) => {
      // The kernel waits 15-33 ms inside a veth deletion; a pair is created in well under that. On
      // the JS thread the deletion would block the creation until it returned, every time. Off it,
      // the creation finishes first nearly every time: a few tries, since another test file's
      // netlink work beside this one can make one deletion quick.
      const orders: string[][] = [];
      for (let i = 0; i < 5 && orders.at(-1)?.[0] !== 'created'; i++) {
        ip(a.name, 'link', 'add', `va${i}`, 'type', 'veth', 'peer', 'name', `vb${i}`);
        const victim = (await handle.getLink(`va${i}`))!;
        const order: string[] = [];
        const deleting = handle.deleteLink(victim.index).then(() => order.push('deleted'));
        await handle.createVeth({
          name: `vc${i}`,
          mtu: 1500,
          peerName: `vd${i}`,
          peerNetnsFd: bFd,
          peerMtu: 1500,
        });
        order.push('created');
        await deleting;
        orders.push(order);
        const names = links(a.name).map((l) => l.ifname);
        expect(names).toContain(`vc${i}`);
        expect(names).not.toContain(`va${i}`);
        await expect(handle.deleteLink(victim.index)).rejects.toBeInstanceOf(LinkNotFoundError);
      }
      expect(orders.at(-1), JSON.stringify(orders)).toEqual(['created', 'deleted']);
    });
  });

  it("openHostNetlink's deleteLink does not queue behind deleteLinkInBackground's burst (a node drain)", async () => {
    await hostHandleInA(async ({ a, handle }) => {
      // 30 background deletions (15-33 ms each in the kernel) and then one an ADD waits for. On one
      // socket it would answer after all 30, every time; on its own it contends only for the
      // kernel's lock, between two of them.
      const burst = 30;
      for (let i = 0; i <= burst; i++)
        ip(a.name, 'link', 'add', `va${i}`, 'type', 'veth', 'peer', 'name', `vb${i}`);
      const index = new Map(links(a.name).map((l) => [l.ifname, l.ifindex]));
      let doneInBackground = 0;
      const background = Array.from({ length: burst }, (_, i) =>
        handle.deleteLinkInBackground!(index.get(`va${i}`)!).then(() => doneInBackground++),
      );
      await new Promise((r) => setTimeout(r, 20)); // the burst under way
      await handle.deleteLink(index.get(`va${burst}`)!);
      const doneBefore = doneInBackground;
      await Promise.all(background);
      expect(doneBefore).toBeLessThan(burst);
      expect(links(a.name).map((l) => l.ifname)).toEqual(['lo']);
    });
  });

  it("openHostNetlink's createVeth makes the pair with the peer in the target namespace, typed EEXIST", async () => {
    await hostHandleInA(async ({ a, b, handle, bFd }) => {
      const spec = { name: 've0', mtu: 1400, peerName: 'eth0', peerNetnsFd: bFd, peerMtu: 1400 };
      // Several at once: each is its own request on the creation socket, serialized there.
      await Promise.all([spec, { ...spec, name: 've1', peerName: 'eth1' }].map((s) => handle.createVeth(s)));
      expect(
        links(a.name)
          .map((l) => l.ifname)
          .sort(),
      ).toEqual(['lo', 've0', 've1']);
      const inB = ipJson<{ ifname: string; mtu: number }[]>(b.name, 'link', 'show');
      expect(inB.filter((l) => l.ifname.startsWith('eth')).map((l) => [l.ifname, l.mtu])).toEqual([
        ['eth0', 1400],
        ['eth1', 1400],
      ]);
      await expect(handle.createVeth(spec)).rejects.toBeInstanceOf(ExistsError);
    });
  });

  it("openHostNetlink's createVeth resolves with the host end as the kernel echoes it, the peer's index and the MAC asked for", async () => {
    await hostHandleInA(async ({ a, b, handle, bFd }) => {
      // Indexes that differ: some kernels leave IFLA_LINK out when the two are equal (ADD then looks
      // the peer up); this one reports it either way.
      ip(b.name, 'link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'x1');
      const peerMac = '02:11:22:33:44:55';
      const spec = { name: 've0', mtu: 1400, peerName: 'eth0', peerNetnsFd: bFd, peerMtu: 1380, peerMac };
      const echoed = await handle.createVeth(spec);
      const inA = ipJson<{ ifname: string; ifindex: number; address: string; mtu: number }[]>(
        a.name,
        'link',
        'show',
        've0',
      )[0]!;
      const inB = ipJson<{ ifname: string; ifindex: number; address: string; mtu: number }[]>(
        b.name,
        'link',
        'show',
        'eth0',
      )[0]!;
      expect(echoed).toMatchObject({ name: 've0', index: inA.ifindex, mac: inA.address, mtu: 1400 });
      expect(inB.address).toBe(peerMac);
      expect(inB.mtu).toBe(1380);
      expect(echoed?.peerIndex).toBe(inB.ifindex);
      // The reply of the next request on the socket is its own (nothing of the echo left behind).
      await expect(handle.createVeth(spec)).rejects.toBeInstanceOf(ExistsError);
      await handle.deleteLink(inA.ifindex);
      expect(links(a.name).map((l) => l.ifname)).toEqual(['lo']);
    });
  });

  it("openHostNetlink's createVeth asked for inline does the same on the JS thread: echoed end, EEXIST typed", async () => {
    await hostHandleInA(async ({ a, b, handle, bFd }) => {
      const spec = { name: 'vi0', mtu: 1450, peerName: 'eth0', peerNetnsFd: bFd, peerMtu: 1450 };
      const echoed = await handle.createVeth({ ...spec, peerMac: '02:aa:bb:cc:dd:01' }, { inline: true });
      const inA = links(a.name).find((l) => l.ifname === 'vi0')!;
      const inB = ipJson<{ ifname: string; ifindex: number; address: string }[]>(
        b.name,
        'link',
        'show',
        'eth0',
      )[0]!;
      expect(echoed).toMatchObject({ name: 'vi0', index: inA.ifindex, mtu: 1450, peerIndex: inB.ifindex });
      expect(inB.address).toBe('02:aa:bb:cc:dd:01');
      await expect(handle.createVeth(spec, { inline: true })).rejects.toBeInstanceOf(ExistsError);
      // Inline and off-thread requests share the socket: each still gets its own reply.
      const both = await Promise.all([
        handle.createVeth({ ...spec, name: 'vi1', peerName: 'eth1' }),
        handle.createVeth({ ...spec, name: 'vi2', peerName: 'eth2' }, { inline: true }),
      ]);
      expect(both.map((l) => l?.name)).toEqual(['vi1', 'vi2']);
    });
  });

  it('serializes concurrent deletions and deletes every one', async () => {
    const a = pool.add('a');
    for (let i = 0; i < 6; i++) ip(a.name, 'link', 'add', `va${i}`, 'type', 'veth', 'peer', 'name', `vb${i}`);
    const handle = withNetns(a.path, () => openHostNetlink());
    try {
      const indexes = links(a.name)
        .filter((l) => l.ifname.startsWith('va'))
        .map((l) => l.ifindex);
      await Promise.all(indexes.map((i) => handle.deleteLink(i)));
      expect(links(a.name).map((l) => l.ifname)).toEqual(['lo']);
    } finally {
      handle.close();
    }
  });

  it('gives each of many concurrent requests on one socket its own answer (replies never crossed)', async () => {
    await offThreadSocketInA(4, async (a, sock) => {
      const index = (name: string) => links(a.name).find((l) => l.ifname === name)!.ifindex;
      const [va0, va1, vb2, vb3] = [index('va0'), index('va1'), index('vb2'), index('vb3')];
      // Deletes that succeed, deletes of an index that is not there, lookups that find a link and
      // lookups that find none, off the thread and inline, all at once: answers that differ, so a
      // reply handed to the wrong request shows.
      const settled = await Promise.allSettled([
        deleteLinkVia(sock.exchange, va0),
        getLinkVia(sock.exchange, 'vb2'),
        deleteLinkVia(sock.exchange, 999_999),
        getLinkVia(sock.exchangeInline, 'nosuch0'),
        deleteLinkVia(sock.exchangeInline, va1),
        getLinkVia(sock.exchange, 'vb3'),
        deleteLinkVia(sock.exchange, 999_998),
        getLinkVia(sock.exchangeInline, 'vb2'),
      ]);
      const outcome = (r: PromiseSettledResult<unknown>) =>
        r.status === 'rejected'
          ? `rejected ${(r.reason as Error).constructor.name}`
          : r.value === undefined
            ? 'none'
            : `${(r.value as { name: string; index: number }).name}#${(r.value as { index: number }).index}`;
      expect(settled.map(outcome)).toEqual([
        'none',
        `vb2#${vb2}`,
        'rejected LinkNotFoundError',
        'none',
        'none',
        `vb3#${vb3}`,
        'rejected LinkNotFoundError',
        `vb2#${vb2}`,
      ]);
      expect(
        links(a.name)
          .map((l) => l.ifname)
          .sort(),
      ).toEqual(['lo', 'va2', 'va3', 'vb2', 'vb3']);
    });
  });

  it("a reply an earlier exchange left unread is not taken for the next request's", async () => {
    await offThreadSocketInA(1, async (_a, sock) => {
      // The kernel's whole answer to another lookup (vb0's link and its ACK, another sequence
      // number), queued ahead of the next request's as a recv cut short would leave it.
      const leftover = await sock.exchange(
        encodeMessage(RTM.GETLINK, NLM_F.REQUEST | NLM_F.ACK, 7, getLinkByNameBody('vb0')),
      );
      const behind: Exchange = async (request) => Buffer.concat([leftover, await sock.exchange(request)]);
      expect((await getLinkVia(behind, 'va0'))?.name).toBe('va0');
      expect(await getLinkVia(behind, 'nosuch0')).toBeUndefined();
    });
  });

  it('setUpVia applies every step in one datagram, inline or off the thread, and throws the first failure after trying the rest', async () => {
    await offThreadSocketInA(1, async (a, sock) => {
      const va0 = (await getLinkVia(sock.exchangeInline, 'va0'))!;
      const vb0 = (await getLinkVia(sock.exchange, 'vb0'))!;
      expect(va0).toMatchObject({
        name: 'va0',
        index: links(a.name).find((l) => l.ifname === 'va0')!.ifindex,
      });
      expect(await getLinkVia(sock.exchangeInline, 'nosuch0')).toBeUndefined();

      await setUpVia(sock.exchangeInline, [
        { kind: 'up', index: va0.index },
        { kind: 'address', address: { family: 4, ifindex: va0.index, address: '10.9.0.1', prefixLen: 32 } },
        { kind: 'route', route: { family: 4, dst: '10.9.1.0/24', ifindex: va0.index, scope: 'link' } },
      ]);
      // Again, off the thread: the address exists (counts as added), the route is replaced.
      expect(
        await setUpVia(sock.exchange, [
          { kind: 'address', address: { family: 4, ifindex: va0.index, address: '10.9.0.1', prefixLen: 32 } },
          { kind: 'route', route: { family: 4, dst: '10.9.1.0/24', ifindex: va0.index, scope: 'link' } },
        ]),
      ).toEqual(['kept', 'done']);
      // keepExisting, inline and off the thread: va0's route stays va0's, also as the last step (the
      // one whose answer is the ACK).
      for (const exchange of [sock.exchangeInline, sock.exchange]) {
        expect(
          await setUpVia(exchange, [
            { kind: 'up', index: vb0.index },
            {
              kind: 'route',
              route: { family: 4, dst: '10.9.1.0/24', ifindex: vb0.index, scope: 'link' },
              keepExisting: true,
            },
          ]),
        ).toEqual(['done', 'kept']);
      }

      // A failing step in the middle: its error is thrown, the steps after it were still applied.
      const failed = await setUpVia(sock.exchangeInline, [
        { kind: 'up', index: vb0.index },
        { kind: 'route', route: { family: 4, dst: '10.9.2.0/24', ifindex: 999_999, scope: 'link' } },
        { kind: 'address', address: { family: 4, ifindex: vb0.index, address: '10.9.0.2', prefixLen: 32 } },
      ]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failed).toBeInstanceOf(NetlinkError);
      expect((failed as NetlinkError).op).toContain('RTM_NEWROUTE 10.9.2.0/24');

      const state = ipJson<{ ifname: string; flags: string[]; addr_info: { local: string }[] }[]>(
        a.name,
        'addr',
        'show',
      );
      const byName = new Map(state.map((l) => [l.ifname, l]));
      expect(byName.get('va0')!.flags).toContain('UP');
      expect(byName.get('va0')!.addr_info.map((x) => x.local)).toContain('10.9.0.1');
      expect(byName.get('vb0')!.flags).toContain('UP');
      expect(byName.get('vb0')!.addr_info.map((x) => x.local)).toContain('10.9.0.2');
      const routes = ipJson<{ dst: string; dev: string }[]>(a.name, 'route', 'show');
      expect(routes.filter((r) => r.dst.startsWith('10.9.')).map((r) => [r.dst, r.dev])).toEqual([
        ['10.9.1.0/24', 'va0'],
      ]);
      // The socket's next exchange gets its own reply, nothing of the failed datagram's left behind.
      expect((await getLinkVia(sock.exchangeInline, 'vb0'))?.index).toBe(vb0.index);
    });
  });
});
