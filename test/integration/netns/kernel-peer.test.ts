import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { NetnsPool, netnsSkipReason } from '../../support/netns.ts';

/**
 * The agent's netlink sockets in a pod's namespace take datagrams from the kernel only: connected to
 * port 0, so a process of that namespace with CAP_NET_ADMIN (a pod's NET_ADMIN container) has its
 * sends to them refused, and cannot fill their receive queues (the kernel's replies would overrun
 * them: ENOBUFS, which the netlink package's native poll turns into an abort) or forge replies.
 */

/**
 * From a process in `ns`: one netlink datagram to every other rtnetlink socket of the namespace
 * (/proc/net/netlink), plus one socket of its own left unconnected; what each send got, sorted.
 */
const SEND_TO_OTHERS = `
import socket
me = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); me.bind((0, 0))
plain = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); plain.bind((0, 0))
msg = bytes.fromhex('1400000010000500010000000000000000000000')
out = []
for line in open('/proc/net/netlink').read().splitlines()[1:]:
    f = line.split()
    proto, pid = int(f[1]), int(f[2])
    if proto != 0 or pid == 0 or pid == me.getsockname()[0]:
        continue
    try:
        me.sendto(msg, (pid, 0))
        out.append('sent')
    except ConnectionRefusedError:
        out.append('refused')
print(' '.join(sorted(out)))
`;

function sendToOthers(ns: string): string[] {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'python3', '-c', SEND_TO_OTHERS], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 in ${ns}: ${r.stderr}`);
  return r.stdout.trim().split(' ');
}

const python = spawnSync('python3', ['-c', 'import socket; socket.AF_NETLINK'], { encoding: 'utf8' });
const skip =
  netnsSkipReason ?? (python.status === 0 ? undefined : 'python3 with AF_NETLINK is not installed');
const title =
  "netlink sockets in a pod's namespace refuse other processes' datagrams (root, real namespaces)";
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  const pool = new NetnsPool();
  afterEach(() => pool.cleanup());
  const port = createNetnsPort();

  it("CHECK's handle and an ADD's socket: sends to them refused, their requests answered; an unconnected one takes them", async () => {
    const pod = pool.add('pod', { loUp: true });
    const check = port.openNetlinkIn(pod.path);
    const fd = port.openNetnsFd(pod.path);
    const add = port.openPodNetlink(fd, pod.path);
    try {
      // The two of the agent's refused; the script's own plain socket (the control) takes it.
      expect(sendToOthers(pod.name)).toEqual(['refused', 'refused', 'sent']);
      expect((await check.getLink('lo'))?.name).toBe('lo');
      expect((await add.getLink('lo'))?.name).toBe('lo');
    } finally {
      add.close();
      port.closeFd(fd);
      check.close();
    }
  });
});
