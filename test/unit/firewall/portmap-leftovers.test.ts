import { describe, expect, it } from 'vitest';
import { portmapCleanup } from '../../../pkg/firewall/portmap-leftovers.ts';

/** `iptables-nft-save -t nat` after portmap's ADDs for two networks' pods (the second with TCP and UDP). */
const SAVE = `*nat
:PREROUTING ACCEPT [0:0]
:CNI-DN-b864b31db126c3fcb8302 - [0:0]
:CNI-DN-0123456789abcdef01234 - [0:0]
:CNI-DN-fedcba9876543210fedcb - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-DN-b864b31db126c3fcb8302 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"trellis\\" id: \\"abc123\\"" -m multiport --dports 8080 -j CNI-DN-b864b31db126c3fcb8302
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"trellis\\" id: \\"def456\\"" -m multiport --dports 53 -j CNI-DN-0123456789abcdef01234
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"trellis\\" id: \\"def456\\"" -m multiport --dports 53 -j CNI-DN-0123456789abcdef01234
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"trellis-2\\" id: \\"aaa\\"" -m multiport --dports 9090 -j CNI-DN-fedcba9876543210fedcb
COMMIT
`;

describe('portmapCleanup', () => {
  it("deletes the network's jumps (each protocol's), then flushes and deletes its pods' chains; another network's stay", () => {
    expect(portmapCleanup(SAVE, 'trellis')).toEqual({
      pods: 2,
      input: [
        '*nat',
        '-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"trellis\\" id: \\"abc123\\"" -m multiport --dports 8080 -j CNI-DN-b864b31db126c3fcb8302',
        '-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"trellis\\" id: \\"def456\\"" -m multiport --dports 53 -j CNI-DN-0123456789abcdef01234',
        '-D CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"trellis\\" id: \\"def456\\"" -m multiport --dports 53 -j CNI-DN-0123456789abcdef01234',
        '-F CNI-DN-b864b31db126c3fcb8302',
        '-X CNI-DN-b864b31db126c3fcb8302',
        '-F CNI-DN-0123456789abcdef01234',
        '-X CNI-DN-0123456789abcdef01234',
        'COMMIT',
        '',
      ].join('\n'),
    });
  });

  it('nothing of the network, nothing to do', () => {
    expect(portmapCleanup(SAVE, 'kindnet')).toBeUndefined();
    expect(portmapCleanup('*nat\nCOMMIT\n', 'trellis')).toBeUndefined();
  });
});
