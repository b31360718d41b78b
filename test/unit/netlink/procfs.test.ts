import { readlinkSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fdOfSocket, netlinkInode } from '../../../pkg/netlink/procfs.ts';
import { RtnlSocket } from '../../../pkg/netlink/socket.ts';

// Opening an rtnetlink socket needs no privilege: this runs without root.
describe('locating our netlink socket through /proc', () => {
  it('hands prepareFd the fd of the very socket that was opened', () => {
    let seen: number | undefined;
    const sock = new RtnlSocket({
      prepareFd: (fd) => {
        seen = fd;
        return { drops: () => 7 };
      },
    });
    try {
      expect(seen).toBeDefined();
      expect(readlinkSync(`/proc/self/fd/${seen}`)).toMatch(/^socket:\[\d+\]$/);
      expect(sock.probe?.drops?.()).toBe(7);
    } finally {
      sock.close();
    }
  });

  it('finds nothing for a port id no socket of ours is bound to', () => {
    expect(netlinkInode(0x7ffffff0)).toBeUndefined();
    expect(fdOfSocket(1)).toBeUndefined();
  });

  it('answers a request on the socket it found (the demultiplexer end to end, no root)', async () => {
    const sock = new RtnlSocket();
    try {
      // RTM_GETLINK dump: every namespace has lo.
      const msgs = await sock.dump({ type: 18, flags: 0, body: [Buffer.alloc(16)], op: 'RTM_GETLINK dump' });
      expect(msgs.length).toBeGreaterThan(0);
      expect(msgs.every((m) => m.type === 16)).toBe(true);
    } finally {
      sock.close();
    }
  });
});
